"""Labs in what a timer sweep leaves behind and in the change log, through the real Functions against the local
endpoint, Azurite (tables and blobs) and the SMTP sink: the page and snapshot show labs under their plan, the
digest counts and lists them, and every lab write (sweep, lab event, a plan's event, ``labguard enforce``) is a
change log row with its outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from tests.app.test_functions_e2e import deliver, tick, write_event
from tests.labs.lab_fixtures import lab_body
from tests.notices.servers import Azurite, SmtpServer, TlsMaterial
from tests.notices.test_sweep_outputs import (
    ADMIN,
    _close_runtimes,  # noqa: F401  (the fixture closes the Functions' runtimes after each test)
    azurite_blob,  # noqa: F401  (the module's Azurite blob service)
    configure,
    digests,
    emu,  # noqa: F401
    put,
    storage,
)

SUB = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def seed_lab(endpoint: Any, plan_id: str, name: str = "physics-lab-1") -> dict[str, Any]:
    """A Windows lab under ``plan_id`` whose own shutdown on disconnect is off (the policy requires it)."""
    body = lab_body(name, plan_id=plan_id, rg="rg-science-labs", createOption="Image", usageQuota="PT10H")
    body["id"] = body["id"].replace(body["id"].split("/")[2], SUB)
    endpoint.put_lab(body)
    return body


async def change_rows(values: dict[str, str]) -> list[Any]:
    from shared.runtime.changes import ChangeLog

    async with ChangeLog.from_connection_string(values["AzureWebJobsStorage"], values["LABGUARD_CHANGES_TABLE"]) as log:
        return await log.recent(datetime.now(UTC))


async def test_a_sweep_shows_labs_on_the_page_in_the_digest_and_records_their_writes(
    emu: Any,  # noqa: F811
    env: dict[str, str],
    tls: TlsMaterial,
    smtp: SmtpServer,
    azurite_table: Azurite,
    azurite_blob: int,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = "labreports" + env["LABGUARD_LEDGER_TABLE"][-12:]
    values = configure(
        monkeypatch,
        emu,
        env,
        tls,
        tmp_path,
        mode="enforce",
        AzureWebJobsStorage=storage(azurite_table, azurite_blob),
        LABGUARD_REPORT_CONTAINER=container,
        LABGUARD_DIGEST_EMAIL=ADMIN,
    )
    plan_id = put(emu, "physics-101")
    lab = seed_lab(emu, plan_id)
    await tick()

    (change,) = await change_rows(values)
    assert (change.kind, change.plan_id, change.status, change.trigger) == ("lab", lab["id"], "fixed", "sweep")
    assert change.lab_plan_id == plan_id
    assert ("properties.autoShutdownProfile.shutdownOnDisconnect", "Disabled", "Enabled") in change.changes

    async with BlobServiceClient.from_connection_string(storage(azurite_table, azurite_blob)) as service:
        client = service.get_container_client(container)
        snapshot = json.loads(await (await client.download_blob("latest.json")).readall())
        page = (await (await client.download_blob("latest.html")).readall()).decode("utf-8")
    (plan,) = snapshot["plans"]
    assert snapshot["totals"]["plans"] == 1  # the lab is not counted as a plan, nor shown as an unreadable one
    assert [(x["name"], x["status"]) for x in plan["labs"]] == [("physics-lab-1", "fixed")]
    assert snapshot["labTotals"]["labs"] == 1 and snapshot["labTotals"]["fixed"] == 1
    assert 'data-lab="physics-lab-1" data-lab-status="fixed" data-lab-plan="physics-101"' in page
    (shown,) = snapshot["changes"]
    assert shown["kind"] == "lab" and shown["labPlanName"] == "physics-101"

    (mail,) = digests(smtp)
    assert "(1 on labs)" in mail.message["Subject"]
    text = mail.text()
    assert "Labs: 1 fixed" in text
    assert "rg-science-labs/physics-101 > lab physics-lab-1: shutdownOnDisconnect Disabled -> Enabled" in text
    assert "Labs: 1 fixed" in mail.body("html")


async def test_a_lab_fixed_on_its_own_event_or_its_plans_goes_into_the_change_log(
    emu: Any,  # noqa: F811
    env: dict[str, str],
    tls: TlsMaterial,
    smtp: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    plan_id = put(emu, "physics-101")
    lab = seed_lab(emu, plan_id)
    event = write_event(lab["id"])  # the lab's own write event
    event["data"]["operationName"] = event["data"]["authorization"]["action"] = "Microsoft.LabServices/labs/write"
    await deliver(event)
    (change,) = await change_rows(values)
    assert (change.kind, change.plan_id, change.trigger, change.status) == ("lab", lab["id"], "event", "fixed")
    assert change.correlation_id

    other = seed_lab(emu, plan_id, "physics-lab-2")
    await deliver(write_event(plan_id))  # the plan's event re-evaluates the labs naming it
    rows = await change_rows(values)
    assert [(c.plan_id, c.trigger) for c in rows if c.plan_id == other["id"]] == [(other["id"], "event")]


async def test_labguard_enforce_records_the_lab_writes_it_makes(
    emu: Any,  # noqa: F811
    env: dict[str, str],
    tls: TlsMaterial,
    smtp: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labguard import runner

    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    plan_id = put(emu, "physics-101")
    lab = seed_lab(emu, plan_id)
    settings = runner.resolve_settings(values, runner.Flags(), mode="enforce")
    result = await runner.run(settings, runner.read_policy(settings.policy_file, "enforce"), command="enforce")
    assert [o.status for o in result.labs] == ["fixed"]
    (change,) = await change_rows(values)
    assert (change.kind, change.plan_id, change.trigger) == ("lab", lab["id"], "labguard enforce")
