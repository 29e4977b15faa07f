"""Child process: the protocol's own CPU cost, a plain aiohttp loop making the calls labguard makes.

No SDK, no policy engine, no records: one token from the endpoint's token endpoint, then for each
subscription the list pages (``nextLink`` followed), and for each plan a list item shows drifted (a
fixed check against the estate's bounds): GET the plan, PATCH its two profiles whole with the drifted
leaves set, GET the operation URL the 202 names, GET the plan again. The same calls, the same
endpoint, the same concurrency (16 plans in flight) as the labguard sweep it is set beside; the
figure that matters is CPU per ARM call (``time.process_time`` around the loop), the floor labguard's
own CPU per call is compared with. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from bench.child import emit, read_spec
from bench.endpoint import peak_rss_mb
from bench.estate import BASELINE_CONNECTION, BASELINE_SHUTDOWN

CONCURRENCY = 16
API = "api-version=2023-06-07"
LEVELS = {"None": 0, "Private": 1, "Public": 2}
IDLE = {"None": 2, "LowUsage": 1, "UserAbsence": 0}
LIMITS = {"disconnectDelay": 15 * 60, "noConnectDelay": 30 * 60, "idleDelay": 30 * 60}


def _seconds(iso: str) -> int:
    """PT#H#M#S only: the estate writes nothing else."""
    total, number = 0, ""
    for ch in iso[2:]:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * {"H": 3600, "M": 60, "S": 1}[ch]
            number = ""
    return total


def drifted(plan: dict[str, Any]) -> bool:
    props = plan.get("properties", {})
    conn = props.get("defaultConnectionProfile", {})
    shut = props.get("defaultAutoShutdownProfile", {})
    return (
        LEVELS.get(conn.get("webSshAccess"), 2) > 0
        or LEVELS.get(conn.get("webRdpAccess"), 2) > 0
        or LEVELS.get(conn.get("clientSshAccess"), 2) > 1
        or shut.get("shutdownOnDisconnect") != "Enabled"
        or shut.get("shutdownWhenNotConnected") != "Enabled"
        or IDLE.get(shut.get("shutdownOnIdle"), 2) > 1
        or any(_seconds(shut.get(k) or "PT0S") > limit for k, limit in LIMITS.items())
    )


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    calls = {"list": 0, "get": 0, "patch": 0, "poll": 0}
    counts = {"plans": 0, "patched": 0, "errors": 0}
    async with aiohttp.ClientSession() as session:
        form = {
            "grant_type": "client_credentials",
            "client_id": "plain-loop",
            "client_secret": "local-bench-secret",
            "scope": "https://management.azure.com/.default",
        }
        async with session.post(f"{spec['authority']}/{spec['tenant_id']}/oauth2/v2.0/token", data=form) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        endpoint = spec["endpoint"]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fix(plan_id: str) -> None:
            async with gate:
                try:
                    async with session.get(f"{endpoint}{plan_id}?{API}", headers=headers) as resp:
                        calls["get"] += 1
                        plan = await resp.json()
                    if not drifted(plan):
                        return
                    props = plan["properties"]
                    body = {
                        "properties": {
                            "defaultConnectionProfile": {**props["defaultConnectionProfile"], **BASELINE_CONNECTION},
                            "defaultAutoShutdownProfile": {**props["defaultAutoShutdownProfile"], **BASELINE_SHUTDOWN},
                        }
                    }
                    async with session.patch(f"{endpoint}{plan_id}?{API}", json=body, headers=headers) as resp:
                        calls["patch"] += 1
                        await resp.read()
                        operation = resp.headers.get("Azure-AsyncOperation") or resp.headers.get("Location")
                    if operation:
                        url = operation if "api-version=" in operation else f"{operation}?{API}"
                        async with session.get(url, headers=headers) as resp:
                            calls["poll"] += 1
                            await resp.json()
                    async with session.get(f"{endpoint}{plan_id}?{API}", headers=headers) as resp:
                        calls["get"] += 1
                        await resp.json()
                    counts["patched"] += 1
                except (aiohttp.ClientError, KeyError, ValueError):
                    counts["errors"] += 1

        async def subscription(sub: str) -> list[str]:
            todo: list[str] = []
            url: str | None = f"{endpoint}/subscriptions/{sub}/providers/Microsoft.LabServices/labPlans?{API}"
            while url:
                async with gate, session.get(url, headers=headers) as resp:
                    calls["list"] += 1
                    page = await resp.json()
                for item in page.get("value", []):
                    counts["plans"] += 1
                    if drifted(item):
                        todo.append(item["id"])
                url = page.get("nextLink")
            return todo

        rss_ready = peak_rss_mb()
        cpu_before = time.process_time()
        sys_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        started = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        for todo in asyncio.as_completed([subscription(s) for s in spec["subscriptions"]]):
            for plan_id in await todo:
                pending.add(asyncio.ensure_future(fix(plan_id)))
        await asyncio.gather(*pending)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_before
    total = sum(calls.values())
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "calls": calls,
        "calls_total": total,
        "sys_s": sys_s,
        "cpu_ms_per_call": 1000 * cpu / total if total else 0.0,
        **counts,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_loop_mb": rss_ready,
    }


def main() -> None:
    emit(asyncio.run(run(read_spec())))


if __name__ == "__main__":
    main()
