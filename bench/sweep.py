"""Child process: one labguard sweep in enforce mode, the real path (``build_runtime`` then the
reconciler's ``sweep``, exactly what the timer function's ``on_timer`` runs). Prints one JSON line.

``python -m bench.sweep < spec.json``; the spec names the endpoint, the subscriptions, and whether
requests are paced (``shared.edge.pacing.Pacer``, the default in ``build_runtime``) or not.
"""

from __future__ import annotations

import asyncio
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
        cpu_before = _cpu_s()
        started = time.perf_counter()
        summary = await runtime.reconciler.sweep(sweep_scopes(settings.subscriptions, settings.resource_groups))
        wall = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
    finally:
        await runtime.close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
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


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    spec = read_spec()
    apply_env(spec)
    emit(asyncio.run(run(spec)))


if __name__ == "__main__":
    main()
