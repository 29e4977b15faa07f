"""Issue 16 item 6: the person whose change labguard undid gets one short mail (LABGUARD_NOTIFY_CHANGER).

End to end with real parts: a person's delegated token (as `az login` gets one) PATCHes a plan or a lab on
the local Lab Services endpoint over HTTPS; the endpoint records the write event with the token's claims
and systemData naming the person; the event goes to the real Event Grid function (``app.get_functions()``,
real ``azure.functions`` objects), which fixes the write in enforce mode and mails the person through the
SMTP sink, keyed in the notice ledger on Azurite. The sweep (the timer function) has no claims and uses
systemData.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator.testing import start_emulator
from tests.app.test_functions_e2e import deliver, tick
from tests.labs.lab_fixtures import lab_body
from tests.notices.plans import SUB, functions_env, plan_json
from tests.notices.servers import SmtpServer, TlsMaterial, azurite_connection_string

pytestmark = pytest.mark.integration

POLICY = """\
mode: enforce
connection:
  webRdpAccess: Private
  clientSshAccess: Private
autoShutdown:
  shutdownOnDisconnect: Enabled
"""
TEACHER = "ada.lovelace@school.example"
CONTACT = "lab-exemptions@school.example"
PLAN_ID = f"/subscriptions/{SUB}/resourceGroups/rg-teaching/providers/Microsoft.LabServices/labPlans/cs101"
LAB_ID = f"/subscriptions/{SUB}/resourceGroups/rg-teaching/providers/Microsoft.LabServices/labs/cs101-lab"


@pytest.fixture
def emu() -> Iterator[Any]:
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def app_env(
    emu: Any, env: dict[str, str], tls: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The mail relay and the ledger on, ARM pointed at the local endpoint; LABGUARD_NOTIFY_CHANGER unset."""
    values = functions_env(
        emu, env, tls.ca_file, tmp_path, POLICY, drop=("WEBHOOK", "TOPIC", "SUPPORT_URL"), LABGUARD_SWEEP_FANOUT="off"
    )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def notify_on(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("LABGUARD_NOTIFY_CHANGER", "true")
    monkeypatch.setenv("LABGUARD_EXEMPTION_CONTACT", CONTACT)
    return app_env


@pytest.fixture(autouse=True)
async def _close_runtimes() -> Any:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()


def seed(emu: Any) -> None:
    """A compliant plan and a compliant Windows lab under it, last written by an app (the seed)."""
    plan = plan_json(name="cs101", rg="rg-teaching", state="Succeeded", with_error=False)
    plan["properties"]["defaultConnectionProfile"].update(webRdpAccess="None", clientSshAccess="None")
    plan["properties"]["defaultAutoShutdownProfile"] = {"shutdownOnDisconnect": "Enabled"}
    emu.put_plan(plan)
    lab = lab_body(
        "cs101-lab",
        plan_id=PLAN_ID,
        rg="rg-teaching",
        connection={
            "webSshAccess": "None",
            "webRdpAccess": "None",
            "clientSshAccess": "None",
            "clientRdpAccess": "Public",
        },
        shutdown={"shutdownOnDisconnect": "Enabled", "shutdownWhenNotConnected": "Disabled", "shutdownOnIdle": "None"},
    )
    lab["id"] = LAB_ID
    lab["systemData"] = {"lastModifiedBy": "seed-app", "lastModifiedByType": "Application"}
    emu.put_lab(lab)


def person_writes(emu: Any, resource_id: str, body: dict[str, Any], *, token: str) -> list[dict[str, Any]]:
    """PATCH as that token's holder over HTTPS; returns the write events the endpoint raised for it."""
    emu.take_events()
    answer = requests.patch(
        f"{emu.endpoint}{resource_id}?api-version=2023-06-07",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=emu.ca_file,
        timeout=10,
    )
    assert answer.status_code in (200, 201, 202), answer.text
    events = [e for e in emu.take_events() if e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"]
    assert events
    return events


def loosen_plan(emu: Any, token: str, value: str = "Public") -> dict[str, Any]:
    [event] = person_writes(
        emu, PLAN_ID, {"properties": {"defaultConnectionProfile": {"webRdpAccess": value}}}, token=token
    )
    return event


def loosen_lab(emu: Any, token: str) -> dict[str, Any]:
    [event] = person_writes(
        emu, LAB_ID, {"properties": {"connectionProfile": {"clientSshAccess": "Public"}}}, token=token
    )
    return event


def records(caplog: Any, name: str) -> list[dict[str, Any]]:
    prefix = name + " "
    return [json.loads(r.getMessage()[len(prefix) :]) for r in caplog.records if r.getMessage().startswith(prefix)]


def mails_to(smtp: SmtpServer, address: str) -> list[Any]:
    return [m for m in smtp.messages if address in m.rcpt_tos]


async def test_off_by_default_no_mail_to_the_person(emu: Any, app_env: dict[str, str], smtp: SmtpServer) -> None:
    seed(emu)
    await deliver(loosen_plan(emu, emu.user_token(TEACHER, "Ada Lovelace")))
    assert emu.get_plan(PLAN_ID)["properties"]["defaultConnectionProfile"]["webRdpAccess"] == "Private"  # fixed
    assert smtp.messages == []


async def test_a_persons_plan_change_set_back_gets_one_mail_then_none_on_redelivery_or_within_the_hour(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    event = loosen_plan(emu, emu.user_token(TEACHER, "Ada Lovelace"))
    await deliver(event)
    assert emu.get_plan(PLAN_ID)["properties"]["defaultConnectionProfile"]["webRdpAccess"] == "Private"
    [mail] = smtp.messages
    assert mail.rcpt_tos == [TEACHER]
    assert mail.message["To"] == TEACHER
    assert mail.message["Subject"] == "[labguard] Your change to lab plan cs101 was set back"
    assert mail.message["X-Labguard-Plan-Id"] == PLAN_ID
    text = mail.body("plain")
    assert "Hello Ada Lovelace," in text
    [row] = [line for line in text.splitlines() if "webRdpAccess" in line]
    assert row.split() == ["webRdpAccess", "Public", "Private", "connection.webRdpAccess"]
    assert f"ask for an exemption: {CONTACT}" in text
    [notified] = records(caplog, "changer.notified")
    assert notified["plan_id"] == PLAN_ID.lower()
    assert notified["rule"] == "connection.webRdpAccess"
    assert notified["correlation_id"] == event["data"]["correlationId"]
    assert notified["to"] == TEACHER and notified["source"] == "event"
    # the plan.change record names who made the change that was undone
    assert {c["changed_by"] for c in records(caplog, "plan.change")} == {f"{TEACHER} (User)"}

    await deliver(event)  # Event Grid delivers it again: nothing left to fix, nothing to tell
    assert len(smtp.messages) == 1

    second = loosen_plan(emu, emu.user_token(TEACHER, "Ada Lovelace"), "Public")  # again, within the hour
    await deliver(second)
    assert emu.get_plan(PLAN_ID)["properties"]["defaultConnectionProfile"]["webRdpAccess"] == "Private"
    assert len(smtp.messages) == 1
    assert records(caplog, "changer.skipped")[-1]["reason"] == "already told this hour about this lab plan"


async def test_a_persons_lab_change_set_back_gets_one_mail(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    event = loosen_lab(emu, emu.user_token(TEACHER, "Ada Lovelace"))
    await deliver(event)
    await deliver(event)
    assert emu.get_lab(LAB_ID)["properties"]["connectionProfile"]["clientSshAccess"] == "Private"
    [mail] = smtp.messages
    assert mail.rcpt_tos == [TEACHER]
    assert mail.message["Subject"] == "[labguard] Your change to lab cs101-lab was set back"
    [row] = [line for line in mail.body("plain").splitlines() if "clientSshAccess" in line]
    assert row.split()[:3] == ["clientSshAccess", "Public", "Private"]
    [notified] = records(caplog, "changer.notified")
    assert notified["lab_id"] == LAB_ID.lower()
    assert {c["changed_by"] for c in records(caplog, "lab.change")} == {f"{TEACHER} (User)"}


async def test_an_app_or_managed_identity_is_never_mailed(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    await deliver(loosen_plan(emu, emu.token("deploy-pipeline")))  # an app's token: idtyp app, no UPN
    assert emu.get_plan(PLAN_ID)["properties"]["defaultConnectionProfile"]["webRdpAccess"] == "Private"
    # a managed identity, seen by the sweep: systemData only
    lab = emu.get_lab(LAB_ID)
    lab["properties"]["connectionProfile"]["clientSshAccess"] = "Public"
    lab["systemData"] = {
        "lastModifiedBy": "0f5e9a4c-1d2b-4c3a-9e8f-7a6b5c4d3e2f",
        "lastModifiedByType": "ManagedIdentity",
    }
    emu.put_lab(lab)
    await tick()
    assert emu.get_lab(LAB_ID)["properties"]["connectionProfile"]["clientSshAccess"] == "Private"
    assert smtp.messages == []
    reasons = [(r.get("plan_id") or r.get("lab_id"), r["reason"]) for r in records(caplog, "changer.skipped")]
    assert (PLAN_ID.lower(), "an app-only token (idtyp 'app'): an application or managed identity") in reasons
    assert (LAB_ID.lower(), "last changed by a ManagedIdentity (systemData), not a person") in reasons


async def test_the_sweep_tells_a_person_systemdata_names(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    person_writes(
        emu, LAB_ID, {"properties": {"connectionProfile": {"webRdpAccess": "Public"}}}, token=emu.user_token(TEACHER)
    )
    await tick()  # the event was lost: the sweep finds the drift, systemData names the person
    await tick()
    [mail] = smtp.messages
    assert mail.rcpt_tos == [TEACHER]
    assert "Hello," in mail.body("plain")  # systemData carries no name
    [notified] = records(caplog, "changer.notified")
    assert notified["source"] == "systemData" and notified["rule"] == "connection.webRdpAccess"


async def test_hostile_name_and_upn_are_never_a_header_and_never_logged_whole(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    hostile_name = "Eve\r\nBcc: victim@evil.example\r\n\u202e" + "A" * 5000
    await deliver(loosen_plan(emu, emu.user_token(TEACHER, claims={"name": hostile_name})))
    [mail] = smtp.messages
    assert mail.rcpt_tos == [TEACHER]
    assert mail.message["Bcc"] is None and "victim@evil.example" not in str(mail.message["To"])
    greeting = mail.body("plain").splitlines()[0]
    assert greeting.startswith("Hello Eve Bcc: victim@evil.example") and len(greeting) < 100
    assert "\u202e" not in mail.body("plain")
    # a UPN that is not one plain address (header injection, a guest's #EXT#): nobody is mailed
    for upn in ("eve@school.example\r\nBcc: victim@evil.example", "eve_gmail.com#EXT#@school.onmicrosoft.com"):
        await deliver(loosen_plan(emu, emu.user_token("x@school.example", claims={"upn": upn, "unique_name": upn})))
    assert len(smtp.messages) == 1
    skipped = records(caplog, "changer.skipped")
    assert [r["reason"] for r in skipped[-2:]] == [
        "the UPN is not a plain mail address (a guest or external account, or malformed)"
    ] * 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "A" * 300 not in logged and "victim@evil.example\\r" not in logged


async def test_a_down_ledger_never_loses_the_mail_nor_repeats_it(
    emu: Any, notify_on: dict[str, str], smtp: SmtpServer, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage down (nothing listens on the ledger's port): the mail still goes, once; the worker's memory
    stands in for the ledger, as it does for failure notices."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string(port))
    monkeypatch.setenv("LABGUARD_NOTICE_WAIT_SECONDS", "3")
    caplog.set_level("INFO", logger="labguard")
    seed(emu)
    await deliver(loosen_plan(emu, emu.user_token(TEACHER, "Ada Lovelace")))
    await deliver(loosen_plan(emu, emu.user_token(TEACHER, "Ada Lovelace")))
    assert len(mails_to(smtp, TEACHER)) == 1
    [notified] = records(caplog, "changer.notified")
    assert notified["ledger_fault"]
    assert records(caplog, "changer.skipped")[-1]["reason"] == "already told this hour about this lab plan"
