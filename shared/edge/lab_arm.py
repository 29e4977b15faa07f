"""Reading, listing and patching labs through the plan adapter's own pipeline (:mod:`shared.edge.arm`).

Same raw-JSON route and api-version (2023-06-07) as plans, the same SDK client, call counter, pacer
(so lab requests spend the same per-subscription ARM budget), retries, and host check on ``nextLink``.
Everything SDK-shaped stops here: callers get :class:`shared.core.labs.Lab`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.core.labs import Lab, LabId
from shared.core.plans import PROVIDER
from shared.core.text import shown
from shared.edge.arm import (
    _PREPAID_SLOT,
    API_VERSION,
    LabPlansArm,
    WriteAccepted,
    _error_from,
    _retry_after,
    capped_id,
)
from shared.errors import ArmError, Throttled

# The RBAC actions labguard needs for labs: read (get, list) and write (PATCH). A lab write is waited
# for by reading the lab, as for plans. The infra tests check the role grants exactly these beside
# shared.edge.arm.ARM_ACTIONS.
LAB_ARM_ACTIONS = frozenset({"Microsoft.LabServices/labs/read", "Microsoft.LabServices/labs/write"})


class LabGone(ArmError):
    """The lab no longer exists (404)."""

    def __init__(self, lab_id: LabId) -> None:
        super().__init__(f"lab {lab_id} not found", status=404, code="ResourceNotFound", transient=False)


@dataclass(frozen=True)
class BadLab:
    """A lab in a list whose JSON could not be mapped (reported by the sweep, never a crash)."""

    id: str
    reason: str


def lab_url(lab_id: LabId) -> str:
    return (
        f"/subscriptions/{quote(lab_id.subscription_id)}/resourceGroups/{quote(lab_id.resource_group)}"
        f"/providers/{PROVIDER}/labs/{quote(lab_id.name)}?api-version={API_VERSION}"
    )


class LabsArm:
    """Labs over the plan adapter's client; one per run, beside it."""

    def __init__(self, plans: LabPlansArm) -> None:
        self.plans = plans

    @property
    def counter(self) -> Any:
        return self.plans.counter

    async def get_lab(self, lab_id: LabId) -> Lab:
        """Fresh read of one lab. Raises LabGone on 404, ArmError otherwise."""
        from azure.core.rest import HttpRequest

        response = await self.plans._send(HttpRequest("GET", lab_url(lab_id)))
        if response.status_code == 404:
            raise LabGone(lab_id)
        if response.status_code != 200:
            raise _error_from(response, f"GET {lab_id}")
        try:
            return Lab.from_arm(_body(response))
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

    async def send_patch(self, lab_id: LabId, patch: Mapping[str, Any], slot: Any = None) -> WriteAccepted:
        """One PATCH of the lab, exactly once (no SDK retry): the caller reads again before any retry."""
        from azure.core.rest import HttpRequest

        token = _PREPAID_SLOT.set(slot)
        try:
            response = await self.plans._send(HttpRequest("PATCH", lab_url(lab_id), json=dict(patch)), retry_total=0)
        finally:
            _PREPAID_SLOT.reset(token)
        status = response.status_code
        if status == 404:
            raise LabGone(lab_id)
        if status == 429:
            raise Throttled(
                str(_error_from(response, f"PATCH {lab_id}")), retry_after_s=_retry_after(response.headers, 1.0)
            )
        if status not in (200, 201, 202):
            raise _error_from(response, f"PATCH {lab_id}")
        retry_after = response.headers.get("Retry-After")
        return WriteAccepted(
            status=status,
            operation_url=None,  # waited for by reading the lab (labs/read), never the operation URL
            retry_after_s=_retry_after(response.headers, 0.0) if retry_after is not None else None,
        )

    async def write_slot(self, lab_id: LabId) -> Any:
        pacer = self.plans._pacer
        return None if pacer is None else await pacer.acquire(lab_id.subscription_id, "writes")

    async def wait_for_write(
        self, lab_id: LabId, accepted: WriteAccepted, *, timeout_s: float | None = None
    ) -> Lab | None:
        """Read the lab until its provisioningState is terminal; that read, or None at the deadline."""
        plans = self.plans
        timeout = plans._operation_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if accepted.status == 200:
            delay = 0.0
        elif accepted.retry_after_s is not None:
            delay = min(accepted.retry_after_s, plans._poll_interval_s)
        else:
            delay = plans._first_poll_s
        step = max(plans._first_poll_s, 0.05)
        while True:
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = step = min(step * 2, plans._poll_interval_s)
            lab = await self.get_lab(lab_id)
            if lab.provisioning_state in ("Succeeded", "Failed"):
                return lab


def _body(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
