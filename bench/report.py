"""Figures from one run's results: the table against the targets, and ``bench/RESULTS.md``."""

# ruff: noqa: E501  (the RESULTS.md template keeps its Markdown lines whole)

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.endpoint import REPO

READ_BUCKET = (250, 25)  # ARM per subscription: burst, per second
WRITE_BUCKET = (200, 10)
PACKAGES = ("azure-core", "azure-mgmt-labservices", "azure-identity", "azure-functions", "aiohttp", "requests")


# ---------------------------------------------------------------------------------------------- facts
def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


# ---------------------------------------------------------------------------------------------- derived
def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        only = values[0] if values else 0.0
        return {"p50": only, "p95": only, "p99": only, "max": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


def non_poll_calls(by_kind: dict[str, int]) -> int:
    return sum(n for kind, n in by_kind.items() if not kind.startswith("poll"))


def polls(by_kind: dict[str, int]) -> int:
    return sum(n for kind, n in by_kind.items() if kind.startswith("poll"))


def arm_floor_s(run: dict[str, Any]) -> float:
    """The least wall time ARM's per-subscription buckets allow for the calls this run got answered
    (429s not counted; an even spread over the subscriptions assumed)."""
    subs = run["estate"]["subscriptions"]
    server = run["server"]
    ok = {kind: n - server["throttled_by_kind"].get(kind, 0) for kind, n in server["by_kind"].items()}
    reads = sum(n for kind, n in ok.items() if kind.removeprefix("lab ") in ("list", "get") or kind.startswith("poll"))
    reads /= subs
    writes = (ok.get("patch", 0) + ok.get("lab patch", 0)) / subs
    return max(0.0, (reads - READ_BUCKET[0]) / READ_BUCKET[1], (writes - WRITE_BUCKET[0]) / WRITE_BUCKET[1])


def derive(r: dict[str, Any]) -> dict[str, Any]:
    sweeps, naive, throttled = r["sweeps"], r["naive"], r["throttled"]
    s10 = sweeps["10k"]
    per_plan = naive["wall_s"] / max(1, naive["plans"])
    naive_10k = per_plan * s10["estate"]["plans"]
    same = sweeps["1k"]["estate"]["plans"] == naive["estate"]["plans"]
    ev = r["events"]
    own_ms = [s["own"] * 1000 for s in ev["samples"]]
    d: dict[str, Any] = {
        "naive_per_plan_s": per_plan,
        "naive_10k_projected_s": naive_10k,
        "speedup_10k": naive_10k / s10["wall_s"],
        "speedup_1k": naive["wall_s"] / sweeps["1k"]["wall_s"] if same else None,
        "calls_10k": non_poll_calls(s10["server"]["by_kind"]),
        # list pages of plans, one (empty) lab page per subscription, then read, PATCH, proof read per drifted plan
        "calls_bound_10k": s10["estate"]["list_pages"] + s10["estate"]["subscriptions"] + 3 * s10["estate"]["drifted"],
        "polls_10k": polls(s10["server"]["by_kind"]),
        "rss": {key: sweeps[key]["peak_rss_mb"] for key in ("1k", "10k", "50k")},
        "sweep_mb": {
            key: sweeps[key]["peak_rss_mb"] - sweeps[key]["rss_before_sweep_mb"] for key in ("1k", "10k", "50k")
        },
        "plans_ratio_50k_10k": sweeps["50k"]["estate"]["plans"] / s10["estate"]["plans"],
        "events_own_ms": percentiles(own_ms),
        "events_total_ms": percentiles([s["total"] * 1000 for s in ev["samples"]]),
        "events_arm_ms": percentiles([s["arm"] * 1000 for s in ev["samples"]]),
        "events_own_fixed_ms": percentiles([s["own"] * 1000 for s in ev["samples"] if s["drifted"]]),
        "events_own_compliant_ms": percentiles([s["own"] * 1000 for s in ev["samples"] if not s["drifted"]]),
        "events_ca_own_ms": percentiles([s["own"] * 1000 for s in r["events_ca_bundle"]["samples"]]),
        "floors": {key: arm_floor_s(run) for key, run in throttled.items()},
        "cold_added_ms": r["coldstart"]["added_s"] * 1000,
        "cold_added_indexed_ms": r["coldstart"]["added_indexed_s"] * 1000,
    }
    d["sweep_mb_ratio_50k_10k"] = d["sweep_mb"]["50k"] / max(0.1, d["sweep_mb"]["10k"])
    d["events_ca_total_ms"] = percentiles([s["total"] * 1000 for s in r["events_ca_bundle"]["samples"]])
    ten = r["events"]["samples"][: len(r["events_ca_bundle"]["samples"])]
    d["events_same_total_ms"] = percentiles([s["total"] * 1000 for s in ten])
    floor = r["coldstart"]["samples"]["floor"]
    d["cold_floor_spread_ms"] = (min(floor) * 1000, max(floor) * 1000)
    return d


# ---------------------------------------------------------------------------------------------- table
def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    d = derive(r)
    sweeps, naive, thr = r["sweeps"], r["naive"], r["throttled"]
    s1, s10, s50 = sweeps["1k"], sweeps["10k"], sweeps["50k"]
    e10 = s10["estate"]
    k10 = s10["server"]["by_kind"]
    nk = naive["server"]["by_kind"]
    own, cold = d["events_own_ms"], r["coldstart"]["median_s"]
    out: list[tuple[str, str, str, str, str]] = [
        ("1", f"sweep wall time, labguard, {e10['plans']:,} plans", f"{s10['wall_s']:.1f} s", "", ""),
        (
            "1",
            f"naive loop, {naive['plans']:,} plans measured / {e10['plans']:,} projected",
            f"{naive['wall_s']:.0f} s / {d['naive_10k_projected_s']:.0f} s ({d['naive_per_plan_s'] * 1000:.0f} ms a plan)",
            "",
            "",
        ),
        (
            "1",
            f"speed-up at {e10['plans']:,} plans (projected naive / measured labguard)",
            f"{d['speedup_10k']:.0f}x",
            ">= 20x",
            _yes(d["speedup_10k"] >= 20),
        ),
    ]
    if d["speedup_1k"] is not None:
        out.append(
            (
                "1",
                f"speed-up at {naive['plans']:,} plans (both measured, same estate)",
                f"{d['speedup_1k']:.0f}x ({naive['wall_s']:.0f} s vs {s1['wall_s']:.2f} s)",
                ">= 20x",
                _yes(d["speedup_1k"] >= 20),
            )
        )
    out += [
        (
            "1",
            f"ARM calls, labguard, {e10['plans']:,} plans (plan and lab list pages + get + patch + proof get)",
            f"{d['calls_10k']:,} ({k10.get('list', 0)} list + {k10.get('lab list', 0)} lab list + "
            f"{k10.get('get', 0)} get + {k10.get('patch', 0)} patch)",
            f"<= {e10['list_pages']} + {e10['subscriptions']} pages + 3 x {e10['drifted']:,} = {d['calls_bound_10k']:,}",
            _yes(d["calls_10k"] <= d["calls_bound_10k"]),
        ),
        ("1", "LRO polls, labguard (counted apart)", f"{d['polls_10k']:,}", "1 per patch", ""),
        (
            "1",
            f"ARM calls, naive loop, {naive['plans']:,} plans",
            f"{naive['server']['total']:,} ({', '.join(f'{n} {k}' for k, n in nk.items())})",
            "",
            "",
        ),
        (
            "1",
            "peak RSS, labguard sweep at 1k / 10k / 50k plans",
            f"{s1['peak_rss_mb']:.0f} / {s10['peak_rss_mb']:.0f} / {s50['peak_rss_mb']:.0f} MB; grown during the sweep "
            f"{d['sweep_mb']['1k']:.0f} / {d['sweep_mb']['10k']:.0f} / {d['sweep_mb']['50k']:.0f} MB "
            f"(x{d['sweep_mb_ratio_50k_10k']:.1f} for x{d['plans_ratio_50k_10k']:.0f} the plans)",
            "<= 150 MB, not linear in plans",
            _yes(max(d["rss"].values()) <= 150 and d["sweep_mb_ratio_50k_10k"] < 2),
        ),
        ("1", "peak RSS, naive loop", f"{naive['peak_rss_mb']:.0f} MB", "", ""),
    ]
    for key, run in thr.items():
        pacer = run.get("pacer") or {}
        extra = (
            f", {pacer.get('waits', 0):,} requests waited (max {pacer.get('max_wait_s', 0):.1f} s)"
            if pacer
            else ", no pacer"
        )
        out.append(
            (
                "2",
                f"throttled sweep, {run['estate']['plans']:,} plans / {run['estate']['subscriptions']} subscription(s), "
                f"{'paced' if run.get('pacer') else 'unpaced'}",
                f"{run['server']['throttled']:,} 429s, {run['wall_s']:.1f} s (ARM's floor {d['floors'][key]:.0f} s), "
                f"{run['summary']['failed']} plans failed{extra}",
                "paces itself: ~0 429s" if run.get("pacer") else "(comparison)",
                _yes(run["server"]["throttled"] <= 5 and run["summary"]["failed"] == 0) if run.get("pacer") else "",
            )
        )
    out += [
        (
            "3",
            f"event path, labguard's own time per event ({len(r['events']['samples']):,} events)",
            f"p50 {own['p50']:.1f} / p95 {own['p95']:.1f} / p99 {own['p99']:.1f} ms",
            "p95 <= 20 ms",
            _yes(own["p95"] <= 20),
        ),
        (
            "3",
            "event path, end to end at 0 ms endpoint latency",
            f"p50 {d['events_total_ms']['p50']:.1f} / p95 {d['events_total_ms']['p95']:.1f} / "
            f"p99 {d['events_total_ms']['p99']:.1f} ms",
            "",
            "",
        ),
        (
            "4",
            "cold start, median of 10: import azure.functions / import function_app",
            f"{cold['floor'] * 1000:.0f} / {cold['app'] * 1000:.0f} ms ({d['cold_added_ms']:+.0f} ms; "
            f"with indexing {d['cold_added_indexed_ms']:+.0f} ms)",
            "<= +100 ms",
            _yes(d["cold_added_ms"] <= 100 and d["cold_added_indexed_ms"] <= 100),
        ),
    ]
    return out


def render_table(r: dict[str, Any]) -> str:
    lines = ["| # | figure | measured | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {t} | {m} |" for a, b, c, t, m in rows(r)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- RESULTS.md
def render_markdown(r: dict[str, Any]) -> str:
    d = derive(r)
    m = r["machine"]
    ep = r["endpoint"]
    sweeps, naive, thr, cold = r["sweeps"], r["naive"], r["throttled"], r["coldstart"]
    s10, ca = sweeps["10k"], sweeps["1k-ca-bundle"]
    ev, evca = r["events"], r["events_ca_bundle"]
    own, fixed, compliant, arm = (
        d["events_own_ms"],
        d["events_own_fixed_ms"],
        d["events_own_compliant_ms"],
        d["events_arm_ms"],
    )
    paced1, unpaced1, paced100 = thr["10k-1sub-paced"], thr["10k-1sub-unpaced"], thr["10k-100subs-paced"]
    p100 = paced100["summary"]["arm_calls_by_kind"]
    subs100 = paced100["estate"]["subscriptions"]
    reads100 = (p100.get("list", 0) + p100.get("get", 0) + p100.get("poll", 0)) / subs100
    writes100 = p100.get("patch", 0) / subs100
    waited100 = (paced100.get("pacer") or {}).get("waits", 0)
    pacer1 = paced1.get("pacer") or {}
    floor1 = d["floors"]["10k-1sub-paced"]
    over1 = (
        f"{(paced1['wall_s'] / floor1 - 1) * 100:.0f} % over the floor: the 5 % headroom and the tail"
        if floor1 > 0
        else "ARM's buckets do not bind at this size"
    )
    projected = naive["plans"] < s10["estate"]["plans"]
    lo, hi = d["cold_floor_spread_ms"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())

    def calls(run: dict[str, Any]) -> str:
        return ", ".join(f"{k} {n:,}" for k, n in run["server"]["by_kind"].items())

    sweep_rows = "\n".join(
        f"| {run['label']} | {run['estate']['plans']:,} / {run['estate']['subscriptions']} / "
        f"{run['estate']['drifted']:,} | {run['wall_s']:.2f} s | {run['cpu_s']:.1f} s | {calls(run)} | "
        f"{run['summary']['fixed']:,} | {run['summary']['failed']} | {run['rss_before_sweep_mb']:.0f} MB | "
        f"{run['peak_rss_mb']:.0f} MB |"
        for run in [*sweeps.values(), *thr.values()]
    )
    breakdown = "\n".join(f"| `{name}` | {own_ms:.1f} | {cum:.1f} |" for name, own_ms, cum in cold["breakdown_ms"])
    cs = cold["median_s"]
    return f"""# Benchmarks: labguard against the naive loop on the same endpoint

Written by `make bench` (`python -m bench`) on {m["date"]}, commit `{m["commit"]}`{" (with uncommitted changes)" if m["dirty"] else ""}.
Measured figures and ratios from **one run**; nothing here is a timed test. Total run time {r["total_s"] / 60:.1f} min.

## Machine

{m["cpu"]}, {m["cores"]} cores, {m["memory_gb"]} GB RAM, {m["os"]}, Python {m["python"]}.
{packages}.

## Commands

```sh
make bench                      # = .venv/bin/python -m bench (installs the venv first)
# what it runs:
python -m emulator --port 0 --latency-ms {ep["latency_ms"]:.0f} --page-size {ep["page_size"]} --lro-delay-s {ep["lro_delay_s"]:g}   # the endpoint, its own process
python -m bench.naive  < spec   # the naive loop, one child process
python -m bench.sweep  < spec   # one labguard sweep per child process (build_runtime + Reconciler.sweep)
python -m bench.events < spec   # the Event Grid function, 1 warm-up + N events
python -m bench.threadpool < spec   # the competent baseline: 32 threads over the sync SDK, PATCH only drifted
python -m bench.fanout          # timer enqueues on Azurite's queue, worker processes drain it
python -m bench.plain  < spec   # a plain aiohttp loop making the sweep's calls (CPU per call)
python -m bench.firstevent < spec   # a fresh interpreter handling one event (first event from outside)
python -c "import azure.functions" / python -c "import function_app"   # cold start, 10 each, interleaved
BENCH_QUICK=1 make bench        # the whole pipeline at a tenth of the sizes, RESULTS to a temp file (not figures)
```

## Results against the targets

{render_table(r)}

## Setup (the same for labguard and the naive loop)

* **Endpoint**: `python -m emulator` in its own process (so it shares neither the GIL nor the RSS figure
  with the code under test), HTTPS with a throwaway CA, **{ep["latency_ms"]:.0f} ms per ARM call**
  (`asyncio.sleep`, so concurrent calls overlap), pages of {ep["page_size"]}, **LRO delay 0** (a PATCH's
  operation is due at once, `Retry-After: 0`). Seeded afresh before every run, so each starts from the
  same drift. Tokens come from the endpoint's Entra-style token endpoint.
* **Estate**: plans in contiguous blocks over 100 subscriptions (5 resource groups each); every 10th plan
  drifted in exactly one governed field, rotating over the nine fields `policy.yaml` can tighten
  (webSsh, webRdp, clientSsh, shutdownOnDisconnect, shutdownWhenNotConnected, shutdownOnIdle and the
  three delays; clientRdp may be Public under it, so it cannot drift). **Delays are ISO-8601
  (`PT15M`)**: the SDK's typed models, which the naive loop uses, raise DeserializationError on the
  `00:05` form of the official examples, so with those the naive loop would fail outright.
  50k uses the same 10 % drift.
* **labguard**: enforce mode, bundled `policy.yaml`, `LABGUARD_CONCURRENCY` at its default **16**, the
  real path (`shared.runtime.runs.build_runtime(settings)` then `runtime.reconciler.sweep(...)`, what the timer
  function's `on_timer` runs), credentials from `DefaultAzureCredential` (environment credential),
  requests paced by the default `Pacer` (`shared.edge.pacing`). LROs are polled as the endpoint's
  `Retry-After` says (0 s); labguard's own `poll_interval_s` (5 s) applies only without one.
  Log records are formatted by a handler (the cost a log shipper pays) and dropped.
* **TLS**: as in Azure, the system trust store (`SSL_CERT_FILE` points it at the endpoint's CA) and no
  `LABGUARD_CA_BUNDLE`. The `LABGUARD_CA_BUNDLE` configuration is measured apart (see Findings).
* **Naive loop**: the sync SDK as an admin writes it, `ManagedLabsClient(credential, sub, base_url=...,
  api_version="2023-06-07", connection_verify=ca, polling_interval=0)`; for each plan of
  `lab_plans.list_by_subscription()`: `get`, then `begin_update(rg, name, baseline).result()` whether
  drifted or not. `polling_interval=0` is the most generous choice: azure-core's ARMPolling reads
  `Retry-After: 0` as "use polling_interval", whose default (30 s) would cost 30 s a plan.
* **Counting**: ARM calls are counted by the endpoint (its request log, by kind; `poll (final GET)` is the
  Location GET the SDK's LRO poller makes for the final resource) and cross-checked with labguard's own
  `CallCounter` (`sweep.summary`). Peak RSS is `VmHWM` of the child process that ran the sweep or loop.

## 1. Sweep

| run | plans / subs / drifted | wall | CPU | ARM calls (endpoint's count) | fixed | failed | RSS ready | peak RSS |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{sweep_rows}

* Naive loop: {naive["plans"]:,} plans in {naive["wall_s"]:.1f} s = {d["naive_per_plan_s"] * 1000:.0f} ms a plan (errors: {naive["errors"]});
  calls: {calls(naive)}; peak RSS {naive["peak_rss_mb"]:.0f} MB. It is strictly sequential and every call
  costs the same at any estate size, so {s10["estate"]["plans"]:,} plans take {d["naive_per_plan_s"] * 1000:.0f} ms x
  {s10["estate"]["plans"]:,} = **{d["naive_10k_projected_s"] / 60:.0f} min{" (projected, not run: it would take twice the bench budget; `python -m bench --naive-plans 10000` runs it)" if projected else ""}**.
  At {naive["plans"]:,} plans both were measured on the same estate.
* labguard's calls are exactly list pages + one fresh `get` and one `patch` per drifted plan, plus one
  poll per patch; compliant plans cost nothing beyond their list page. The naive loop makes
  {naive["server"]["total"] / max(1, naive["plans"]):.1f} calls per plan and writes every plan.
* What bounds labguard's sweep: with 16 plans in flight each drifted plan is three sequential round trips
  (get, patch, poll: 3 x {ep["latency_ms"]:.0f} ms), so {s10["estate"]["drifted"]:,} drifted plans need at least
  {s10["estate"]["drifted"]:,} x 0.12 s / 16 = {s10["estate"]["drifted"] * 0.12 / 16:.1f} s; the rest is CPU
  ({s10["cpu_s"]:.1f} s of CPU in {s10["wall_s"]:.1f} s: azure-core's pipeline, TLS and JSON per call, on a 2-core
  machine the endpoint shares). `LABGUARD_CONCURRENCY` raises the in-flight count.
* Memory: plans stream through a bounded queue (4 x concurrency) and a list page at a time per
  subscription, so peak RSS is set by the imports (~{s10["rss_before_sweep_mb"]:.0f} MB before the first call) plus
  open connections and the pages in flight (up to one per subscription listed at once), not by the estate:
  the sweep added {d["sweep_mb"]["10k"]:.0f} MB at 10k plans and {d["sweep_mb"]["50k"]:.0f} MB at 50k.

## 2. Inside ARM's budget

The endpoint's per-subscription token buckets on (reads 250 burst / 25 per s, writes 200 / 10 per s,
as ARM documents them since 2024: <https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>).
labguard's `shared.edge.pacing.Pacer` keeps the same buckets per subscription, minus 5 % headroom, makes
each request wait for its token before it is sent, lowers its count when ARM's
`x-ms-ratelimit-remaining-subscription-*` header says there is less, and holds a bucket for a 429's
`Retry-After`. "ARM's floor" is the least time the documented buckets allow for the calls made.

* **10k plans over 100 subscriptions**: {thr["10k-100subs-paced"]["server"]["throttled"]} 429s,
  {paced100["wall_s"]:.1f} s. Each subscription needs {reads100:.0f} reads and {writes100:.0f} writes, inside one burst
  (250 / 200): the budget does not bind{", and no request had to wait" if waited100 == 0 else f"; {waited100} requests waited"}.
* **10k plans in one subscription** (the budget binds: {paced1["summary"]["arm_calls_by_kind"].get("patch", 0):,} writes at 10/s after a burst of 200):
  paced, **{paced1["server"]["throttled"]} 429s** in {paced1["wall_s"]:.1f} s against ARM's floor of {floor1:.0f} s
  ({over1}); {pacer1.get("waits", 0):,} requests waited their turn, at most
  {pacer1.get("max_wait_s", 0):.1f} s; ARM's remaining-count header lowered the local count {pacer1.get("corrections", 0)} times.
  Without the pacer: **{unpaced1["server"]["throttled"]:,} 429s** ({", ".join(f"{k} {n}" for k, n in unpaced1["server"]["throttled_by_kind"].items()) or "none"}),
  {unpaced1["wall_s"]:.1f} s, **{unpaced1["summary"]["failed"]} plans failed**{" (azure-core's retry policy gives up after 3 status retries: a 429 four times in a row fails the request, and the plan waits for the next sweep)" if unpaced1["summary"]["failed"] else ""}.

## 3. Event path

{len(ev["samples"]):,} Event Grid events (ResourceWriteSuccess by a lab owner, one per plan, {sum(1 for s in ev["samples"] if s["drifted"])} of them
for drifted plans) decoded as the Python worker does (`EventGridEventInConverter`, outside the timing)
and awaited one at a time through the function `app.get_functions()` indexes (`eventgrid_lab_plan`).
**Method**: the endpoint at **0 ms** latency (the subtraction below does not depend on it; it keeps the
run short); each event's wall time minus the time spent inside azure-core's aiohttp transport `send`
(request out, response and body in: the ARM round trip, measured around the transport by wrapping
`AioHttpTransport.send` in the child). What is left is labguard's own time: event parsing, settings,
the SDK pipeline's policies (auth header, retry, pacing, counting), JSON, evaluation, logging.

| | p50 | p95 | p99 | max |
| --- | --- | --- | --- | --- |
| own time, all events | {own["p50"]:.2f} ms | {own["p95"]:.2f} ms | {own["p99"]:.2f} ms | {own["max"]:.1f} ms |
| own time, compliant plans (1 GET) | {compliant["p50"]:.2f} ms | {compliant["p95"]:.2f} ms | {compliant["p99"]:.2f} ms | {compliant["max"]:.1f} ms |
| own time, drifted plans (GET, PATCH, poll) | {fixed["p50"]:.2f} ms | {fixed["p95"]:.2f} ms | {fixed["p99"]:.2f} ms | {fixed["max"]:.1f} ms |
| inside the transport (ARM at 0 ms) | {arm["p50"]:.2f} ms | {arm["p95"]:.2f} ms | {arm["p99"]:.2f} ms | {arm["max"]:.1f} ms |
| end to end | {d["events_total_ms"]["p50"]:.2f} ms | {d["events_total_ms"]["p95"]:.2f} ms | {d["events_total_ms"]["p99"]:.2f} ms | {d["events_total_ms"]["max"]:.1f} ms |

The first event of a worker is apart: {ev["first"]["total"] * 1000:.0f} ms end to end, {ev["first"]["own"] * 1000:.0f} ms own (it imports
the SDKs the app defers, loads the policy, builds the client and gets the token).

## 4. Cold start

Fresh interpreters, {cold["runs"]} runs each, interleaved, after one untimed run of each (bytecode caches):
`import azure.functions` (the floor: the worker needs it anyway) **{cs["floor"] * 1000:.0f} ms**, `import function_app`
**{cs["app"] * 1000:.0f} ms** ({d["cold_added_ms"]:+.1f} ms), and `from function_app import app; app.get_functions()` (what
indexing does) **{cs["indexed"] * 1000:.0f} ms** ({d["cold_added_indexed_ms"]:+.1f} ms). The floor's own runs spread from
{lo:.0f} to {hi:.0f} ms, so differences of a few ms are noise. What `import function_app` loads beyond the floor (`-X importtime`, ms):

| module | self | cumulative |
| --- | --- | --- |
{breakdown}

(`function_app`'s cumulative time includes `azure.functions` itself.) The handlers import
`shared.runtime.runs` and the SDKs inside the function body, so indexing loads none of them; that cost
is paid by the first invocation (section 3).

## Findings

* **`LABGUARD_CA_BUNDLE` (a campus TLS-inspecting proxy; every test against the local endpoint).** An
  earlier run of this benchmark found that handing azure-core the CA bundle as a *path* made it build a
  new `ssl.SSLContext` per request (`AioHttpTransport._build_ssl_config`), so aiohttp reused no
  connection: each request reloaded the bundle and did a TLS handshake (then: sweep at 1k 3.2 s instead
  of 1.5 s, peak RSS 198 MB instead of 91 MB, events p95 33.7 ms instead of 12.0 ms end to end).
  `shared/edge/arm.py` now builds one context (`shared.edge.tls.ssl_context`) and gives the SDK client and the
  credential transports over one aiohttp session. Measured now with the same 1k estate: sweep
  {ca["wall_s"]:.1f} s against {sweeps["1k"]["wall_s"]:.1f} s without the bundle, {ca["cpu_s"]:.1f} s of CPU against
  {sweeps["1k"]["cpu_s"]:.1f} s, peak RSS {ca["peak_rss_mb"]:.0f} MB against {sweeps["1k"]["peak_rss_mb"]:.0f} MB; events end to end (0 ms endpoint)
  p50 / p95 {d["events_ca_total_ms"]["p50"]:.1f} / {d["events_ca_total_ms"]["p95"]:.1f} ms against
  {d["events_same_total_ms"]["p50"]:.1f} / {d["events_same_total_ms"]["p95"]:.1f} ms for the same first {len(evca["samples"])} events without it.
* The endpoint kept up: at most ~{max(run["server"]["total"] / run["wall_s"] for run in sweeps.values()):.0f} ARM calls/s here, against the
  1,100+ GET/s it sustains (emulator/README.md); its RSS at the end was {ep.get("rss_mb_at_end", 0):.0f} MB, not counted above.
"""
