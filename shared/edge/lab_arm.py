"""Reading, listing and patching labs through the plan adapter (:mod:`shared.edge.arm`).

Only what is lab-specific lives here (the lab URL, mapping to :class:`shared.core.labs.Lab`, the RBAC
actions): requests, the one PATCH, the pager and the wait for a write are the plan adapter's own code, so
labs get the same api-version (2023-06-07), SDK client, call counter, pacer (lab requests spend the same
per-subscription ARM budget), retries, host check on ``nextLink``, busy-409 handling and 202 proof rules.
Everything SDK-shaped stops here: callers get :class:`shared.core.labs.Lab`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.core.labs import Lab, LabId
from shared.core.text import shown
from shared.edge.arm import LabPlansArm, WriteAccepted, capped_id, resource_url
from shared.errors import ArmError, LabGone

__all__ = ["LAB_ARM_ACTIONS", "BadLab", "LabGone", "LabsArm", "lab_url"]

# The RBAC actions labguard needs for labs: read (get, list) and write (PATCH). A lab write is waited
# for by reading the lab, as for plans. The infra tests check the role grants exactly these beside
# shared.edge.arm.ARM_ACTIONS.
LAB_ARM_ACTIONS = frozenset({"Microsoft.LabServices/labs/read", "Microsoft.LabServices/labs/write"})


@dataclass(frozen=True)
class BadLab:
    """A lab in a list whose JSON could not be mapped (reported by the sweep, never a crash)."""

    id: str
    reason: str


def lab_url(lab_id: LabId) -> str:
    return resource_url("labs", lab_id.subscription_id, lab_id.resource_group, lab_id.name)


class LabsArm:
    """Labs over the plan adapter's client; one per run, beside it."""

    def __init__(self, plans: LabPlansArm) -> None:
        self.plans = plans

    @property
    def counter(self) -> Any:
        return self.plans.counter

    async def get_lab(self, lab_id: LabId) -> Lab:
        """Fresh read of one lab. Raises LabGone on 404, ArmError otherwise."""
        body = await self.plans._json("GET", lab_url(lab_id), gone=lambda: LabGone(lab_id))
        try:
            return Lab.from_arm(body)
        except ValueError as exc:
            raise ArmError(f"GET {lab_id}: ARM answered with an unreadable lab ({exc})", transient=False) from exc

    async def list_labs(self, subscription_id: str, resource_group: str | None = None) -> AsyncIterator[Lab | BadLab]:
        """Every lab in a subscription (or one resource group), through the plans' pager."""
        async for item in self.plans.list_items(subscription_id, resource_group, "labs"):
            if not isinstance(item, Mapping):
                yield BadLab(id="?", reason="list item is not an object")
                continue
            try:
                yield Lab.from_arm(item)
            except ValueError as exc:
                yield BadLab(id=capped_id(item), reason=shown(str(exc), quote=False))

    async def write_slot(self, lab_id: LabId, *, max_wait_s: float | None = None) -> Any:
        """The subscription's write budget, waited for before the read that precedes a write (as for plans)."""
        return await self.plans.write_slot(lab_id, max_wait_s=max_wait_s)

    async def send_patch(self, lab_id: LabId, patch: Mapping[str, Any], slot: Any = None) -> WriteAccepted:
        """One PATCH of the lab, exactly once (no SDK retry): the caller reads again before any retry."""
        accepted = await self.plans.patch_resource(lab_url(lab_id), lab_id, lambda: LabGone(lab_id), patch, slot)
        return replace(accepted, operation_url=None)  # waited for by reading the lab (labs/read) only

    async def wait_for_write(
        self,
        lab_id: LabId,
        accepted: WriteAccepted,
        *,
        timeout_s: float | None = None,
        gate: asyncio.Semaphore | None = None,
    ) -> Lab | None:
        """Read the lab until its provisioningState is terminal; that read, or None at the deadline."""
        return await self.plans.wait_for_resource(
            lab_id.key, lambda: self.get_lab(lab_id), accepted, timeout_s=timeout_s, gate=gate
        )
