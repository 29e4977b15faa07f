"""Issue 18 items 4 and 6, issue 16's figure: what is measured from outside labguard's own process.

* ``cpu_per_call``: at 0 ms endpoint latency (so CPU, not waiting, is what is compared), the labguard
  sweep and a plain aiohttp loop (``bench.plain``) over the same estate, three times each, interleaved;
  CPU is ``time.process_time`` in each child around the sweep or loop, divided by the ARM calls the
  endpoint served, and the figures are the medians. Then the same
  sweep once more under cProfile for its top entries (that run's times are the profiler's, not figures).
* ``first_events``: fresh interpreters each handle ONE Event Grid event (``bench.firstevent``), timed by
  this process from just before the spawn (CLOCK_MONOTONIC is shared by every process) and, inside,
  from the function's entry.
* ``event_to_patch``: Event Grid events for drifted plans, one at a time; the time each event was handed
  in (recorded in the child) against the PATCH's arrival in the endpoint's request log (its entry time
  minus its duration), both on the system clock.
* ``labs_sweep``: the sweep with labs (issue 16) at 40 ms per call; the ARM calls by kind from the
  endpoint's request log, so the cost of a drifted lab is read off the log, not from labguard.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.endpoint import REPO, Endpoint
from bench.estate import Estate
from bench.report import percentiles


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_per_call(ep: Endpoint, estate: Estate, *, child: Any, profile: bool = True, repeats: int = 3) -> dict[str, Any]:
    """labguard's CPU per ARM call against the plain aiohttp loop's, same estate, endpoint at 0 ms.

    The ratio of two CPU figures of a few seconds each moves by a tenth or more between runs on a shared
    2-core machine, so the two run ``repeats`` times, interleaved (plain, labguard, plain, labguard...), and
    the figures are the medians, with every run's ratio kept beside them."""
    ep.configure(latency_ms=0)
    plains: list[dict[str, Any]] = []
    sweeps: list[dict[str, Any]] = []
    try:
        for round_ in range(repeats):
            ep.seed(estate.state())
            _log(f"CPU per call {round_ + 1}/{repeats}: plain aiohttp loop over {estate.describe()} (endpoint at 0 ms)")
            plain = child("bench.plain", {"subscriptions": estate.subscription_ids}, ep)
            plain["server"] = ep.calls()
            plains.append(plain)
            ep.seed(estate.state())
            _log(f"CPU per call {round_ + 1}/{repeats}: labguard sweep, same estate")
            sweep = child("bench.sweep", {"subscriptions": estate.subscription_ids}, ep)
            sweep["server"] = ep.calls()
            sweep.pop("log_records", None)
            sweeps.append(sweep)
        top = None
        if profile:
            ep.seed(estate.state())
            _log("CPU per call: labguard sweep under cProfile (top entries only)")
            top = child("bench.sweep", {"subscriptions": estate.subscription_ids, "profile": True}, ep)["profile_top"]
    finally:
        ep.configure(latency_ms=ep.latency_ms)
    plain_runs = [1000 * p["cpu_s"] / max(1, p["server"]["total"]) for p in plains]
    labguard_runs = [1000 * s["process_time_s"] / max(1, s["server"]["total"]) for s in sweeps]
    ratios = [lg / pl for lg, pl in zip(labguard_runs, plain_runs, strict=True) if pl]
    labguard_ms, plain_ms = statistics.median(labguard_runs), statistics.median(plain_runs)
    _log(
        f"  labguard {labguard_ms:.3f} ms CPU per call, plain aiohttp {plain_ms:.3f} ms (medians);"
        f" ratios {', '.join(f'{r:.2f}' for r in ratios)}"
    )
    return {
        "estate": {"plans": estate.plans, "subscriptions": estate.subscriptions, "drifted": estate.drifted},
        "plain": _median_run(plains, plain_runs),
        "labguard": _median_run(sweeps, labguard_runs),
        "labguard_ms_per_call": labguard_ms,
        "plain_ms_per_call": plain_ms,
        "ratio": statistics.median(ratios) if ratios else None,
        "ratios": ratios,
        "runs": repeats,
        "profile_top": top,
    }


def _median_run(runs: list[dict[str, Any]], per_call: list[float]) -> dict[str, Any]:
    """The run whose CPU per call is the median (the table shows one run's calls, CPU and wall)."""
    order = sorted(range(len(runs)), key=per_call.__getitem__)
    return runs[order[len(order) // 2]]


#: main when issue 18 was filed (its first-event figure, 720 ms, was measured on this code): the first event is
#: also measured there, the same way in the same run, so the "before" is not a number from another machine.
FIRST_EVENT_BASELINE = "b746d17"


def first_events(
    ep: Endpoint, estate: Estate, *, runs: int, baseline: str | None = FIRST_EVENT_BASELINE
) -> dict[str, Any]:
    """``runs`` fresh processes, each handling one event for a drifted plan (endpoint at 0 ms); then the same
    in a checkout of ``baseline`` (a git worktree, removed afterwards), interleaved run by run."""
    from bench.child import labguard_env
    from bench.coldstart import drop_app_bytecode
    from bench.events import write_event

    ep.configure(latency_ms=0)
    plan = estate.drifted_ids()[0]
    settings = {
        "endpoint": ep.endpoint,
        "ca_file": ep.ca_file,
        "tenant_id": ep.tenant_id,
        "authority": ep.authority,
        "subscriptions": estate.subscription_ids,
    }
    spec = {"env": labguard_env(settings), "event": write_event(plan)}
    drop_app_bytecode()
    trees = {"now": REPO}
    old = _baseline_tree(baseline) if baseline else None
    if old is not None:
        trees["baseline"] = old
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        _log(
            f"first event: {runs} fresh processes per tree ({', '.join(trees)}), one Event Grid event each"
            " (drifted plan, endpoint at 0 ms)"
        )
        for _ in range(runs):
            for name, tree in trees.items():
                ep.seed(estate.state())
                sample = _first_event(tree, spec, ep)
                sample["server"] = ep.calls()
                samples[name].append(sample)
    finally:
        ep.configure(latency_ms=ep.latency_ms)
        if old is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    result = _first_event_figures(samples["now"], runs)
    if "baseline" in samples:
        result["baseline"] = {"commit": baseline, **_first_event_figures(samples["baseline"], runs)}
        result["ratio_own"] = result["median_own_s"] / result["baseline"]["median_own_s"]
    _log(
        f"  median from process start {result['median_from_start_s'] * 1000:.0f} ms, "
        f"indexed at {result['median_to_indexed_s'] * 1000:.0f} ms, own {result['median_own_s'] * 1000:.0f} ms"
        + (
            f"; at {baseline}: own {result['baseline']['median_own_s'] * 1000:.0f} ms (x{result['ratio_own']:.2f})"
            if "baseline" in result
            else ""
        )
    )
    return result


def _baseline_tree(commit: str) -> Any:
    """A checkout of ``commit`` beside the repository (git worktree), or None when git or the commit is missing
    (a shallow clone): the run then reports the figure alone."""
    import tempfile
    from pathlib import Path

    target = Path(tempfile.mkdtemp(prefix="labguard-baseline-")) / "tree"
    done = subprocess.run(
        ["git", "worktree", "add", "--detach", str(target), commit], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        _log(f"  no baseline: git worktree add {commit} failed ({done.stderr.strip()[:200]})")
        return None
    return target


def _first_event(tree: Any, spec: dict[str, Any], ep: Endpoint) -> dict[str, Any]:
    """One fresh interpreter running bench/firstevent.py against ``tree`` (its modules compile: no bytecode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABGUARD_", "AZURE_", "IDENTITY_"))}
    env.update({"PYTHONPATH": str(tree), "SSL_CERT_FILE": ep.ca_file, "PYTHONDONTWRITEBYTECODE": "1"})
    from bench.child import spawn_json

    spawned = time.monotonic()
    sample = spawn_json([sys.executable, str(REPO / "bench" / "firstevent.py")], spec, cwd=tree, env=env, timeout=300)
    sample["from_start_s"] = sample["done"] - spawned
    sample["to_indexed_s"] = sample["indexed"] - spawned
    return sample


def _first_event_figures(samples: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    return {
        "runs": runs,
        "samples": samples,
        "median_from_start_s": statistics.median(s["from_start_s"] for s in samples),
        "median_to_indexed_s": statistics.median(s["to_indexed_s"] for s in samples),
        "median_own_s": statistics.median(s["own_s"] for s in samples),
        "packages": samples[-1]["packages_loaded_by_first_call"],
    }


def event_to_patch(ep: Endpoint, estate: Estate, *, count: int, child: Any) -> dict[str, Any]:
    """Events for ``count`` drifted plans: handed in (child's clock) -> PATCH arrival (the endpoint's log)."""
    ep.configure(latency_ms=0)
    try:
        state = estate.state()
        warmup = estate.body(0)
        warmup["id"] = warmup["id"].replace("plan-000000", "warmup")
        state["labPlans"].append(warmup)
        ep.seed(state)
        plans = estate.drifted_ids()[:count]
        _log(f"event -> PATCH: {len(plans)} events for drifted plans, one at a time (endpoint at 0 ms)")
        result = child(
            "bench.events",
            {"subscriptions": estate.subscription_ids, "warmup_plan": warmup["id"], "plans": plans},
            ep,
        )
        log = ep.control("GET", "/_emulator/requests")["value"]
    finally:
        ep.configure(latency_ms=ep.latency_ms)
    arrivals: dict[str, float] = {}
    for entry in log:
        if entry["kind"] == "arm" and entry["method"] == "PATCH":
            arrivals.setdefault(entry["path"].lower(), entry["time"] - entry["duration_ms"] / 1000)
    latencies = [
        (arrivals[plan.lower()] - sample["handed_in"]) * 1000
        for plan, sample in zip(plans, result["samples"], strict=True)
        if plan.lower() in arrivals
    ]
    out = {
        "events": len(plans),
        "patched": len(latencies),
        "event_to_patch_ms": percentiles(latencies),
        "own_ms": percentiles([s["own"] * 1000 for s in result["samples"]]),
        "total_ms": percentiles([s["total"] * 1000 for s in result["samples"]]),
    }
    p = out["event_to_patch_ms"]
    _log(f"  event -> PATCH p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms ({len(latencies)} PATCHes)")
    return out


def labs_sweep(ep: Endpoint, estate: Estate, *, child: Any) -> dict[str, Any]:
    """The sweep with labs; ARM calls by kind as the endpoint logged them."""
    ep.seed(estate.state())
    _log(f"sweep with labs over {estate.describe()}")
    result: dict[str, Any] = child("bench.sweep", {"subscriptions": estate.subscription_ids}, ep)
    result.pop("log_records", None)
    result.pop("profile_top", None)
    server = ep.calls()
    kinds = server["by_kind"]
    plan_writes = kinds.get("patch", 0)
    lab_polls = max(0, sum(n for k, n in kinds.items() if k.startswith("poll")) - plan_writes)
    lab_calls = kinds.get("lab get", 0) + kinds.get("lab patch", 0) + lab_polls
    drifted_labs = estate.drifted_labs
    result.update(
        {
            "server": server,
            "estate": {
                "plans": estate.plans,
                "labs": estate.labs,
                "subscriptions": estate.subscriptions,
                "drift": estate.drift,
                "drifted": estate.drifted,
                "drifted_labs": drifted_labs,
            },
            "list_pages": kinds.get("list", 0) + kinds.get("lab list", 0),
            "lab_calls": lab_calls,
            "calls_per_drifted_lab": lab_calls / drifted_labs if drifted_labs else 0.0,
        }
    )
    s = result["summary"]
    _log(
        f"  {result['wall_s']:.1f} s, plans fixed {s['fixed']}/{estate.drifted}, calls {kinds}, "
        f"{result['calls_per_drifted_lab']:.2f} calls per drifted lab, peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    return result
