"""The fan-out run: the timer enqueues one message per subscription on Azurite's queue, then several
worker processes drain it through ``shared.runtime.runs.on_scope_message`` (what the queue-triggered function
runs), as several Functions instances would. ``python -m bench.fanout < spec`` is one process:
``role`` ``enqueue`` (one ``on_timer``) or ``worker`` (take, sweep, delete until the queue stays empty).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.child import apply_env, capture_logs, emit, read_spec
from bench.endpoint import REPO, peak_rss_mb

AZURITE = REPO / "node_modules" / ".bin"
ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public; it opens only the local emulator).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Storage:
    """Azurite's queue and table services in memory, for one fan-out run."""

    def __init__(self, workdir: Path) -> None:
        from devtools.services import free_port, wait_listening

        self.procs: list[subprocess.Popen[bytes]] = []
        ports = {}
        for service in ("queue", "table"):
            port = ports[service] = free_port()
            log = (workdir / f"azurite-{service}.log").open("wb")
            argv = [str(AZURITE / f"azurite-{service}"), f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
            argv += ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
            proc = subprocess.Popen(  # fixed argv, no shell
                argv,
                stdout=log,
                stderr=log,
                cwd=workdir,
                env={**os.environ, "AZURITE_ACCEPT_EULA": "true"},
                start_new_session=True,  # its own process group, which stop_process ends
            )
            self.procs.append(proc)
            if not wait_listening(proc, port, 30):
                self.stop()
                raise RuntimeError(f"Azurite {service} did not start")
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"QueueEndpoint=http://127.0.0.1:{ports['queue']}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{ports['table']}/{ACCOUNT};"
        )

    def stop(self) -> None:
        from devtools.services import stop_process

        for proc in self.procs:
            stop_process(proc)


def _env(spec: dict[str, Any]) -> None:
    apply_env(spec)
    os.environ.update({"AzureWebJobsStorage": spec["storage"], "LABGUARD_SWEEP_FANOUT": "on"})


async def enqueue() -> dict[str, Any]:
    from shared.runtime.runs import close_runtimes, on_timer

    run_id = await on_timer(past_due=False)
    await close_runtimes()
    return {"run_id": run_id}


async def work(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.storage.queue.aio import QueueClient

    from shared.runtime.fanout import SWEEP_QUEUE
    from shared.runtime.runs import close_runtimes, on_scope_message

    logs = capture_logs()
    scopes = idle = 0
    async with QueueClient.from_connection_string(spec["storage"], SWEEP_QUEUE) as queue:
        while idle < 10:
            taken = [m async for m in queue.receive_messages(max_messages=1, visibility_timeout=600)][:1]
            if not taken:
                idle += 1
                await asyncio.sleep(0.1)
                continue
            idle = 0
            message = taken[0]
            await on_scope_message(body=base64.b64decode(message.content).decode(), dequeue_count=message.dequeue_count)
            await queue.delete_message(message)
            scopes += 1
    await close_runtimes()
    return {"scopes": scopes, "summaries": logs.summaries, "peak_rss_mb": peak_rss_mb(), "ended": time.time()}


def run_fanout(ep: Any, estate: Any, *, workers: int, workdir: Path) -> dict[str, Any]:
    """Enqueue, then ``workers`` processes drain; the wall time runs from the enqueue to the last scope."""
    storage = Storage(workdir)
    try:
        spec = {
            "endpoint": ep.endpoint,
            "ca_file": ep.ca_file,
            "tenant_id": ep.tenant_id,
            "authority": ep.authority,
            "subscriptions": estate.subscription_ids,
            "storage": storage.connection_string,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABGUARD_", "AZURE_"))}
        env.update({"PYTHONPATH": str(REPO), "SSL_CERT_FILE": ep.ca_file})

        def start(role: str) -> subprocess.Popen[str]:
            spec_file = workdir / f"spec-{role}.json"
            spec_file.write_text(json.dumps({**spec, "role": role}))
            with spec_file.open() as stdin:
                return subprocess.Popen(
                    [sys.executable, "-m", "bench.fanout"],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                    env=env,
                )

        started = time.time()
        enqueuer = start("enqueue")
        out, err = enqueuer.communicate(timeout=600)
        if enqueuer.returncode != 0:
            raise RuntimeError(f"enqueue failed: {err[-3000:]}")
        enqueued = time.time()
        procs = [start("worker") for _ in range(workers)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        storage.stop()
    summaries = [s for r in results for s in r["summaries"] if "run_id" in s]
    last = max(r["ended"] for r in results)
    return {
        "workers": workers,
        "wall_s": last - started - 1.0,  # the workers stop after 1 s of an empty queue
        "enqueue_s": enqueued - started,
        "scopes_per_worker": [r["scopes"] for r in results],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "summary": summaries[0] if len(summaries) == 1 else summaries,
    }


def main() -> None:
    spec = read_spec()
    _env(spec)
    result = asyncio.run(enqueue() if spec["role"] == "enqueue" else work(spec))
    emit(result)


if __name__ == "__main__":
    main()
