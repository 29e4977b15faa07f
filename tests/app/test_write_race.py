"""Found by the chaos run (tests/chaos): an owner's write that lands between labguard's write and its proof read.

The proof read then differs from what labguard wrote, but not because the service dropped a value: someone
else wrote the plan since (``systemData.lastModifiedBy``). Recording that as an unconverged write put the plan
in the write backoff, so the owner's own event, and every sweep for 30 minutes, left the re-loosened plan as
it was. Now a proof read that names another writer is judged as a new read: no backoff, and the owner's
event fixes the plan at once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp

from .conftest import OWNER_CLIENT, plan_body
from .test_functions_e2e import deliver, patches, shutdown_of, write_event


def records(caplog: Any, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith(event + " ")
    ]


async def owner_patch(emu: Any, plan_id: str, body: dict[str, Any]) -> int:
    context = ssl.create_default_context(cafile=emu.ca_file)
    headers = {"Authorization": f"Bearer {emu.token(OWNER_CLIENT)}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.patch(f"{emu.endpoint}{plan_id}?api-version=2023-06-07", json=body, headers=headers) as response,
    ):
        return response.status


async def test_an_owners_write_during_labguards_write_is_not_taken_for_an_unconverged_write(
    emu: Any, configure: Any, caplog: Any
) -> None:
    emu.configure(patch_reply="200")  # every write done at once: the proof read comes right after the PATCH
    body = plan_body("raced")
    emu.put_plan(body)
    plan_id = body["id"]
    # Each read of the plan takes a second, so the owner's write lands inside labguard's proof read.
    emu.add_fault(method="GET", path_pattern=f"{plan_id}", latency_ms=1000, count=2)
    caplog.set_level("INFO", logger="labguard")

    async def owner_loosens_it_again_once_labguard_has_written() -> None:
        while not patches(emu):  # noqa: ASYNC110  (polling the endpoint's log)
            await asyncio.sleep(0.02)
        shutdown = dict(emu.get_plan(plan_id)["properties"]["defaultAutoShutdownProfile"])
        assert (
            await owner_patch(
                emu, plan_id, {"properties": {"defaultAutoShutdownProfile": {**shutdown, "idleDelay": "PT2H"}}}
            )
            == 200
        )

    owner = asyncio.ensure_future(owner_loosens_it_again_once_labguard_has_written())
    await deliver(write_event(plan_id))
    await owner
    assert shutdown_of(emu, plan_id)["idleDelay"] == "PT2H"  # the owner's write came after labguard's
    assert records(caplog, "plan.unconverged") == []  # not taken for a write of ours that did not converge

    owners_event = next(e for e in emu.take_events()[::-1] if e["data"]["claims"].get("appid") == OWNER_CLIENT)
    await deliver(owners_event)  # the owner's own event: read, judged, fixed at once
    assert shutdown_of(emu, plan_id)["idleDelay"] == "PT30M"
    assert records(caplog, "plan.write-backoff") == []
