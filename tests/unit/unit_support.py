"""Shared helpers for the unit tests: the example documents, plan bodies and policies built from data."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from shared.core.plans import LabPlan
from shared.core.policy import Policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "fixtures" / "labservices" / "LabPlans"  # our own (fixtures/labservices/README.md)
SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
OTHER_SUB = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2025, 6, 15, 12, 0, 0)


@cache
def _example_file(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def example(name: str, status: str = "200") -> dict[str, Any]:
    """A response body from an example document (``getLabPlan.json``, ``listLabPlans.json``...)."""
    body = _example_file(name)["responses"][status]["body"]
    if "value" in body:
        body = body["value"][0]
    return copy.deepcopy(body)


def plan_id(name: str = "plan", rg: str = "rg1", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/{name}"


def body(
    *,
    connection: dict[str, Any] | None = None,
    shutdown: dict[str, Any] | None = None,
    state: str | None = "Succeeded",
    tags: dict[str, str] | None = None,
    name: str = "plan",
    rg: str = "rg1",
    sub: str = SUB,
    **properties: Any,
) -> dict[str, Any]:
    """An ARM lab plan body; only the profiles given are present."""
    props: dict[str, Any] = dict(properties)
    if state is not None:
        props["provisioningState"] = state
    if connection is not None:
        props["defaultConnectionProfile"] = connection
    if shutdown is not None:
        props["defaultAutoShutdownProfile"] = shutdown
    out: dict[str, Any] = {"id": plan_id(name, rg, sub), "name": name, "location": "westus", "properties": props}
    if tags is not None:
        out["tags"] = tags
    return out


def plan(**kwargs: Any) -> LabPlan:
    return LabPlan.from_arm(body(**kwargs))


# A policy that governs everything, used unless a test needs another one.
FULL: dict[str, Any] = {
    "connection": {
        "webSshAccess": "None",
        "webRdpAccess": "Private",
        "clientSshAccess": "Private",
        "clientRdpAccess": "Public",
    },
    "autoShutdown": {
        "shutdownOnDisconnect": "Enabled",
        "shutdownWhenNotConnected": "Enabled",
        "minShutdownOnIdle": "LowUsage",
        "maxDisconnectDelay": "PT15M",
        "maxNoConnectDelay": "PT30M",
        "maxIdleDelay": "PT30M",
    },
}

COMPLIANT_CONNECTION = {
    "webSshAccess": "None",
    "webRdpAccess": "Private",
    "clientSshAccess": "Private",
    "clientRdpAccess": "Public",
}
COMPLIANT_SHUTDOWN = {
    "shutdownOnDisconnect": "Enabled",
    "shutdownWhenNotConnected": "Enabled",
    "shutdownOnIdle": "LowUsage",
    "disconnectDelay": "PT15M",
    "noConnectDelay": "PT30M",
    "idleDelay": "PT30M",
}


def policy(data: dict[str, Any] | None = None, **top: Any) -> Policy:
    return parse_policy({**copy.deepcopy(FULL if data is None else data), **top}, "test-policy.yaml")
