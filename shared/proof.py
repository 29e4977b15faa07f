"""Proof after a write: did the plan end where the patch meant it to, and nothing else move?

Pure: compares the plan read before the write with the plan read after it. Every profile leaf
labguard reads is compared (not only those the policy governs: a service that replaces a nested
profile could reset any of them). Values are compared as the service means them: enum values
case-insensitively, an absent flag or channel as the spec's default, delays by duration (``00:05``
equals ``PT5M``). A leaf present before and absent after is a change: that is a dropped value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.durations import parse_delay
from shared.lab_plans import AutoShutdownProfile, ConnectionProfile, LabPlan

CONNECTION = "properties.defaultConnectionProfile."
SHUTDOWN = "properties.defaultAutoShutdownProfile."

# ARM path -> (profile, attribute, spec default when absent; None: no default, absent stays absent)
LEAVES: dict[str, tuple[str, str, str | None]] = {
    CONNECTION + "webSshAccess": ("connection", "web_ssh_access", "None"),
    CONNECTION + "webRdpAccess": ("connection", "web_rdp_access", "None"),
    CONNECTION + "clientSshAccess": ("connection", "client_ssh_access", "None"),
    CONNECTION + "clientRdpAccess": ("connection", "client_rdp_access", "None"),
    SHUTDOWN + "shutdownOnDisconnect": ("shutdown", "shutdown_on_disconnect", "Disabled"),
    SHUTDOWN + "shutdownWhenNotConnected": ("shutdown", "shutdown_when_not_connected", "Disabled"),
    SHUTDOWN + "shutdownOnIdle": ("shutdown", "shutdown_on_idle", "None"),
    SHUTDOWN + "disconnectDelay": ("shutdown", "disconnect_delay", None),
    SHUTDOWN + "noConnectDelay": ("shutdown", "no_connect_delay", None),
    SHUTDOWN + "idleDelay": ("shutdown", "idle_delay", None),
}


@dataclass(frozen=True)
class LeafChange:
    """A leaf the write was not meant to change that did change."""

    field: str
    before: str | None
    after: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "before": self.before, "after": self.after}


def raw_leaf(plan: LabPlan, field: str) -> str | None:
    profile, attribute, _ = LEAVES[field]
    holder: ConnectionProfile | AutoShutdownProfile | None
    holder = plan.connection if profile == "connection" else plan.shutdown
    return None if holder is None else getattr(holder, attribute)


def _meaning(field: str, raw: str | None) -> str | timedelta | None:
    default = LEAVES[field][2]
    if raw is None:
        return default.lower() if default is not None else None
    if default is None:  # a delay
        try:
            return parse_delay(raw)
        except ValueError:
            return raw
    return raw.strip().lower()


def unexpected_changes(before: LabPlan, after: LabPlan, written: frozenset[str]) -> tuple[LeafChange, ...]:
    """Leaves outside ``written`` (the drifted fields the patch changed) whose meaning changed."""
    changes = []
    for field in LEAVES:
        if field in written:
            continue
        old, new = raw_leaf(before, field), raw_leaf(after, field)
        if _meaning(field, old) != _meaning(field, new):
            changes.append(LeafChange(field, old, new))
    return tuple(changes)
