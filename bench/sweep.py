"""Child process: one labguard sweep in enforce mode, the real path (``build_runtime`` then the
reconciler's ``sweep``, exactly what the timer function's ``on_timer`` runs). Prints one JSON line.

``python -m bench.sweep < spec.json``; the spec names the endpoint, the subscriptions, and whether
requests are paced (``shared.edge.pacing.Pacer``, the default in ``build_runtime``) or not.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import resource
import time
from typing import Any

from bench.child import apply_env, capture_logs, emit, read_spec
from bench.endpoint import peak_rss_mb


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from shared.edge.pacing import Pacer
    from shared.runtime.reconcile import sweep_scopes
    from shared.runtime.runs import build_runtime, load_settings

    logs = capture_logs()
    settings = load_settings()
    pacer = Pacer() if spec.get("paced", True) else None
    runtime = await build_runtime(settings, pacer=pacer, poll_interval_s=spec.get("poll_interval_s", 5.0))
    try:
        rss_ready = peak_rss_mb()
        gc_time = _gc_timer()
        profiler = cProfile.Profile(time.process_time) if spec.get("profile") else None
        cpu_before = _cpu_s()
        process_before = time.process_time()
        sys_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        summary = await runtime.reconciler.sweep(sweep_scopes(settings.subscriptions, settings.resource_groups))
        if profiler is not None:
            profiler.disable()
            if spec.get("profile_file"):
                profiler.dump_stats(spec["profile_file"])
        wall = time.perf_counter() - started
        process_cpu = time.process_time() - process_before
        sys_after = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        cpu = _cpu_s() - cpu_before
    finally:
        await runtime.close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "process_time_s": process_cpu,
        "gc_s": gc_time[0],
        "sys_s": sys_after - sys_before,
        "calls_total": runtime.session.plans.counter.total,
        "profile_top": _top(profiler, spec.get("profile_top", 15)) if profiler is not None else None,
        "summary": summary.as_record(),
        "failures": summary.failures[:5],
        "log_records": logs.records,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_sweep_mb": rss_ready,
        "concurrency": settings.concurrency,
        "pacer": None
        if pacer is None
        else {
            "requests": pacer.stats.requests,
            "waits": pacer.stats.waits,
            "waited_s": round(pacer.stats.waited_s, 3),
            "max_wait_s": round(pacer.stats.max_wait_s, 3),
            "throttled": pacer.stats.throttled,
            "corrections": pacer.stats.corrections,
        },
    }


def _gc_timer() -> list[float]:
    """CPU seconds the garbage collector takes from here on (the profile does not show it)."""
    import gc

    spent = [0.0, 0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.process_time()
        else:
            spent[0] += time.process_time() - spent[1]

    gc.callbacks.append(callback)
    return spent


def _top(profiler: cProfile.Profile, count: int) -> str:
    """The profile's top entries by own time (tottime), as pstats prints them."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    return text[text.find("   ncalls") :].rstrip() if "   ncalls" in text else text


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    spec = read_spec()
    apply_env(spec)
    emit(asyncio.run(run(spec)))


if __name__ == "__main__":
    main()
