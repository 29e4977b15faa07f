"""Labs (``Microsoft.LabServices/labs``) as plain, frozen data, mapped from ARM JSON here and nowhere else.

A plan's defaults reach only labs created after a change; existing labs keep their own
``autoShutdownProfile`` and ``connectionProfile``, so labguard holds labs to the same policy. Like
:mod:`shared.core.plans`, mapping is total (missing profiles become ``None``, unknown fields are ignored)
and the governed profiles are kept whole as read, because a patch sends each drifted profile back whole.

Credentials are never kept: of ``adminUser`` / ``nonAdminUser`` only whether a user is there and its
username (never a password) reach the core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.core.governed import AUTO_SHUTDOWN, CONNECTION, Setting
from shared.core.plans import (
    PROVIDER,
    OperationError,
    PlanId,
    match_resource_id,
    resource_id_grammar,
)

LAB_CONNECTION_PROFILE = CONNECTION.lab_arm_key  # "connectionProfile"
LAB_SHUTDOWN_PROFILE = AUTO_SHUTDOWN.lab_arm_key  # "autoShutdownProfile"
LAB_VM_PROFILE = "virtualMachineProfile"
LAB_RESOURCE_TYPE = "Microsoft.LabServices/labs"

# ARM's grammar for a lab id, as for plans (shared.core.plans): ASCII, resource group 1-90 of ``-_.()``
# letters and digits not ending in a period; lab name 1-100 of letters, digits, ``-_.``, starting with a
# letter or digit and ending with a letter or digit (so ``.`` and ``..`` never pass).
_LAB_ID = resource_id_grammar("labs", "[A-Z0-9]")


@dataclass(frozen=True)
class LabId:
    """A lab's ARM id. ARM ids are case-insensitive, so equality and hashing use ``key``."""

    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, text: str) -> LabId:
        """Parse a lab id strictly (no child resources, no trailing parts); ValueError otherwise."""
        match = match_resource_id(_LAB_ID, text, "lab", "labs")
        return cls(match["sub"].lower(), match["rg"], match["name"])

    @property
    def key(self) -> str:
        return self.path.lower()

    @property
    def path(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/labs/{self.name}"
        )

    @property
    def scope(self) -> PlanId:
        """The lab's subscription and resource group as the policy looks them up (``Policy.rules_for``)."""
        return PlanId(self.subscription_id, self.resource_group, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabId) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class Lab:
    """What labguard observed of one lab."""

    id: LabId
    location: str | None = None
    provisioning_state: str | None = None
    state: str | None = None  # Draft / Publishing / Scaling / Syncing / Published (read-only)
    tags: Mapping[str, str] = field(default_factory=dict)
    os_type: str | None = None  # virtualMachineProfile.osType: Windows / Linux (read-only, from the image)
    sku_name: str | None = None  # virtualMachineProfile.sku.name
    create_option: str | None = None  # virtualMachineProfile.createOption: Image / TemplateVM
    admin_username: str | None = None
    has_non_admin_user: bool = False
    usage_quota: str | None = None  # raw, as ARM wrote it (``PT10H`` or ``10:00``)
    lab_plan_id: PlanId | None = None  # None when absent or not a plan id (raw text in lab_plan_id_raw)
    lab_plan_id_raw: str | None = None
    error: OperationError | None = None
    last_modified_by: str | None = None  # systemData, untrusted
    last_modified_by_type: str | None = None
    last_modified_at: str | None = None  # systemData.lastModifiedAt, as ARM wrote it (untrusted)
    # ARM profile key -> that profile as read (read-only shallow copy; values shared with the body read).
    profiles_as_read: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.id.name

    def observed(self, setting: Setting) -> str | None:
        """A governed setting as ARM wrote it in the lab's own profile, or None if it is absent."""
        profile = self.profiles_as_read.get(setting.profile.lab_arm_key)
        return None if profile is None else _str(profile.get(setting.arm_key))

    @classmethod
    def from_arm(cls, body: Mapping[str, Any]) -> Lab:
        """Map one lab's ARM JSON. Raises ValueError only when ``id`` is missing or not a lab id."""
        lab_id = LabId.parse(str(body.get("id", "")))
        props = _obj(body.get("properties"))
        raw_tags = _obj(body.get("tags"))
        tags = {str(k): str(v) for k, v in raw_tags.items() if isinstance(v, (str, int, float, bool))}
        conn = _obj_or_none(props.get(LAB_CONNECTION_PROFILE))
        shut = _obj_or_none(props.get(LAB_SHUTDOWN_PROFILE))
        vm = _obj_or_none(props.get(LAB_VM_PROFILE))
        vm_props = vm or {}
        error = _obj_or_none(props.get("resourceOperationError"))
        system = _obj(body.get("systemData"))
        raw_plan = _str(props.get("labPlanId"))
        try:
            plan_id: PlanId | None = PlanId.parse(raw_plan) if raw_plan else None
        except ValueError:
            plan_id = None
        non_admin = _obj_or_none(vm_props.get("nonAdminUser"))
        return cls(
            id=lab_id,
            location=_str(body.get("location")),
            provisioning_state=_str(props.get("provisioningState")),
            state=_str(props.get("state")),
            tags=tags,
            os_type=_str(vm_props.get("osType")),
            sku_name=_str(_obj(vm_props.get("sku")).get("name")),
            create_option=_str(vm_props.get("createOption")),
            admin_username=_str(_obj(vm_props.get("adminUser")).get("username")),
            has_non_admin_user=non_admin is not None and bool(non_admin.get("username")),
            usage_quota=_str(vm_props.get("usageQuota")),
            lab_plan_id=plan_id,
            lab_plan_id_raw=raw_plan,
            error=None
            if error is None
            else OperationError(
                action=_str(error.get("action")),
                code=_str(error.get("code")),
                message=_str(error.get("message")),
                timestamp=_str(error.get("timestamp")),
            ),
            last_modified_by=_str(system.get("lastModifiedBy")),
            last_modified_by_type=_str(system.get("lastModifiedByType")),
            last_modified_at=_str(system.get("lastModifiedAt")),
            profiles_as_read={
                key: MappingProxyType({str(k): v for k, v in profile.items()})
                for key, profile in ((LAB_CONNECTION_PROFILE, conn), (LAB_SHUTDOWN_PROFILE, shut), (LAB_VM_PROFILE, vm))
                if profile is not None
            },
        )


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _obj_or_none(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _str(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
