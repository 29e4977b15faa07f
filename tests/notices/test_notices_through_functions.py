"""Failure notices end to end: the real Functions, ARM over HTTPS (local endpoint), SMTP, HTTPS and Azurite.

Whichever trigger finds a Failed plan, its support contacts hear about each failure once per channel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.testing import start_emulator
from shared.core.plans import PlanId
from tests.app.test_functions_e2e import deliver, tick, write_event
from tests.notices.plans import SUPPORT, functions_env, ledger_rows, plan_json
from tests.notices.servers import HttpsReceiver, SmtpServer, TlsMaterial

ERROR = {
    "action": "Update",
    "code": "SubnetInUse",
    "message": "The subnet 'labs' is in use by another lab plan.",
    "timestamp": "2026-11-23T09:00:00Z",
}
POLICY = "mode: enforce\nautoShutdown:\n  shutdownOnDisconnect: Enabled\n"


@pytest.fixture
def emu() -> Iterator[Any]:
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def app_env(
    emu: Any, env: dict[str, str], tls: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Every notice channel on, ARM pointed at the local endpoint; one CA bundle trusting both."""
    values = functions_env(emu, env, tls.ca_file, tmp_path, POLICY)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(autouse=True)
async def _close_runtimes() -> Any:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()


def failed_plan(emu: Any, error: dict[str, str] = ERROR, **kw: Any) -> str:
    body = plan_json(state="Succeeded", with_error=False, support=SUPPORT, **kw)
    emu.put_plan(body)
    emu.fail_plan(body["id"], error)
    return str(body["id"])


async def test_one_notice_per_channel_for_repeated_events_and_the_sweep(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    plan_id = failed_plan(emu)
    event = write_event(plan_id)
    await deliver(event)
    await deliver(event)  # Event Grid redelivers: at least once
    await tick()  # and the sweep finds the same failure
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail.rcpt_tos == [SUPPORT["email"]]
    text = mail.body("plain")
    for expected in (plan_id, "SubnetInUse", "Update", "2026-11-23T09:00:00Z", SUPPORT["phone"], "portal.azure.com"):
        assert expected in text
    topic = receiver.to("/api/events")
    assert len(topic) == 1
    assert topic[0].headers["aeg-sas-key"] == app_env["LABGUARD_EVENTGRID_TOPIC_KEY"]
    [cloud_event] = topic[0].json()
    assert cloud_event["type"] == "Labguard.LabPlan.ProvisioningFailed"
    assert cloud_event["data"]["error"]["code"] == "SubnetInUse"
    assert [r["method"] for r in emu.requests() if r["kind"] == "arm" and r["method"] != "GET"] == []


async def test_a_new_failure_notifies_again_and_recovery_closes_the_record(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer
) -> None:
    plan_id = failed_plan(emu)
    await deliver(write_event(plan_id))
    emu.fail_plan(plan_id, {**ERROR, "code": "QuotaExceeded", "timestamp": "2026-11-23T11:00:00Z"})
    await deliver(write_event(plan_id))
    assert [m.message["Subject"].split(": ")[-1] for m in smtp.messages] == ["SubnetInUse", "QuotaExceeded"]
    storage, table = app_env["AzureWebJobsStorage"], app_env["LABGUARD_LEDGER_TABLE"]
    assert await ledger_rows(storage, table, PlanId.parse(plan_id), open_only=True)
    emu.set_state(plan_id, "Succeeded")
    await tick()  # the sweep sees the plan recovered and closes its records
    assert await ledger_rows(storage, table, PlanId.parse(plan_id), open_only=True) == []
    assert len(smtp.messages) == 2


async def test_a_recovered_plan_that_is_compliant_has_its_records_closed_by_the_sweep(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer
) -> None:
    """Most recovered plans need nothing else: the sweep reports a compliant plan without a worker's turn, and
    must still close the records of its old failure."""
    plan_id = failed_plan(emu)
    await deliver(write_event(plan_id))
    storage, table = app_env["AzureWebJobsStorage"], app_env["LABGUARD_LEDGER_TABLE"]
    assert await ledger_rows(storage, table, PlanId.parse(plan_id), open_only=True)
    recovered = emu.get_plan(plan_id)
    recovered["properties"]["provisioningState"] = "Succeeded"
    recovered["properties"]["defaultAutoShutdownProfile"] = {
        "shutdownOnDisconnect": "Enabled",
        "disconnectDelay": "PT5M",
    }
    emu.put_plan(recovered)
    emu.clear_requests()
    await tick()
    assert [r["method"] for r in emu.requests() if r["kind"] == "arm" and r["method"] != "GET"] == []  # compliant
    assert await ledger_rows(storage, table, PlanId.parse(plan_id), open_only=True) == []
    assert len(smtp.messages) == 1


async def test_smtp_down_fails_the_run_then_the_next_run_delivers_once(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer
) -> None:
    from shared.errors import RunFailed

    plan_id = failed_plan(emu)
    smtp.recorder.fail_data_with = "451 4.3.0 try again later"
    with pytest.raises(RunFailed, match="notice not delivered"):
        await deliver(write_event(plan_id))  # raises: Event Grid redelivers
    assert smtp.messages == []
    smtp.recorder.fail_data_with = None
    await tick()
    await deliver(write_event(plan_id))
    assert len(smtp.messages) == 1
    assert smtp.messages[0].rcpt_tos == [SUPPORT["email"]]


def drifted_plan(emu: Any, name: str = "physics-201") -> str:
    """A Succeeded plan with no auto-shutdown profile: POLICY (enforce) makes labguard write to it."""
    body = plan_json(name, state="Succeeded", with_error=False, support=SUPPORT)
    emu.put_plan(body)
    return str(body["id"])


async def test_labguards_own_failed_write_goes_to_the_admin_not_the_plans_support_contact(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    plan_id = drifted_plan(emu)
    emu.fail_plan(plan_id, ERROR, next_write=True)  # the service fails labguard's PATCH
    emu.clear_events()
    await deliver(write_event(plan_id))  # an owner's change: labguard writes, the write fails
    own_failure = [e for e in emu.events() if e["eventType"] == "Microsoft.Resources.ResourceWriteFailure"]
    assert own_failure
    await deliver(own_failure[0])  # the failure event of labguard's own write is not dropped
    await tick()  # nor is the failure the sweep finds blamed on the owner
    assert [m.rcpt_tos for m in smtp.messages] == [[app_env["LABGUARD_FALLBACK_EMAIL"]]]
    text = smtp.messages[0].body("plain")
    assert "labguard's own write failed" in text and "SubnetInUse" in text
    assert SUPPORT["email"] not in smtp.messages[0].rcpt_tos
    assert len(receiver.to("/api/events")) == 1  # the admin's topic: once, not per trigger


async def test_backoff_is_shared_by_every_worker_through_table_storage(
    emu: Any, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime.runs import close_runtimes

    monkeypatch.setenv("LABGUARD_WEBHOOK_URLS", "")
    emu.configure(drop_written="shutdownOnDisconnect")  # the service never takes the write
    plan_id = drifted_plan(emu, "chemistry-101")
    emu.clear_requests()
    for _ in range(3):
        await tick()
        await close_runtimes()  # the next sweep runs on a new worker: nothing in process survives
    patches = [r for r in emu.requests() if r["kind"] == "arm" and r["method"] == "PATCH"]
    assert len(patches) == 1
    from azure.data.tables import TableClient

    from shared.runtime.write_backoff import backoff_table_name

    table = TableClient.from_connection_string(
        app_env["AzureWebJobsStorage"], backoff_table_name(app_env["LABGUARD_LEDGER_TABLE"])
    )
    with table:
        (row,) = list(table.list_entities())
    assert row["PlanId"].lower() == plan_id.lower() and row["Attempts"] == 1
    assert row["Fields"] == "properties.defaultAutoShutdownProfile.shutdownOnDisconnect"
