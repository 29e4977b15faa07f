"""The governed settings: one row per setting labguard keeps inside the policy's bounds, on plans and labs.

This table is the only place a governed setting is spelled. It drives the policy file's model and JSON
Schema and the effective rules (:mod:`shared.core.policy`), what is read from a plan or a lab
(:mod:`shared.core.plans`, :mod:`shared.core.labs`), evaluation and the patch (:mod:`shared.core.drift`,
:mod:`shared.core.lab_drift`), the proof after a write (:mod:`shared.core.proof`) and how reports name a
setting and its bound. Adding a setting of a kind below is one row in :data:`GOVERNED`; a new kind of bound
also needs its check in :mod:`shared.core.drift`.

A plan's two default profiles seed a lab's own profiles, so their rows hold labs too (``Profile.lab_arm_key``);
the lab-only rules (a lab's ``virtualMachineProfile``, as admins know them from Azure Policy's built-ins) are
rows of a profile that plans do not have (``Profile.arm_key`` is None). Whether the service can change a
setting on an existing lab is a column: ``reported_only`` holds why labguard reports it and never writes it.

Kinds of bound, and what "tighter" means for each:

* ``at-most``: an exposure (``None < Private < Public``); the bound is the most allowed, a lower value is
  tighter, and a value at the top of the scale is a high-severity finding;
* ``at-least``: an ordered mode; the bound is the least allowed, a higher value is tighter;
* ``enabled``: a switch the policy may require ``Enabled``;
* ``max-delay``: a duration; the bound is the longest allowed, and it applies only while the feature it
  belongs to (``feature``, a switch or mode in the same profile) is on or required;
* ``max-duration``: a duration with no feature (a lab's usage quota); absent is nothing to judge;
* ``one-of``: the value must be one of a list the policy gives (each like ``pattern``);
* ``forbidden``: the policy may forbid one value (``forbidden``): ``Forbidden`` or ``Allowed``;
* ``required``: the policy may require the value be there (``true``).

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
from typing import Any, Literal

__all__ = [
    "AUTO_SHUTDOWN",
    "CONNECTION",
    "EXPOSURE",
    "GOVERNED",
    "IDLE_MODES",
    "PLAN_PROFILES",
    "PROFILES",
    "SWITCH",
    "VIRTUAL_MACHINE",
    "Bound",
    "Kind",
    "Profile",
    "Setting",
    "feature_of",
    "lab_only_settings",
    "plan_settings",
    "rank_of",
]

Kind = Literal["at-most", "at-least", "enabled", "max-delay", "max-duration", "one-of", "forbidden", "required"]
#: A bound as the policy sets it: an enum value, the longest delay allowed, the values allowed (one-of),
#: ``Forbidden``/``Allowed`` (forbidden), or whether the value is required.
Bound = str | timedelta | tuple[str, ...] | bool
#: What a kind's check needs from its row (see :func:`_check_table`).
_ENUM_KINDS = frozenset({"at-most", "at-least", "enabled"})
_REPORTED_KINDS = frozenset({"one-of", "forbidden", "required"})  # no single value to write: reported only

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

    arm_key: str | None  # key under the plan's properties; None: a lab-only profile (plans have none)
    lab_arm_key: str  # key under a lab's properties: the lab's own profile (a plan's default seeds it)
    section: str  # key of the policy file (and of an override scope)
    rule: str  # prefix of the finding rule ids (``connection.clientRdpAccess``)
    model: str  # name of the section's model in the policy JSON Schema
    description: str  # what the section holds (JSON Schema)
    read_only: tuple[str, ...] = ()  # keys the spec marks read-only: the service's, a patch leaves them out

    @property
    def on_plans(self) -> bool:
        return self.arm_key is not None


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
VIRTUAL_MACHINE = Profile(
    None,
    "virtualMachineProfile",
    "labs",
    "lab",
    "LabBounds",
    "Rules for labs (Microsoft.LabServices/labs) only, as admins know them from Azure Policy's built-ins.\n\n"
    "What the service cannot change on an existing lab (its VM size, create option, users) is reported,\n"
    "never patched; the usage quota is lowered to the bound in enforce mode.",
    read_only=("osType",),  # LabServices.json, VirtualMachineProfile.osType: readOnly (from the image)
)
PROFILES: tuple[Profile, ...] = (CONNECTION, AUTO_SHUTDOWN, VIRTUAL_MACHINE)
#: The profiles a plan has (its defaults for new labs).
PLAN_PROFILES: tuple[Profile, ...] = tuple(p for p in PROFILES if p.on_plans)


@dataclass(frozen=True, eq=False)  # a row is itself: compared and hashed by identity, cheap in the hot path
class Setting:
    """One governed setting: where ARM keeps it, its policy key, its kind of bound and how reports name it."""

    profile: Profile
    arm_key: str  # the leaf in the ARM profile (``sku.name``: a leaf inside a nested object)
    policy_key: str  # the key in the policy file's section
    kind: Kind
    scale: tuple[str, ...]  # enum values, lowest first (at-most, at-least, enabled); () otherwise
    spec_default: str | None  # what the service applies when the leaf is absent (LabServices.json, 2023-06-07)
    label: str  # how reports and notices name it
    description: str  # what the policy key means (JSON Schema)
    feature: str | None = None  # max-delay: the ARM key of the switch or mode its feature follows
    client_os: str | None = None  # a client channel: the OS (osType) whose students connect over it
    image_dependent: str | None = None  # a value the service accepts only on images that support it
    rule_key: str | None = None  # the rule id's last part, where it is not the ARM key (``lab.vmSize``)
    reported_only: str | None = None  # why labguard reports it and never writes it (create-only on a lab)
    pattern: str | None = None  # one-of: what each allowed value looks like (JSON Schema pattern)
    forbidden: str | None = None  # forbidden: the ARM value the policy may forbid

    @property
    def rank(self) -> Mapping[str, int]:
        return rank_of(self.scale)

    @property
    def client_channel(self) -> bool:
        """A lab needs one client channel whose bound allows the top of its scale."""
        return self.client_os is not None

    @property
    def rule(self) -> str:
        """The rule id of a finding about this setting (``connection.clientRdpAccess``, ``lab.vmSize``)."""
        return f"{self.profile.rule}.{self.rule_key or self.arm_key}"

    @functools.cached_property
    def leaf_path(self) -> tuple[str, ...]:
        """The keys from the profile down to the leaf (worked out once: evaluation reads it for every plan)."""
        return tuple(self.arm_key.split("."))

    @property
    def path(self) -> tuple[str, ...]:
        """Where ARM keeps it in a plan body (in a lab body, for a lab-only setting)."""
        if self.profile.arm_key is None:
            return self.lab_path
        return ("properties", self.profile.arm_key, *self.leaf_path)

    @property
    def lab_path(self) -> tuple[str, ...]:
        """Where ARM keeps it in a lab body."""
        return ("properties", self.profile.lab_arm_key, *self.leaf_path)

    def read(self, profile: Mapping[str, Any] | None) -> str | None:
        """This setting's leaf in a profile as read (text as ARM wrote it), or None if it is absent."""
        value: Any = profile
        for key in self.leaf_path:
            kind = type(value)
            if kind is MappingProxyType or kind is dict or isinstance(value, Mapping):  # the ABC check last: slow
                value = value.get(key)
            else:
                return None
        if value is None:
            return None
        return value if type(value) is str or isinstance(value, str) else str(value)

    def canonical(self, value: str) -> str | None:
        """``value`` as the scale spells it (ARM enums are case-insensitive), or None if it is not on the scale."""
        return self._spellings.get(value.lower())

    @functools.cached_property
    def _spellings(self) -> Mapping[str, str]:
        """Lower-case value -> the value as the scale spells it."""
        return _spellings(self.scale)

    def bound_text(self, bound: str | bool | list[str] | None) -> str:
        """How ``check-policy`` shows a bound: ``at most PT15M``, ``at least LowUsage``, ``Enabled``."""
        if bound is None:
            return "not governed"
        if self.kind in ("at-most", "max-delay", "max-duration"):
            return f"at most {bound}"
        if self.kind == "at-least":
            return f"at least {bound}"
        if isinstance(bound, list):
            return f"one of {', '.join(bound)}"
        if isinstance(bound, bool):
            return "required" if bound else "not required"
        return bound


_C, _S, _V = CONNECTION, AUTO_SHUTDOWN, VIRTUAL_MACHINE
_CREATE_ONLY = "the service cannot change it on an existing lab (create-only), so labguard reports it, never patches it"
# fmt: off
#: The governed settings, in the order findings, patches, the schema and ``check-policy`` list them.
#: (profile, ARM key, policy key, kind, scale, spec default, label, what the policy key means, ...)
GOVERNED: tuple[Setting, ...] = (
    Setting(_C, "webSshAccess", "webSshAccess", "at-most", EXPOSURE, "None", "Web SSH access",
            "Most exposure allowed for web access over SSH"),
    Setting(_C, "webRdpAccess", "webRdpAccess", "at-most", EXPOSURE, "None", "Web RDP access",
            "Most exposure allowed for web access over RDP"),
    Setting(_C, "clientSshAccess", "clientSshAccess", "at-most", EXPOSURE, "None", "Client SSH access",
            "Most exposure allowed for client SSH", client_os="Linux"),
    Setting(_C, "clientRdpAccess", "clientRdpAccess", "at-most", EXPOSURE, "None", "Client RDP access",
            "Most exposure allowed for client RDP", client_os="Windows"),
    Setting(_S, "shutdownOnDisconnect", "shutdownOnDisconnect", "enabled", SWITCH, "Disabled",
            "Shutdown on disconnect", "Enabled = must shut down on disconnect"),
    Setting(_S, "shutdownWhenNotConnected", "shutdownWhenNotConnected", "enabled", SWITCH, "Disabled",
            "Shutdown when not connected", "Enabled = must shut down when nobody connects"),
    Setting(_S, "shutdownOnIdle", "minShutdownOnIdle", "at-least", IDLE_MODES, "None", "Shutdown on idle",
            "Least aggressive idle shutdown allowed (None < LowUsage < UserAbsence)", image_dependent="LowUsage"),
    Setting(_S, "disconnectDelay", "maxDisconnectDelay", "max-delay", (), None, "Disconnect delay",
            "Longest disconnectDelay allowed while shutdownOnDisconnect is on or required",
            feature="shutdownOnDisconnect"),
    Setting(_S, "noConnectDelay", "maxNoConnectDelay", "max-delay", (), None, "No-connect delay",
            "Longest noConnectDelay allowed while shutdownWhenNotConnected is on or required",
            feature="shutdownWhenNotConnected"),
    Setting(_S, "idleDelay", "maxIdleDelay", "max-delay", (), None, "Idle delay",
            "Longest idleDelay allowed while shutdownOnIdle is not None or is required",
            feature="shutdownOnIdle"),
    Setting(_V, "sku.name", "allowedVmSizes", "one-of", (), None, "VM size",
            "virtualMachineProfile.sku.name values a lab may use; reported, never patched",
            rule_key="vmSize", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
            reported_only=f"{_CREATE_ONLY}: recreate the lab with an allowed size"),
    Setting(_V, "createOption", "templateVm", "forbidden", (), None, "Create option",
            "Forbidden = a lab may not use createOption TemplateVM; reported, never patched",
            rule_key="templateVm", forbidden="TemplateVM",
            reported_only=f"{_CREATE_ONLY}: recreate it from an image"),
    Setting(_V, "nonAdminUser.username", "requireNonAdminUser", "required", (), None, "Non-admin user",
            "true = a lab must have a non-admin user (virtualMachineProfile.nonAdminUser); reported",
            rule_key="nonAdminUser", reported_only=f"{_CREATE_ONLY}: recreate it with one"),
    Setting(_V, "usageQuota", "maxUsageQuota", "max-duration", (), None, "Usage quota per student",
            "Longest usageQuota (hours per student) a lab may grant, e.g. PT20H; lowered in enforce"),
)
# fmt: on


@functools.cache  # the table is fixed
def plan_settings() -> tuple[Setting, ...]:
    """The rows a plan has (its default profiles), in table order; a lab has every row."""
    return tuple(s for s in GOVERNED if s.profile.on_plans)


@functools.cache
def lab_only_settings() -> tuple[Setting, ...]:
    """The rows only labs have (their ``virtualMachineProfile``), in table order."""
    return tuple(s for s in GOVERNED if not s.profile.on_plans)


@functools.cache
def _spellings(scale: tuple[str, ...]) -> Mapping[str, str]:
    """Lower-case value -> the value as the scale spells it."""
    return MappingProxyType({known.lower(): known for known in scale})


@functools.cache  # the table is fixed: one lookup per setting, not a scan per plan
@functools.cache
def feature_of(setting: Setting) -> Setting | None:
    """The switch or mode whose feature a delay belongs to (same profile), or None (worked out once per row)."""
    return next(
        (s for s in GOVERNED if s.profile == setting.profile and s.arm_key == setting.feature),
        None,
    )


def _check_table() -> None:
    """Import-time guard on the table: unique keys, scales where a kind needs one, features that exist."""
    problems = []
    if len({s.policy_key for s in GOVERNED}) != len(GOVERNED):
        problems.append("a policy key is listed twice")
    if len({s.lab_path for s in GOVERNED}) != len(GOVERNED) or len({s.rule for s in GOVERNED}) != len(GOVERNED):
        problems.append("an ARM key or rule is listed twice")
    for s in GOVERNED:
        if (s.kind == "max-delay") != (s.feature is not None) or (s.kind in _ENUM_KINDS) != bool(s.scale):
            problems.append(f"{s.policy_key}: a delay, and only a delay, has a feature; an enum, and only it, a scale")
        if (s.kind in _REPORTED_KINDS and s.reported_only is None) or (s.kind == "one-of") != (s.pattern is not None):
            problems.append(f"{s.policy_key}: one-of, forbidden and required are reported only; one-of has a pattern")
        if (s.kind == "forbidden") != (s.forbidden is not None):
            problems.append(f"{s.policy_key}: a forbidden rule, and only it, names the forbidden value")
        if s.image_dependent is not None and s.image_dependent not in s.scale:
            problems.append(f"{s.policy_key}: its image-dependent value is not on its scale")
        feature = feature_of(s)
        if s.feature is not None and (feature is None or feature.kind == "max-delay"):
            problems.append(f"{s.policy_key}: its feature {s.feature} is not a switch or mode of its profile")
        if s.spec_default is not None and s.spec_default not in s.scale:
            problems.append(f"{s.policy_key}: its spec default is not on its scale")
    if problems:
        raise ValueError("GOVERNED: " + "; ".join(problems))


_check_table()
