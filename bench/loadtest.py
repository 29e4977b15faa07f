"""Measure what the emulator sustains: ``python -m bench.loadtest [--plans 50000] [--seconds 5]``.

Starts ``python -m emulator`` as a separate process seeded with N plans (as ``make demo`` and
``bench/`` run it), then drives it over HTTPS with an aiohttp client in this process and prints
requests/s for GET one plan, list pages of 100, and PATCH (lro_delay_s=0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

SUB = "00000000-0000-0000-0000-00000000beef"


def _seed(n: int, rgs: int) -> dict[str, Any]:
    plans = []
    for i in range(n):
        rg = f"rg-{i % rgs:03d}"
        plans.append(
            {
                "id": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/plan-{i:06d}",
                "location": "westus",
                "properties": {
                    "defaultAutoShutdownProfile": {
                        "shutdownOnDisconnect": "Enabled",
                        "disconnectDelay": "PT5M",
                        "idleDelay": "PT15M",
                    },
                    "defaultConnectionProfile": {"webSshAccess": "None", "clientRdpAccess": "Public"},
                },
            }
        )
    return {"labPlans": plans, "labs": []}


async def _drive(endpoint: str, ca_file: str, token: str, n: int, seconds: float, concurrency: int) -> None:
    ctx = ssl.create_default_context(cafile=ca_file)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rgs = 50

    def plan_url(i: int) -> str:
        return (
            f"{endpoint}/subscriptions/{SUB}/resourceGroups/rg-{i % rgs:03d}/providers/Microsoft.LabServices/"
            f"labPlans/plan-{i:06d}?api-version=2023-06-07"
        )

    list_url = f"{endpoint}/subscriptions/{SUB}/providers/Microsoft.LabServices/labPlans?api-version=2023-06-07"
    patch_body = json.dumps({"properties": {"defaultAutoShutdownProfile": {"idleDelay": "PT10M"}}})

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency)) as session:

        async def run(name: str, make: Any) -> None:
            done = 0
            errors = 0
            stop = time.monotonic() + seconds

            async def worker(w: int) -> None:
                nonlocal done, errors
                i = w
                while time.monotonic() < stop:
                    method, url, body = make(i)
                    async with session.request(method, url, headers=headers, data=body) as resp:
                        await resp.read()
                        if resp.status >= 400:
                            errors += 1
                    done += 1
                    i += concurrency

            started = time.monotonic()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            elapsed = time.monotonic() - started
            print(f"{name:<28} {done / elapsed:8.0f} req/s   ({done} requests, {errors} errors, {concurrency} conns)")

        next_links: list[str] = [list_url]

        def list_page(_i: int) -> tuple[str, str, None]:
            return "GET", next_links[-1] if len(next_links) < 400 else list_url, None

        await run("GET one plan", lambda i: ("GET", plan_url((i * 7919) % n), None))
        await run("LIST page of 100 (first)", list_page)
        await run("PATCH (lro_delay_s=0)", lambda i: ("PATCH", plan_url((i * 104729) % n), patch_body))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadtest")
    p.add_argument("--plans", type=int, default=50_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.json"
        seed.write_text(json.dumps(_seed(args.plans, 50)))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", "0", "--state", str(seed)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            print(f"emulator up with {args.plans} plans in {time.monotonic() - started:.1f}s at {ready['endpoint']}")
            sys.path.insert(0, env["PYTHONPATH"])
            token = _token(ready["endpoint"], ready["ca_file"])
            asyncio.run(_drive(ready["endpoint"], ready["ca_file"], token, args.plans, args.seconds, args.concurrency))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _token(endpoint: str, ca_file: str) -> str:
    import urllib.request

    ctx = ssl.create_default_context(cafile=ca_file)
    req = urllib.request.Request(endpoint + "/_emulator/token", data=b'{"client_id": "loadtest"}', method="POST")
    with urllib.request.urlopen(req, context=ctx) as resp:
        return str(json.loads(resp.read())["access_token"])


if __name__ == "__main__":
    main()
