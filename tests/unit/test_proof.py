"""The proof after a write: which leaves moved that the patch did not mean to change."""

from __future__ import annotations

from typing import Any

from shared.core.plans import LabPlan
from shared.core.proof import unexpected_changes

PLAN_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/p"
)
SSH = ("properties", "defaultConnectionProfile", "clientSshAccess")


def plan(connection: dict[str, Any] | None = None, shutdown: dict[str, Any] | None = None) -> LabPlan:
    props: dict[str, Any] = {"provisioningState": "Succeeded"}
    if connection is not None:
        props["defaultConnectionProfile"] = connection
    if shutdown is not None:
        props["defaultAutoShutdownProfile"] = shutdown
    return LabPlan.from_arm({"id": PLAN_ID, "properties": props})


def test_a_profile_replaced_by_the_write_shows_every_reset_leaf() -> None:
    before = plan(
        {"webSshAccess": "None", "webRdpAccess": "Public", "clientSshAccess": "Public", "clientRdpAccess": "Public"}
    )
    after = plan(
        {"clientSshAccess": "Private", "webRdpAccess": "None", "clientRdpAccess": "None", "webSshAccess": "None"}
    )
    changes = unexpected_changes(before, after, frozenset({SSH}))
    assert [(c.field[-1], c.before, c.after) for c in changes] == [
        ("webRdpAccess", "Public", "None"),
        ("clientRdpAccess", "Public", "None"),
    ]


def test_same_meaning_is_no_change() -> None:
    before = plan({"clientRdpAccess": "public"}, {"disconnectDelay": "00:05", "shutdownOnIdle": None})
    after = plan({"clientRdpAccess": "Public", "webSshAccess": "None"}, {"disconnectDelay": "PT5M"})
    assert unexpected_changes(before, after, frozenset()) == ()


def test_a_dropped_delay_is_a_change() -> None:
    before = plan(shutdown={"idleDelay": "PT15M"})
    after = plan(shutdown={})
    (change,) = unexpected_changes(before, after, frozenset())
    assert (change.path, change.before, change.after) == (
        "properties.defaultAutoShutdownProfile.idleDelay",
        "PT15M",
        None,
    )
