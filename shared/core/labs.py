"""Labs (``Microsoft.LabServices/labs``) as plain, frozen data, mapped from ARM JSON here and nowhere else.

A plan's defaults reach only labs created after a change; existing labs keep their own
``autoShutdownProfile`` and ``connectionProfile``, so labguard holds labs to the same policy. Like
:mod:`shared.core.plans`, mapping is total (missing profiles become ``None``, unknown fields are ignored)
and the governed profiles are kept whole as read, because a patch sends each drifted profile back whole.

The governed profiles (:mod:`shared.core.governed`: connection, auto-shutdown and the lab-only
``virtualMachineProfile``) are kept whole as read; :meth:`Lab.observed` reads a governed setting from them.
Of ``adminUser`` only the username is kept apart; no password is ever read out of a profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.core.governed import GOVERNED, PROFILES, VIRTUAL_MACHINE, Setting
from shared.core.plans import (
    PROVIDER,
    TERMINAL_STATES,
    OperationError,
    PlanId,
    ResourceId,
    arm_object,
    arm_object_or_none,
    arm_tags,
    arm_text,
    profiles_content,
    resource_id_grammar,
)

LAB_VM_PROFILE = VIRTUAL_MACHINE.lab_arm_key  # "virtualMachineProfile"
LAB_RESOURCE_TYPE = "Microsoft.LabServices/labs"

# ARM's grammar for a lab id, as for plans (shared.core.plans): ASCII, resource group 1-90 of ``-_.()``
# letters and digits not ending in a period; lab name 1-100 of letters, digits, ``-_.``, starting with a
# letter or digit and ending with a letter or digit (so ``.`` and ``..`` never pass).
_LAB_ID = resource_id_grammar("labs", "[A-Z0-9]")


def is_lab_outcome(outcome: object) -> bool:
    """Whether a run's outcome (``shared.reconcile.PlanOutcome``) is a lab's: it carries a lab evaluation, or
    its id is a lab's (an unreadable, deleted or failed lab has no evaluation)."""
    if getattr(outcome, "lab", None) is not None:
        return True
    return f"/providers/{PROVIDER}/labs/".lower() in str(getattr(outcome, "plan_id", "")).lower()


class LabId(ResourceId):
    """A lab's ARM id."""

    collection = "labs"
    what = "lab"
    grammar = _LAB_ID

    @property
    def scope(self) -> PlanId:
        """The lab's subscription and resource group as the policy looks them up (``Policy.rules_for``)."""
        return PlanId(self.subscription_id, self.resource_group, self.name)


@dataclass(frozen=True)
class Lab:
    """What labguard observed of one lab."""

    id: LabId
    location: str | None = None
    provisioning_state: str | None = None
    state: str | None = None  # Draft / Publishing / Scaling / Syncing / Published (read-only)
    tags: Mapping[str, str] = field(default_factory=dict)
    os_type: str | None = None  # virtualMachineProfile.osType: Windows / Linux (read-only, from the image)
    admin_username: str | None = None
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

    @property
    def is_terminal(self) -> bool:
        """Only a lab in a terminal state may be patched (and proves a write it was waited for)."""
        return self.provisioning_state in TERMINAL_STATES

    def observed(self, setting: Setting) -> str | None:
        """A governed setting as ARM wrote it in the lab's own profile, or None if it is absent."""
        return setting.read(self.profiles_as_read.get(setting.profile.lab_arm_key))

    def content_key(self) -> tuple[Any, ...]:
        """What :meth:`observed` depends on, as a key (see :func:`shared.core.plans.profiles_content`)."""
        return profiles_content(self.profiles_as_read)

    @staticmethod
    def settings() -> tuple[Setting, ...]:
        """The governed settings a lab has: every row (its own profiles and the lab-only rules)."""
        return GOVERNED

    @staticmethod
    def path_of(setting: Setting) -> tuple[str, ...]:
        """Where ARM keeps a governed setting in a lab body."""
        return setting.lab_path

    @classmethod
    def from_arm(cls, body: Mapping[str, Any]) -> Lab:
        """Map one lab's ARM JSON. Raises ValueError only when ``id`` is missing or not a lab id."""
        lab_id = LabId.parse(str(body.get("id", "")))
        props = _obj(body.get("properties"))
        vm_props = _obj(props.get(LAB_VM_PROFILE))
        system = _obj(body.get("systemData"))
        raw_plan = _str(props.get("labPlanId"))
        try:
            plan_id: PlanId | None = PlanId.parse(raw_plan) if raw_plan else None
        except ValueError:
            plan_id = None
        return cls(
            id=lab_id,
            location=_str(body.get("location")),
            provisioning_state=_str(props.get("provisioningState")),
            state=_str(props.get("state")),
            tags=arm_tags(body),
            os_type=_str(vm_props.get("osType")),
            admin_username=_str(_obj(vm_props.get("adminUser")).get("username")),
            lab_plan_id=plan_id,
            lab_plan_id_raw=raw_plan,
            error=OperationError.from_arm(props.get("resourceOperationError")),
            last_modified_by=_str(system.get("lastModifiedBy")),
            last_modified_by_type=_str(system.get("lastModifiedByType")),
            last_modified_at=_str(system.get("lastModifiedAt")),
            profiles_as_read={
                profile.lab_arm_key: MappingProxyType({str(k): v for k, v in read.items()})
                for profile in PROFILES
                if (read := _obj_or_none(props.get(profile.lab_arm_key))) is not None
            },
        )


_obj, _obj_or_none, _str = arm_object, arm_object_or_none, arm_text
