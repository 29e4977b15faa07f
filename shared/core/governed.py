"""The governed settings: one row per lab plan setting labguard keeps inside the policy's bounds.

This table is the only place a governed setting is spelled. It drives the policy file's model and JSON
Schema and the effective rules (:mod:`shared.core.policy`), what is read from a plan (:mod:`shared.core.plans`),
evaluation and the patch (:mod:`shared.core.drift`) and how reports name a setting and its bound. Adding a
setting of a kind below is one row in :data:`GOVERNED`; a new kind of bound also needs its check in
:mod:`shared.core.drift`.

Kinds of bound, and what "tighter" means for each:

* ``at-most``: an exposure (``None < Private < Public``); the bound is the most allowed, a lower value is
  tighter, and a value at the top of the scale is a high-severity finding;
* ``at-least``: an ordered mode; the bound is the least allowed, a higher value is tighter;
* ``enabled``: a switch the policy may require ``Enabled``;
* ``max-delay``: a duration; the bound is the longest allowed, and it applies only while the feature it
  belongs to (``feature``, a switch or mode in the same profile) is on or required.

Idle modes are ordered by how aggressively they shut VMs down: ``None < LowUsage < UserAbsence``. The Lab
Services API (LabServices.json, shutdownOnIdleMode, 2023-06-07) and the docs ("Configure automatic shutdown
for a lab plan", learn.microsoft.com/azure/lab-services/how-to-configure-auto-shutdown-lab-plans) say
UserAbsence treats a VM as idle when there is no keyboard or mouse input, while LowUsage needs the user to
be absent *and* CPU/disk usage to be low. Every LowUsage-idle VM is UserAbsence-idle but not the other way
round, so UserAbsence shuts VMs down at least as often: it is the stricter mode.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

__all__ = [
    "AUTO_SHUTDOWN",
    "CONNECTION",
    "EXPOSURE",
    "GOVERNED",
    "IDLE_MODES",
    "PROFILES",
    "SWITCH",
    "Bound",
    "Kind",
    "Profile",
    "Setting",
    "feature_of",
    "rank_of",
]

Kind = Literal["at-most", "at-least", "enabled", "max-delay"]
#: A bound as the policy sets it: an enum value, or the longest delay allowed.
Bound = str | timedelta

#: Enum scales, lowest first. The first value of a switch or mode is "off".
EXPOSURE: tuple[str, ...] = ("None", "Private", "Public")  # ConnectionType
IDLE_MODES: tuple[str, ...] = ("None", "LowUsage", "UserAbsence")  # ShutdownOnIdleMode (see the docstring)
SWITCH: tuple[str, ...] = ("Disabled", "Enabled")  # EnableState


@functools.cache  # a handful of scales; a sweep asks for each on every plan it evaluates
def rank_of(scale: tuple[str, ...]) -> Mapping[str, int]:
    """Each value of a scale -> its rank (0 = lowest)."""
    return MappingProxyType({value: rank for rank, value in enumerate(scale)})


@dataclass(frozen=True)
class Profile:
    """A governed ARM profile of ``properties`` and the policy file section that bounds it."""

    arm_key: str  # key under the plan's properties
    lab_arm_key: str  # key under a lab's properties: the lab's own profile, which the plan's default seeds
    section: str  # key of the policy file (and of an override scope)
    rule: str  # prefix of the finding rule ids (``connection.clientRdpAccess``)
    model: str  # name of the section's model in the policy JSON Schema
    description: str  # what the section holds (JSON Schema)


CONNECTION = Profile(
    "defaultConnectionProfile",
    "connectionProfile",
    "connection",
    "connection",
    "ConnectionBounds",
    "The most exposure allowed per channel (None < Private < Public); omit a channel to leave it alone.",
)
AUTO_SHUTDOWN = Profile(
    "defaultAutoShutdownProfile",
    "autoShutdownProfile",
    "autoShutdown",
    "shutdown",
    "AutoShutdownBounds",
    "Shutdown flags that must be Enabled, the least aggressive idle mode allowed, the longest delays.",
)
PROFILES: tuple[Profile, ...] = (CONNECTION, AUTO_SHUTDOWN)


@dataclass(frozen=True)
class Setting:
    """One governed setting: where ARM keeps it, its policy key, its kind of bound and how reports name it."""

    profile: Profile
    arm_key: str  # the leaf in the ARM profile
    policy_key: str  # the key in the policy file's section
    kind: Kind
    scale: tuple[str, ...]  # enum values, lowest first (at-most, at-least, enabled); () for a delay
    spec_default: str | None  # what the service applies when the leaf is absent (LabServices.json, 2023-06-07)
    label: str  # how reports and notices name it
    description: str  # what the policy key means (JSON Schema)
    feature: str | None = None  # max-delay: the ARM key of the switch or mode its feature follows
    client_channel: bool = False  # a lab needs one client channel whose bound allows the top of its scale

    @property
    def rank(self) -> Mapping[str, int]:
        return rank_of(self.scale)

    @property
    def rule(self) -> str:
        """The rule id of a finding about this setting (``connection.clientRdpAccess``, ``shutdown.idleDelay``)."""
        return f"{self.profile.rule}.{self.arm_key}"

    @property
    def path(self) -> tuple[str, str, str]:
        """Where ARM keeps it in a plan body."""
        return ("properties", self.profile.arm_key, self.arm_key)

    @property
    def lab_path(self) -> tuple[str, str, str]:
        """Where ARM keeps it in a lab body."""
        return ("properties", self.profile.lab_arm_key, self.arm_key)

    def canonical(self, value: str) -> str | None:
        """``value`` as the scale spells it (ARM enums are case-insensitive), or None if it is not on the scale."""
        return _spellings(self.scale).get(value.lower())

    def bound_text(self, bound: str | None) -> str:
        """How ``check-policy`` shows a bound: ``at most PT15M``, ``at least LowUsage``, ``Enabled``."""
        if bound is None:
            return "not governed"
        if self.kind in ("at-most", "max-delay"):
            return f"at most {bound}"
        if self.kind == "at-least":
            return f"at least {bound}"
        return bound


_C, _S = CONNECTION, AUTO_SHUTDOWN
# fmt: off
#: The governed settings, in the order findings, patches, the schema and ``check-policy`` list them.
#: (profile, ARM key, policy key, kind, scale, spec default, label, what the policy key means)
GOVERNED: tuple[Setting, ...] = (
    Setting(_C, "webSshAccess", "webSshAccess", "at-most", EXPOSURE, "None", "Web SSH access",
            "Most exposure allowed for web access over SSH"),
    Setting(_C, "webRdpAccess", "webRdpAccess", "at-most", EXPOSURE, "None", "Web RDP access",
            "Most exposure allowed for web access over RDP"),
    Setting(_C, "clientSshAccess", "clientSshAccess", "at-most", EXPOSURE, "None", "Client SSH access",
            "Most exposure allowed for client SSH", client_channel=True),
    Setting(_C, "clientRdpAccess", "clientRdpAccess", "at-most", EXPOSURE, "None", "Client RDP access",
            "Most exposure allowed for client RDP", client_channel=True),
    Setting(_S, "shutdownOnDisconnect", "shutdownOnDisconnect", "enabled", SWITCH, "Disabled",
            "Shutdown on disconnect", "Enabled = must shut down on disconnect"),
    Setting(_S, "shutdownWhenNotConnected", "shutdownWhenNotConnected", "enabled", SWITCH, "Disabled",
            "Shutdown when not connected", "Enabled = must shut down when nobody connects"),
    Setting(_S, "shutdownOnIdle", "minShutdownOnIdle", "at-least", IDLE_MODES, "None", "Shutdown on idle",
            "Least aggressive idle shutdown allowed (None < LowUsage < UserAbsence)"),
    Setting(_S, "disconnectDelay", "maxDisconnectDelay", "max-delay", (), None, "Disconnect delay",
            "Longest disconnectDelay allowed while shutdownOnDisconnect is on or required",
            feature="shutdownOnDisconnect"),
    Setting(_S, "noConnectDelay", "maxNoConnectDelay", "max-delay", (), None, "No-connect delay",
            "Longest noConnectDelay allowed while shutdownWhenNotConnected is on or required",
            feature="shutdownWhenNotConnected"),
    Setting(_S, "idleDelay", "maxIdleDelay", "max-delay", (), None, "Idle delay",
            "Longest idleDelay allowed while shutdownOnIdle is not None or is required",
            feature="shutdownOnIdle"),
)
# fmt: on


@functools.cache
def _spellings(scale: tuple[str, ...]) -> Mapping[str, str]:
    """Lower-case value -> the value as the scale spells it."""
    return MappingProxyType({known.lower(): known for known in scale})


@functools.cache  # the table is fixed: one lookup per setting, not a scan per plan
def feature_of(setting: Setting) -> Setting | None:
    """The switch or mode whose feature a delay belongs to (same profile), or None."""
    return next(
        (s for s in GOVERNED if s.profile == setting.profile and s.arm_key == setting.feature),
        None,
    )


def _check_table() -> None:
    """Import-time guard on the table: unique keys, scales where a kind needs one, features that exist."""
    problems = []
    if len({(s.profile.section, s.policy_key) for s in GOVERNED}) != len(GOVERNED):
        problems.append("a policy key is listed twice")
    if len({s.path for s in GOVERNED}) != len(GOVERNED):
        problems.append("an ARM key is listed twice")
    for s in GOVERNED:
        if (s.kind == "max-delay") != (s.feature is not None) or (s.kind == "max-delay") == bool(s.scale):
            problems.append(f"{s.policy_key}: a delay, and only a delay, has a feature and no scale")
        feature = feature_of(s)
        if s.feature is not None and (feature is None or feature.kind == "max-delay"):
            problems.append(f"{s.policy_key}: its feature {s.feature} is not a switch or mode of its profile")
        if s.spec_default is not None and s.spec_default not in s.scale:
            problems.append(f"{s.policy_key}: its spec default is not on its scale")
    if problems:
        raise ValueError("GOVERNED: " + "; ".join(problems))


_check_table()
