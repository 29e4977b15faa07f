"""Child process: the competent baseline, what a good admin writes in about 40 lines instead of labguard.

The sync SDK and a 32-thread pool: list each subscription's plans, then for each plan (in the pool)
``get`` it, compare its two profiles with the policy's bounds, and ``begin_update(...).result()`` only
the plans that drifted. No pacing, no proof read, no notices. Prints one JSON line.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.child import emit, read_spec
from bench.endpoint import peak_rss_mb
from bench.naive import baseline_update

THREADS = 32
LEVELS = {"None": 0, "Private": 1, "Public": 2}
IDLE = {"None": 2, "LowUsage": 1, "UserAbsence": 0}


def drifted(plan: Any) -> bool:
    """Outside policy.yaml's bounds (the same bounds the estate drifts from)."""
    from datetime import timedelta

    conn, shut = plan.default_connection_profile, plan.default_auto_shutdown_profile
    return (
        LEVELS.get(conn.web_ssh_access, 2) > 0
        or LEVELS.get(conn.web_rdp_access, 2) > 0
        or LEVELS.get(conn.client_ssh_access, 2) > 1
        or shut.shutdown_on_disconnect != "Enabled"
        or shut.shutdown_when_not_connected != "Enabled"
        or IDLE.get(shut.shutdown_on_idle, 2) > 1
        or (shut.disconnect_delay or timedelta(0)) > timedelta(minutes=15)
        or (shut.no_connect_delay or timedelta(0)) > timedelta(minutes=30)
        or (shut.idle_delay or timedelta(0)) > timedelta(minutes=30)
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.labservices import ManagedLabsClient

    credential = ClientSecretCredential(
        spec["tenant_id"],
        "threadpool-admin",
        "local-bench-secret",
        authority=spec["authority"],
        connection_verify=spec["ca_file"],
        disable_instance_discovery=True,
    )
    update = baseline_update()
    clients = {
        sub: ManagedLabsClient(
            credential, sub, base_url=spec["endpoint"], api_version="2023-06-07", connection_verify=spec["ca_file"]
        )
        for sub in spec["subscriptions"]
    }
    counts = {"plans": 0, "patched": 0, "errors": 0}
    first_error: list[str] = []

    def one(sub: str, rg: str, name: str) -> None:
        try:
            plan = clients[sub].lab_plans.get(rg, name)
            if drifted(plan):
                clients[sub].lab_plans.begin_update(rg, name, update).result()
                counts["patched"] += 1
        except Exception as exc:  # the admin's loop logs and goes on
            counts["errors"] += 1
            first_error[:] = first_error or [f"{type(exc).__name__}: {exc}"[:300]]

    rss_ready = peak_rss_mb()
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        futures = []
        for sub, client in clients.items():
            for plan in client.lab_plans.list_by_subscription():
                counts["plans"] += 1
                futures.append(pool.submit(one, sub, plan.id.split("/")[4], plan.name))
        for future in futures:
            future.result()
    wall = time.perf_counter() - started
    for client in clients.values():
        client.close()
    credential.close()
    return {
        "wall_s": wall,
        **counts,
        "first_error": first_error[0] if first_error else None,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_loop_mb": rss_ready,
        "threads": THREADS,
    }


def main() -> None:
    emit(run(read_spec()))


if __name__ == "__main__":
    main()
