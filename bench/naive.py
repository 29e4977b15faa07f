"""Child process: the loop an admin would write instead of labguard, with the sync SDK.

For every subscription, for every plan ``lab_plans.list_by_subscription`` yields: ``get`` it, then
``begin_update(...).result()`` with the baseline, drifted or not, waiting for each long-running
operation before the next plan. One plan at a time. Prints one JSON line.

``polling_interval=0``: the endpoint answers ``Retry-After: 0`` (its LROs are due at once), which
azure-core's ARMPolling reads as "use polling_interval" (default 30 s). Zero is the most generous
setting for the naive loop; with the default it would wait 30 s per plan.
"""

from __future__ import annotations

import time
from typing import Any

from bench.child import emit, read_spec
from bench.endpoint import peak_rss_mb
from bench.estate import BASELINE_CONNECTION, BASELINE_SHUTDOWN


def baseline_update() -> Any:
    """The policy's bounds as a typed LabPlanUpdate (what the naive loop writes to every plan)."""
    from azure.mgmt.labservices.models import AutoShutdownProfile, ConnectionProfile, LabPlanUpdate
    from isodate import parse_duration

    return LabPlanUpdate(
        default_connection_profile=ConnectionProfile(
            web_ssh_access=BASELINE_CONNECTION["webSshAccess"],
            web_rdp_access=BASELINE_CONNECTION["webRdpAccess"],
            client_ssh_access=BASELINE_CONNECTION["clientSshAccess"],
            client_rdp_access=BASELINE_CONNECTION["clientRdpAccess"],
        ),
        default_auto_shutdown_profile=AutoShutdownProfile(
            shutdown_on_disconnect=BASELINE_SHUTDOWN["shutdownOnDisconnect"],
            shutdown_when_not_connected=BASELINE_SHUTDOWN["shutdownWhenNotConnected"],
            shutdown_on_idle=BASELINE_SHUTDOWN["shutdownOnIdle"],
            disconnect_delay=parse_duration(BASELINE_SHUTDOWN["disconnectDelay"]),
            no_connect_delay=parse_duration(BASELINE_SHUTDOWN["noConnectDelay"]),
            idle_delay=parse_duration(BASELINE_SHUTDOWN["idleDelay"]),
        ),
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.labservices import ManagedLabsClient

    credential = ClientSecretCredential(
        spec["tenant_id"],
        "naive-admin",
        "local-bench-secret",
        authority=spec["authority"],
        connection_verify=spec["ca_file"],
        disable_instance_discovery=True,
    )
    update = baseline_update()
    rss_ready = peak_rss_mb()
    plans = errors = 0
    first_error = None
    started = time.perf_counter()
    for sub in spec["subscriptions"]:
        client = ManagedLabsClient(
            credential,
            sub,
            base_url=spec["endpoint"],
            api_version="2023-06-07",
            connection_verify=spec["ca_file"],
            polling_interval=0,
        )
        with client:
            for plan in client.lab_plans.list_by_subscription():
                resource_group = plan.id.split("/")[4]
                try:
                    client.lab_plans.get(resource_group, plan.name)
                    client.lab_plans.begin_update(resource_group, plan.name, update).result()
                except Exception as exc:  # the admin's loop logs and goes on
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                plans += 1
    wall = time.perf_counter() - started
    credential.close()
    return {
        "wall_s": wall,
        "plans": plans,
        "errors": errors,
        "first_error": first_error,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_loop_mb": rss_ready,
    }


def main() -> None:
    emit(run(read_spec()))


if __name__ == "__main__":
    main()
