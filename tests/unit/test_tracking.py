"""What an interrupted enforce says about each write in flight: "refused" only when the PATCH was
answered with an error, "applied" only when the proof read found the plan Succeeded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from labguard.tracking import TrackingArm
from shared.core.plans import LabPlan, PlanId
from shared.edge.arm import ArmError, WriteAccepted

PID = PlanId.parse(
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/p1"
)
PATCH = {"properties": {"defaultConnectionProfile": {"clientSshAccess": "None"}}}


def plan(state: str) -> LabPlan:
    return LabPlan.from_arm({"id": PID.path, "properties": {"provisioningState": state}})


class SlowArm:
    """The adapter: the PATCH and the proof read each take a moment, then answer as told."""

    def __init__(self, send: Any, proof: Any) -> None:
        self._send, self._proof = send, proof

    async def send_patch(self, plan_id: PlanId, patch: Any, slot: Any = None) -> Any:
        await asyncio.sleep(0.05)
        if isinstance(self._send, BaseException):
            raise self._send
        return self._send

    async def wait_for_write(
        self, plan_id: PlanId, accepted: Any, *, timeout_s: float | None = None, gate: Any = None
    ) -> Any:
        await asyncio.sleep(0.05)
        if isinstance(self._proof, BaseException):
            raise self._proof
        return self._proof


async def interrupted(arm: TrackingArm, *, during: str) -> tuple[str, str | None]:
    """Run one write, press Ctrl-C while it is in ``during`` ("send" or "wait"), settle, say what was said."""

    async def write() -> None:
        accepted = await arm.send_patch(PID, PATCH)
        await arm.wait_for_write(PID, accepted)

    sweep = asyncio.ensure_future(write())
    await asyncio.sleep(0.02 if during == "send" else 0.07)
    sweep.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sweep
    report = await arm.settle(set(), asyncio.Event(), grace_s=5)
    (write_report,) = report.in_flight
    return write_report.result, write_report.detail


@pytest.mark.parametrize(
    ("send", "proof", "during", "said"),
    [
        (ArmError("PATCH: HTTP 400", status=400, transient=False), None, "send", "refused"),
        (WriteAccepted(202), plan("Succeeded"), "wait", "applied"),
        (WriteAccepted(202), ArmError("GET: HTTP 503", status=503, transient=True), "wait", "unproven"),
        (WriteAccepted(202), None, "wait", "unproven"),
        (WriteAccepted(202), plan("Failed"), "wait", "failed"),
    ],
)
async def test_each_write_in_flight_is_said_as_it_ended(send: Any, proof: Any, during: str, said: str) -> None:
    result, detail = await interrupted(TrackingArm(SlowArm(send, proof)), during=during)
    assert result == said
    if said == "unproven":
        assert detail is not None and detail.startswith("sent; not proven")


@pytest.mark.parametrize(("proof", "said"), [(plan("Succeeded"), "applied"), (None, "unproven")])
async def test_a_write_accepted_but_interrupted_before_its_proof_is_proved_while_settling(
    proof: Any, said: str
) -> None:
    arm = TrackingArm(SlowArm(WriteAccepted(202), proof))
    accepted = await arm.send_patch(PID, PATCH)  # the 202 came back; Ctrl-C before the wait started
    assert accepted.status == 202
    arm.stopping = True
    report = await arm.settle(set(), asyncio.Event(), grace_s=5)
    assert [w.result for w in report.in_flight] == [said]


async def test_a_second_ctrl_c_leaves_an_accepted_write_unproven() -> None:
    arm = TrackingArm(SlowArm(WriteAccepted(202), plan("Succeeded")))
    await arm.send_patch(PID, PATCH)
    abandon = asyncio.Event()
    abandon.set()
    report = await arm.settle(set(), abandon, grace_s=5)
    assert [(w.result, w.detail) for w in report.in_flight] == [("unproven", "sent; not proven")]
