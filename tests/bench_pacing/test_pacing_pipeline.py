"""The pacer in labguard's ARM pipeline (shared.edge.arm.open_arm) against the local endpoint with ARM's buckets on.

Counts and header values only: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emulator.testing import start_emulator
from shared.core.plans import PlanId
from shared.edge.arm import open_arm
from shared.edge.pacing import Pacer
from shared.runtime.settings import Settings

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
PLAN = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/paced"

pytestmark = pytest.mark.integration


@pytest.fixture
def emu() -> Iterator[Any]:
    with start_emulator(lro_delay_s=0.0, throttle=True) as emulator:
        emulator.put_plan(
            {
                "id": PLAN,
                "location": "westus",
                "properties": {"defaultAutoShutdownProfile": {"idleDelay": "PT1H"}},
            }
        )
        yield emulator


def settings(emu: Any) -> Settings:
    return Settings.from_env(
        {
            "LABGUARD_ARM_ENDPOINT": emu.endpoint,
            "LABGUARD_ARM_AUDIENCE": "https://management.azure.com/",
            "LABGUARD_CA_BUNDLE": emu.ca_file,
            "LABGUARD_SUBSCRIPTIONS": SUB,
        }
    )


async def test_every_arm_request_is_paced_and_arms_remaining_count_is_heard(emu: Any) -> None:
    pacer = Pacer(headroom=0.0)
    async with emu.async_credential() as credential, open_arm(settings(emu), credential=credential, pacer=pacer) as s:
        for _ in range(3):
            await s.plans.get_plan(PlanId.parse(PLAN))
        plan_id = PlanId.parse(PLAN)
        slot = await s.plans.write_slot(plan_id)
        accepted = await s.plans.send_patch(
            plan_id, {"properties": {"defaultAutoShutdownProfile": {"idleDelay": "PT30M"}}}, slot
        )
        await s.plans.wait_for_write(plan_id, accepted)
        kinds = dict(s.plans.counter.by_kind)
    assert kinds == {"get": 4, "patch": 1, "poll": 1}  # the write's slot was taken before, not twice
    assert pacer.stats.requests == 6  # the token request is not an ARM request and is not paced
    assert pacer.stats.waits == 0 and pacer.stats.throttled == 0
    # The endpoint's buckets and ours agree: 5 reads and 1 write spent (plus refill since, capped at the burst).
    assert 245 <= pacer.available(SUB, "reads") <= 250
    assert 199 <= pacer.available(SUB, "writes") <= 200


async def test_without_a_pacer_nothing_is_paced(emu: Any) -> None:
    async with emu.async_credential() as credential, open_arm(settings(emu), credential=credential) as s:
        await s.plans.get_plan(PlanId.parse(PLAN))
        assert s.plans.counter.by_kind["get"] == 1


async def test_a_429_reaches_the_pacer_before_azure_core_retries(emu: Any) -> None:
    pacer = Pacer(headroom=0.0)
    emu.add_fault(method="GET", path_pattern=r".*/labPlans/paced.*", status=429, retry_after=0, count=1)
    async with emu.async_credential() as credential, open_arm(settings(emu), credential=credential, pacer=pacer) as s:
        await s.plans.get_plan(PlanId.parse(PLAN))
        assert s.plans.counter.throttled == 1
    assert pacer.stats.throttled == 1
    assert pacer.stats.requests == 2  # the first attempt and azure-core's retry both waited for a token
