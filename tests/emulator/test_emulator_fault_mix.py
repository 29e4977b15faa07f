"""The fault mix: a seeded share of one caller's ARM requests faulted at random, counted by kind, logged."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import pytest

from emulator.fault_mix import FaultMix
from emulator.testing import start_emulator

SUB = "5c0ffee0-0000-4000-8000-00000000000a"
PLAN = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/mixed"


def test_draws_reproduce_from_the_seed_and_follow_the_rates() -> None:
    rates = {"429": 0.09, "500": 0.025, "503": 0.025, "reset": 0.02}
    first, second = FaultMix(rates, seed=7), FaultMix(rates, seed=7)
    draws = [first.draw("GET", PLAN, "app") for _ in range(20_000)]
    assert draws == [second.draw("GET", PLAN, "app") for _ in range(20_000)]
    for kind, rate in rates.items():
        assert abs(first.injected[kind] / 20_000 - rate) < 0.01, (kind, first.injected)
    assert first.drawn == 20_000
    other = FaultMix(rates, seed=7, client_ids=("app",), methods=("PATCH",))
    assert {other.draw("GET", PLAN, "app"), other.draw("PATCH", PLAN, "owner")} == {None}
    assert other.drawn == 0


@pytest.mark.parametrize("rates", [{"404": 0.1}, {"429": 1.5}, {"429": 0.6, "500": 0.6}])
def test_bad_rates_are_refused(rates: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaultMix(rates)


@pytest.mark.integration
async def test_only_the_named_caller_is_faulted_and_the_log_says_which_fault() -> None:
    with start_emulator() as emu:
        emu.put_plan({"id": PLAN, "location": "westeurope", "properties": {}})
        emu.fail_plan(PLAN, {"code": "SubnetInUse"})
        emu.fault_mix({"503": 1.0}, seed=1, client_ids=("victim",))
        context = ssl.create_default_context(cafile=emu.ca_file)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            statuses: dict[str, Any] = {}
            for who in ("victim", "bystander"):
                headers = {"Authorization": f"Bearer {emu.token(who)}"}
                async with http.get(f"{emu.endpoint}{PLAN}?api-version=2023-06-07", headers=headers) as response:
                    statuses[who] = response.status
        assert statuses == {"victim": 503, "bystander": 200}
        log = [(r["principal"], r["fault"], r["state"]) for r in emu.requests() if r["kind"] == "arm"]
        assert log == [("victim", "503", "Failed"), ("bystander", None, "Failed")]
        counts = emu.clear_fault_mix()
        assert counts is not None and counts["injected"] == {"503": 1} and counts["drawn"] == 1
        assert emu.fault_mix_counts() is None
