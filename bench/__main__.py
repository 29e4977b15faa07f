"""``python -m bench`` (``make bench``): every measurement once, a table on stdout, ``bench/RESULTS.md``.

Order: cold start (before anything else runs), then the endpoint process is started once (40 ms per
ARM call, pages of 100, LROs due at once) and every sweep runs in its own child process against a
freshly seeded estate, then the throttled sweeps, then the event path at 0 ms. The endpoint is
stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import coldstart
from bench.child import spawn_json
from bench.endpoint import REPO, Endpoint
from bench.estate import Estate
from bench.report import machine, render_markdown, render_table
from bench.scale_report import render_outside, render_scale

LATENCY_MS = 40.0
PAGE_SIZE = 100
LRO_DELAY_S = 0.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child(module: str, spec: dict[str, Any], ep: Endpoint) -> dict[str, Any]:
    """Run ``python -m <module>`` with the spec on stdin; its one JSON line is the result."""
    full = {
        "endpoint": ep.endpoint,
        "ca_file": ep.ca_file,
        "tenant_id": ep.tenant_id,
        "authority": ep.authority,
        **spec,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABGUARD_", "AZURE_"))}
    env.update({"PYTHONPATH": str(REPO), "SSL_CERT_FILE": ep.ca_file})
    started = time.perf_counter()
    result = spawn_json([sys.executable, "-m", module], full, cwd=REPO, env=env, timeout=1800)
    result["child_s"] = time.perf_counter() - started
    return result


def list_pages(estate: Estate) -> int:
    per_sub = estate.plans / estate.subscriptions
    return estate.subscriptions * max(1, math.ceil(per_sub / PAGE_SIZE))


def sweep(ep: Endpoint, estate: Estate, *, label: str, **spec: Any) -> dict[str, Any]:
    ep.seed(estate.state())
    log(f"{label}: labguard sweep over {estate.describe()} {spec or ''}")
    result = child("bench.sweep", {"subscriptions": estate.subscription_ids, **spec}, ep)
    result["server"] = ep.calls()
    result["estate"] = {
        "plans": estate.plans,
        "subscriptions": estate.subscriptions,
        "drift": estate.drift,
        "drifted": estate.drifted,
        "list_pages": list_pages(estate),
    }
    result["label"] = label
    s = result["summary"]
    log(
        f"  {result['wall_s']:.1f} s, fixed {s['fixed']}/{estate.drifted}, failed {s['failed']}, "
        f"calls {result['server']['by_kind']}, 429s {result['server']['throttled']}, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    return result


def naive(ep: Endpoint, estate: Estate) -> dict[str, Any]:
    ep.seed(estate.state())
    log(f"naive loop over {estate.describe()} (sequential; ~0.2 s per plan at 40 ms)")
    result = child("bench.naive", {"subscriptions": estate.subscription_ids}, ep)
    result["server"] = ep.calls()
    result["estate"] = {"plans": estate.plans, "subscriptions": estate.subscriptions, "drifted": estate.drifted}
    log(f"  {result['wall_s']:.1f} s for {result['plans']} plans, errors {result['errors']}, {result['server']}")
    return result


def threadpool(ep: Endpoint, estate: Estate, *, label: str) -> dict[str, Any]:
    ep.seed(estate.state())
    log(f"{label}: thread-pool baseline (32 threads, sync SDK, PATCH only drifted) over {estate.describe()}")
    result = child("bench.threadpool", {"subscriptions": estate.subscription_ids}, ep)
    result["server"] = ep.calls()
    result["estate"] = {
        "plans": estate.plans,
        "subscriptions": estate.subscriptions,
        "drifted": estate.drifted,
        "list_pages": list_pages(estate),
    }
    result["label"] = label
    log(
        f"  {result['wall_s']:.1f} s, patched {result['patched']}/{estate.drifted}, errors {result['errors']}, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    return result


def fanout(ep: Endpoint, estate: Estate, *, workers: int) -> dict[str, Any]:
    """Several worker processes drain the sweep queue against one endpoint, per-subscription throttling on."""
    from bench.fanout import run_fanout

    ep.seed(estate.state())
    ep.configure(throttle=True)
    ep.reset_buckets()
    log(f"fan-out: timer enqueues, {workers} worker processes drain, over {estate.describe()} (throttling on)")
    try:
        with tempfile.TemporaryDirectory(prefix="labguard-fanout-") as workdir:
            result = run_fanout(ep, estate, workers=workers, workdir=Path(workdir))
    finally:
        ep.configure(throttle=False)
    result["server"] = ep.calls()
    result["estate"] = {"plans": estate.plans, "subscriptions": estate.subscriptions, "drifted": estate.drifted}
    log(f"  {result['wall_s']:.1f} s, scopes per worker {result['scopes_per_worker']}, {result['server']['by_kind']}")
    return result


def scale_runs(ep: Endpoint, scale_down: int, results: dict[str, Any]) -> dict[str, Any]:
    """Issue 18: the thread-pool baseline, slow write completions, many subscriptions (40 ms per call)."""
    out: dict[str, Any] = {}
    ten_k = Estate(10_000 // scale_down, 100, 0.10)
    if "10k" not in results.get("sweeps", {}):
        out["10k"] = sweep(ep, ten_k, label="10k, writes complete at once")
    out["threadpool-10k"] = threadpool(ep, ten_k, label="threadpool-10k")
    for completion in (2, 30):
        ep.configure(lro_delay_s=completion)
        out[f"10k-write-{completion}s"] = sweep(ep, ten_k, label=f"10k, writes complete in {completion} s")
        if completion == 2:  # at 30 s the baseline needs drifted x 30 s / 32 threads: projected, not run
            out["threadpool-10k-write-2s"] = threadpool(ep, ten_k, label="threadpool-10k, writes complete in 2 s")
    ep.configure(lro_delay_s=LRO_DELAY_S)
    out["fanout"] = fanout(ep, ten_k, workers=4)
    out["50k-1000subs"] = sweep(ep, Estate(50_000 // scale_down, 1000, 0.10), label="50k in 1,000 subscriptions")
    out["50k-100subs"] = results.get("sweeps", {}).get("50k") or sweep(
        ep, Estate(50_000 // scale_down, 100, 0.10), label="50k in 100 subscriptions"
    )
    return out


def outside_runs(ep: Endpoint, scale_down: int, *, events: int) -> dict[str, Any]:
    """Issue 18 items 4 and 6 and issue 16's figure (bench/outside.py): CPU per call against a plain aiohttp
    loop, the first event from a fresh process, event -> PATCH from the endpoint's log, the sweep with labs."""
    from bench import outside

    ten_k = Estate(10_000 // scale_down, 100, 0.10)
    out: dict[str, Any] = {"cpu": outside.cpu_per_call(ep, ten_k, child=child)}
    out["first_events"] = outside.first_events(
        ep, Estate(1_000 // scale_down, 100, 0.10), runs=5 if scale_down == 1 else 2
    )
    out["event_to_patch"] = outside.event_to_patch(ep, ten_k, count=events // scale_down, child=child)
    labs = Estate(10_000 // scale_down, 100, 0.10, labs_per_plan=3)
    out["labs"] = outside.labs_sweep(ep, labs, child=child)
    return out


def events(ep: Endpoint, estate: Estate, *, count: int, label: str, **spec: Any) -> dict[str, Any]:
    state = estate.state()
    warmup = estate.body(0)
    warmup["id"] = warmup["id"].replace("plan-000000", "warmup")
    state["labPlans"].append(warmup)
    ep.seed(state)
    plans = [estate.plan_id(i) for i in range(count)]
    drifted = set(estate.drifted_ids())
    log(f"{label}: {count} Event Grid events through eventgrid_lab_plan {spec or ''}")
    result = child(
        "bench.events",
        {"subscriptions": estate.subscription_ids, "warmup_plan": warmup["id"], "plans": plans, **spec},
        ep,
    )
    for sample, plan_id in zip(result["samples"], plans, strict=True):
        sample["drifted"] = plan_id in drifted
    result["server"] = ep.calls()
    result["label"] = label
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where to write RESULTS.md (default bench/RESULTS.md; --quick: a temp file)")
    parser.add_argument(
        "--naive-plans",
        type=int,
        default=1000,
        help="plans the naive loop runs over (default 1,000, ~3 min; 10,000 takes ~30 min)",
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (a tenth), to check the whole pipeline quickly; also BENCH_QUICK=1 (not for figures)",
    )
    parser.add_argument("--render", metavar="RESULTS.json", help="only rewrite RESULTS.md from a run's saved figures")
    parser.add_argument("--only-fanout", action="store_true", help="only the fan-out run (queue + worker processes)")
    parser.add_argument(
        "--only-scale",
        action="store_true",
        help="only issue 18's runs (thread-pool baseline, slow writes, 1,000 subscriptions, fan-out, --only-outside)",
    )
    parser.add_argument(
        "--only-outside", action="store_true", help="only CPU per call, the events from outside and the labs sweep"
    )
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        out = Path(args.out) if args.out else Path(args.render).with_suffix(".md")
        text = render_markdown(saved) + render_scale(saved) if "coldstart" in saved else render_scale(saved)
        out.write_text(text + render_outside(saved))
        print(render_table(saved) if "coldstart" in saved else text + render_outside(saved))
        return
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    scale = 10 if quick else 1
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": quick}

    if args.only_fanout:
        with Endpoint(latency_ms=LATENCY_MS, page_size=PAGE_SIZE, lro_delay_s=LRO_DELAY_S) as ep:
            results["scale"] = {"fanout": fanout(ep, Estate(10_000 // scale, 100, 0.10), workers=4)}
        out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "labguard-bench-fanout.json"
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results["scale"]["fanout"], indent=1))
        return
    if args.only_outside:
        with Endpoint(latency_ms=LATENCY_MS, page_size=PAGE_SIZE, lro_delay_s=LRO_DELAY_S) as ep:
            results["outside"] = outside_runs(ep, scale, events=args.events)
        out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "labguard-bench-outside.md"
        out.write_text(render_outside(results))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        print(render_outside(results))
        return
    if args.only_scale:
        with Endpoint(latency_ms=LATENCY_MS, page_size=PAGE_SIZE, lro_delay_s=LRO_DELAY_S) as ep:
            results["endpoint"] = {"latency_ms": LATENCY_MS, "page_size": PAGE_SIZE, "lro_delay_s": LRO_DELAY_S}
            results["scale"] = scale_runs(ep, scale, results)
            results["outside"] = outside_runs(ep, scale, events=args.events)
        results["total_s"] = time.perf_counter() - started
        out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "labguard-bench-scale.md"
        out.write_text(render_scale(results) + render_outside(results))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        print(render_scale(results) + render_outside(results))
        log(f"wrote {out} ({results['total_s'] / 60:.1f} min in all)")
        return

    log("cold start: 10 interleaved fresh interpreters each (floor, app, app + indexing)")
    results["coldstart"] = coldstart.measure(3 if quick else 10)
    cs = results["coldstart"]["median_s"]
    log(f"  medians: floor {cs['floor'] * 1000:.0f} ms, app {cs['app'] * 1000:.0f} ms")

    with Endpoint(latency_ms=LATENCY_MS, page_size=PAGE_SIZE, lro_delay_s=LRO_DELAY_S) as ep:
        log(f"endpoint process pid {ep.pid} at {ep.endpoint} (latency {LATENCY_MS:.0f} ms, pages of {PAGE_SIZE})")
        results["endpoint"] = {"latency_ms": LATENCY_MS, "page_size": PAGE_SIZE, "lro_delay_s": LRO_DELAY_S}

        # 1. Sweep against the naive loop, and peak RSS at 1k / 10k / 50k.
        naive_estate = Estate(args.naive_plans // scale, 100, 0.10)
        results["naive"] = naive(ep, naive_estate)
        results["sweeps"] = {
            "1k": sweep(ep, Estate(1_000 // scale, 100, 0.10), label="1k"),
            "10k": sweep(ep, Estate(10_000 // scale, 100, 0.10), label="10k"),
            "50k": sweep(ep, Estate(50_000 // scale, 100, 0.10), label="50k"),
            "1k-ca-bundle": sweep(
                ep, Estate(1_000 // scale, 100, 0.10), label="1k with LABGUARD_CA_BUNDLE", ca_bundle=True
            ),
        }

        # Issue 18: the competent baseline, slow write completions, 1,000 subscriptions, the fan-out.
        results["scale"] = scale_runs(ep, scale, results)
        # Issue 18 items 4 and 6, issue 16: CPU per call, events measured from outside, the sweep with labs.
        results["outside"] = outside_runs(ep, scale, events=args.events)

        # 2. Inside ARM's budget: the endpoint's per-subscription token buckets on.
        ep.configure(throttle=True)
        throttled = {}
        for key, estate, paced in (
            ("10k-100subs-paced", Estate(10_000 // scale, 100, 0.10), True),
            ("10k-1sub-paced", Estate(10_000 // scale, 1, 0.10), True),
            ("10k-1sub-unpaced", Estate(10_000 // scale, 1, 0.10), False),
        ):
            ep.reset_buckets()
            throttled[key] = sweep(ep, estate, label=key, paced=paced)
        results["throttled"] = throttled
        ep.configure(throttle=False)

        # 3. Event path, at 0 ms so the run is short; ARM time is measured and subtracted either way.
        ep.configure(latency_ms=0)
        event_estate = Estate(max(args.events, 1_000) // scale, 100, 0.10)
        results["events"] = events(ep, event_estate, count=args.events // scale, label="events")
        results["events_ca_bundle"] = events(
            ep, event_estate, count=200 // scale, label="events with LABGUARD_CA_BUNDLE", ca_bundle=True
        )
        results["endpoint"]["rss_mb_at_end"] = ep.rss_mb()

    results["total_s"] = time.perf_counter() - started
    default = Path(tempfile.gettempdir()) / "labguard-bench-quick.md" if quick else REPO / "bench" / "RESULTS.md"
    out = Path(args.out) if args.out else default
    out.write_text(render_markdown(results) + render_scale(results) + render_outside(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(render_table(results))
    log(f"wrote {out} and {out.with_suffix('.json').name} ({results['total_s'] / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
