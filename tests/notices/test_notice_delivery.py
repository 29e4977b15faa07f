"""The failure-notice entry point against real servers on loopback: aiosmtpd, an HTTPS receiver, Azurite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from devtools.services import free_port
from shared.notices import ledger as ledger_module
from shared.notices.delivery import ChannelResult, NoticeOutcome, Notifier
from shared.notices.ledger import Ledger
from shared.notices.message import EVENT_TYPE, Notice
from tests.notices.plans import SUPPORT, TOPIC_KEY, WEBHOOK_PATH, ledger_rows, plan, settings
from tests.notices.servers import HttpsReceiver, SmtpServer, azurite_connection_string

pytestmark = pytest.mark.integration

EVENTS = "/api/events"


def by_channel(outcome: NoticeOutcome) -> dict[str, ChannelResult]:
    return {r.channel: r for r in outcome.results}


def statuses(outcome: NoticeOutcome) -> dict[str, str]:
    return {r.channel: r.status for r in outcome.results}


async def notify(
    env: dict[str, str], new_ledger: Callable[[], Ledger], lab_plan: Any, **overrides: str
) -> NoticeOutcome:
    async with Notifier.from_settings(settings(env, **overrides), ledger=new_ledger()) as notifier:
        return await notifier.notify_failure(lab_plan, correlation_id="run-1")


async def test_one_notice_on_every_channel_then_already_sent(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    support = {**SUPPORT, "url": receiver.url("/intake/labs?queue=7")}
    failed = plan(support=support)

    first = await notify(env, new_ledger, failed)

    assert statuses(first) == {
        "email": "sent",
        "eventgrid": "sent",
        "webhook:localhost": "sent",
        "support-url:localhost": "sent",
    }, first
    assert first.all_delivered and first.ledger_fault is None
    # email: to supportInfo.email, over STARTTLS with the configured login
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["physics-support@school.example"]
    assert mail.mail_from == "labguard@school.example"
    assert mail.login == "labguard@school.example"
    msg = mail.message
    assert msg["Subject"] == "[labguard] Lab plan physics-101 failed: SubnetInUse"
    assert msg["To"] == "physics-support@school.example"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = mail.body("plain")
    for expected in (
        "physics-101",
        "rg-science-labs",
        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
        "Update",
        "SubnetInUse",
        "The subnet 'labs' is in use by another lab plan.",
        "2024-05-01T10:15:00Z",
        "https://portal.azure.com/#resource/subscriptions/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
        "/resourceGroups/rg-science-labs/providers/Microsoft.LabServices/labPlans/physics-101",
        "+44 20 7946 0000",
        "Open a ticket with the lab name.",
        support["url"],
        "Correlation id: run-1",
    ):
        assert expected in text, expected
    assert "portal.azure.com/#resource/subscriptions/" in mail.body("html")

    # Event Grid: one CloudEvent in a batch, key in aeg-sas-key
    (event_hit,) = receiver.to(EVENTS)
    assert event_hit.headers["aeg-sas-key"] == TOPIC_KEY
    assert event_hit.headers["content-type"].startswith("application/cloudevents-batch+json")
    assert event_hit.query.get("api-version")
    batch = event_hit.json()
    assert isinstance(batch, list) and len(batch) == 1
    event = batch[0]
    assert event["specversion"] == "1.0"
    assert event["type"] == EVENT_TYPE == "Labguard.LabPlan.ProvisioningFailed"
    assert event["source"] == "labguard"
    assert event["subject"] == failed.id.path
    assert event["id"] and event["time"]
    assert event["data"]["error"] == {
        "action": "Update",
        "code": "SubnetInUse",
        "message": "The subnet 'labs' is in use by another lab plan.",
        "timestamp": "2024-05-01T10:15:00Z",
    }
    assert event["data"]["support"]["email"] == "physics-support@school.example"
    assert event["data"]["support"]["url"] == support["url"]
    assert event["data"]["planName"] == "physics-101"
    assert event["data"]["correlationId"] == "run-1"

    # Webhook: a Teams-style message with an Adaptive Card
    (hook_hit,) = receiver.to(WEBHOOK_PATH)
    card_msg = hook_hit.json()
    assert card_msg["type"] == "message"
    assert card_msg["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "aeg-sas-key" not in hook_hit.headers

    # Allow-listed support intake: POSTed once as JSON, query kept
    (intake,) = receiver.to("/intake/labs")
    assert intake.method == "POST" and intake.query == {"queue": "7"}
    assert intake.json()["error"]["code"] == "SubnetInUse"
    assert "aeg-sas-key" not in intake.headers

    # The same failure again (another event, then the sweep): nothing new on any channel.
    for _ in range(2):
        again = await notify(env, new_ledger, failed)
        assert set(statuses(again).values()) == {"already-sent"}, again
        assert again.all_delivered
    assert len(smtp.messages) == 1
    assert len(receiver.hits) == 3


async def test_event_and_sweep_racing_send_once(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    """Two Function instances (event trigger and sweep) see the same failure at the same moment."""
    failed = plan(support=SUPPORT)
    s = settings(env)
    async with (
        Notifier.from_settings(s, ledger=new_ledger()) as event_run,
        Notifier.from_settings(s, ledger=new_ledger()) as sweep_run,
    ):
        outcomes = await asyncio.gather(
            event_run.notify_failure(failed, correlation_id="event"),
            sweep_run.notify_failure(failed, correlation_id="sweep"),
        )
    assert len(smtp.messages) == 1
    assert len(receiver.to(EVENTS)) == 1
    assert len(receiver.to(WEBHOOK_PATH)) == 1
    for channel in ("email", "eventgrid", "webhook:localhost"):
        assert sorted(by_channel(o)[channel].status for o in outcomes) in (
            ["sent", "skipped"],
            ["already-sent", "sent"],
        )
    # and the sweep after both: already sent everywhere
    later = await notify(env, new_ledger, failed)
    assert set(statuses(later).values()) == {"already-sent"}


async def test_new_error_new_notice(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    await notify(env, new_ledger, plan(support=SUPPORT))
    # the same error as the sweep may spell it: 7 fractional digits, other case of the code
    same = await notify(
        env, new_ledger, plan(support=SUPPORT, timestamp="2024-05-01T10:15:00.0000000Z", code="subnetinuse")
    )
    assert set(statuses(same).values()) == {"already-sent"}
    new_time = await notify(env, new_ledger, plan(support=SUPPORT, timestamp="2024-05-02T08:00:00Z"))
    new_code = await notify(
        env, new_ledger, plan(support=SUPPORT, timestamp="2024-05-02T08:00:00Z", code="QuotaExceeded")
    )
    assert set(statuses(new_time).values()) == {"sent"}
    assert set(statuses(new_code).values()) == {"sent"}
    assert len({new_time.failure_key, new_code.failure_key, same.failure_key}) == 3
    assert [m.message["Subject"] for m in smtp.messages] == [
        "[labguard] Lab plan physics-101 failed: SubnetInUse",
        "[labguard] Lab plan physics-101 failed: SubnetInUse",
        "[labguard] Lab plan physics-101 failed: QuotaExceeded",
    ]
    assert len(receiver.to(EVENTS)) == 3


async def test_invalid_email_goes_to_fallback(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer
) -> None:
    outcome = await notify(env, new_ledger, plan(support={"email": "physics support desk", "phone": "x123"}))
    assert by_channel(outcome)["email"].status == "sent"
    assert "fallback it-helpdesk@school.example" in by_channel(outcome)["email"].detail
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["it-helpdesk@school.example"]
    assert "supportInfo.email ('physics support desk') is not a valid address" in mail.body("plain")


async def test_plan_without_support_info(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    outcome = await notify(env, new_ledger, plan(support=None))
    assert outcome.all_delivered
    assert "support-url:none" not in by_channel(outcome)
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["it-helpdesk@school.example"]
    text = mail.body("plain")
    assert "the plan has no supportInfo.email" in text
    assert "This plan has no support information." in text
    (hit,) = receiver.to(EVENTS)
    assert hit.json()[0]["data"]["support"] == {"url": None, "email": None, "phone": None, "instructions": None}


async def test_no_valid_address_and_no_fallback_is_reported_not_dropped(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labguard.notices")
    outcome = await notify(env, new_ledger, plan(support=None), LABGUARD_FALLBACK_EMAIL="")
    email = by_channel(outcome)["email"]
    assert email.status == "failed"
    assert "LABGUARD_FALLBACK_EMAIL" in email.detail
    assert not outcome.all_delivered
    assert smtp.messages == []
    assert any(r.levelno == logging.ERROR and getattr(r, "channel", "") == "email" for r in caplog.records)


async def test_refused_support_address_falls_back(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer
) -> None:
    smtp.recorder.reject_rcpt.add("physics-support@school.example")
    outcome = await notify(env, new_ledger, plan(support=SUPPORT))
    email = by_channel(outcome)["email"]
    assert email.status == "sent" and "fallback" in email.detail
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["it-helpdesk@school.example"]
    assert "refused the plan's support address" in mail.body("plain")


async def test_channel_down_then_recovering(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    failed = plan(support=SUPPORT)
    smtp.recorder.fail_data_with = "451 4.3.0 Mail system busy, try later"
    receiver.answer(EVENTS, 503)

    first = await notify(env, new_ledger, failed)
    assert statuses(first) == {"email": "failed", "eventgrid": "failed", "webhook:localhost": "sent"}
    assert "451" in by_channel(first)["email"].detail
    assert "503" in by_channel(first)["eventgrid"].detail
    assert not first.all_delivered
    assert smtp.messages == []

    # still down for email only: the topic and the webhook are not repeated/only the topic is retried
    receiver.answer(EVENTS, 200)
    second = await notify(env, new_ledger, failed)
    assert statuses(second) == {"email": "failed", "eventgrid": "sent", "webhook:localhost": "already-sent"}

    smtp.recorder.fail_data_with = None
    third = await notify(env, new_ledger, failed)
    assert statuses(third) == {"email": "sent", "eventgrid": "already-sent", "webhook:localhost": "already-sent"}
    assert third.all_delivered
    fourth = await notify(env, new_ledger, failed)
    assert set(statuses(fourth).values()) == {"already-sent"}
    assert len(smtp.messages) == 1
    assert len(receiver.to(WEBHOOK_PATH)) == 1
    assert [h.headers["aeg-sas-key"] for h in receiver.to(EVENTS)][-1] == TOPIC_KEY
    assert sum(1 for h in receiver.to(EVENTS)) >= 3  # 503 (and the SDK's one retry), then 200 once


async def test_smtp_server_unreachable_is_a_failed_channel(
    env: dict[str, str], new_ledger: Callable[[], Ledger]
) -> None:
    outcome = await notify(env, new_ledger, plan(support=SUPPORT), LABGUARD_SMTP_PORT=str(free_port()))
    email = by_channel(outcome)["email"]
    assert email.status == "failed" and "cannot deliver through localhost" in email.detail
    assert by_channel(outcome)["eventgrid"].status == "sent"


async def test_hostile_strings(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    hostile = plan(
        name="physics_fiz.x-1",  # ARM's name rules are ASCII (a Unicode name is refused as malformed)
        code="Bad\r\nBcc: victim@evil.example\r\nX-Injected: 1",
        action="Update\nSubject: fake",
        message="<script>alert('x')</script>\r\n.\r\nRCPT TO:<evil@evil.example>\n\u202egnp.exe <!channel> "
        + "A" * 20000,
        support={
            "email": "help@school.example\r\nBcc: victim@evil.example",
            "url": "javascript:alert(1)",
            "phone": "<img src=x onerror=alert(1)>",
            "instructions": "Call <b>now</b> & \u200bplease",
        },
    )
    outcome = await notify(env, new_ledger, hostile, LABGUARD_WEBHOOK_URLS=receiver.url(WEBHOOK_PATH))
    assert outcome.all_delivered, outcome
    (mail,) = smtp.messages
    # the invalid address is not used: fallback only, nobody injected through headers or the envelope
    assert mail.rcpt_tos == ["it-helpdesk@school.example"]
    msg = mail.message
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert msg["Subject"].startswith("[labguard] Lab plan physics_fiz.x-1 failed: Bad Bcc:")
    assert len(msg["Subject"]) <= 200
    html = mail.body("html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "<b>now</b>" not in html
    assert "href='javascript" not in html
    assert "\u202e" not in html and "\u200b" not in html
    text = mail.body("plain")
    assert "\u202e" not in text
    assert len(text) < 12000  # the 20 000-character message is capped
    assert "RCPT TO:<evil@evil.example>" in text  # shown as data, inside the body only
    (event_hit,) = receiver.to(EVENTS)
    data = event_hit.json()[0]["data"]
    assert "\r" not in data["error"]["code"] and len(data["error"]["message"]) <= 4000
    (hook,) = receiver.to(WEBHOOK_PATH)
    assert "<script>" not in hook.body.decode()  # Teams card text has markdown/HTML defused
    assert "support-url:invalid-host" in by_channel(outcome) or any(
        r.channel.startswith("support-url:") and r.status == "skipped" for r in outcome.results
    )


@pytest.mark.parametrize(
    ("url_template", "why"),
    [
        ("http://localhost:{port}/intake", "not https"),
        ("https://127.0.0.1:{port}/intake", "IP address"),
        ("https://2130706433:{port}/intake", "IP address"),
        ("https://[::1]:{port}/intake", "IP address"),
        ("https://evil.example@localhost:{port}/intake", "userinfo"),
        ("https://localhost:{port}@evil.example/intake", "userinfo"),
        ("https://localhost:{port}\\@evil.example/intake", "backslash"),
        ("https://localhost/intake", "is not in LABGUARD_SUPPORT_URL_HOSTS"),
        ("https://localhost:{other}/intake", "is not in LABGUARD_SUPPORT_URL_HOSTS"),
        ("https://help.evil.example:{port}/intake", "is not in LABGUARD_SUPPORT_URL_HOSTS"),
        ("https://localhost.:{port}/ intake", "spaces"),
        ("https://LOCALHOST:{port}/intake\r\nX: y", "control"),
    ],
)
async def test_support_url_never_requested_unless_allow_listed(
    env: dict[str, str],
    new_ledger: Callable[[], Ledger],
    receiver: HttpsReceiver,
    caplog: pytest.LogCaptureFixture,
    url_template: str,
    why: str,
) -> None:
    caplog.set_level(logging.INFO, logger="labguard.notices")
    url = url_template.format(port=receiver.port, other=free_port())
    outcome = await notify(env, new_ledger, plan(support={**SUPPORT, "url": url}), LABGUARD_WEBHOOK_URLS="")
    (skipped,) = [r for r in outcome.results if r.channel.startswith("support-url:")]
    assert skipped.status == "skipped"
    assert why in skipped.detail
    assert receiver.to("/intake") == [] and receiver.to("/ intake") == []
    assert [h.path for h in receiver.hits] == [EVENTS]  # only the topic was called
    logged = [r for r in caplog.records if r.getMessage().startswith("supportInfo.url not requested")]
    assert logged and why in logged[0].getMessage()
    assert outcome.all_delivered  # a skipped support URL is not a failed delivery


async def test_support_url_without_allow_list_is_only_shown(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    url = receiver.url("/intake")
    outcome = await notify(
        env, new_ledger, plan(support={**SUPPORT, "url": url}), LABGUARD_SUPPORT_URL_HOSTS="", LABGUARD_WEBHOOK_URLS=""
    )
    assert by_channel(outcome)["support-url:localhost"].status == "skipped"
    assert "LABGUARD_SUPPORT_URL_HOSTS is empty" in by_channel(outcome)["support-url:localhost"].detail
    assert receiver.to("/intake") == []
    assert url in smtp.messages[0].body("plain")


async def test_support_url_redirect_is_not_followed(
    env: dict[str, str], new_ledger: Callable[[], Ledger], receiver: HttpsReceiver
) -> None:
    receiver.answer("/intake", 307, Location=receiver.url("/elsewhere"))
    outcome = await notify(env, new_ledger, plan(support={**SUPPORT, "url": receiver.url("/intake")}))
    result = by_channel(outcome)["support-url:localhost"]
    assert result.status == "failed" and "307" in result.detail and "never followed" in result.detail
    assert len(receiver.to("/intake")) == 1
    assert receiver.to("/elsewhere") == []


async def test_resolve_closes_open_records(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer
) -> None:
    failed = plan(support=SUPPORT)
    storage, table = env["AzureWebJobsStorage"], env["LABGUARD_LEDGER_TABLE"]
    await notify(env, new_ledger, failed)
    assert len(await ledger_rows(storage, table, failed.id, open_only=True)) == 3
    recovered = plan(support=SUPPORT, state="Succeeded")
    async with Notifier.from_settings(settings(env), ledger=new_ledger()) as notifier:
        await notifier.resolve(recovered)
    assert await ledger_rows(storage, table, failed.id, open_only=True) == []
    rows = await ledger_rows(storage, table, failed.id)
    assert len(rows) == 3 and all(r["IsOpen"] is False and r["ResolvedAt"] for r in rows)
    # a late event for the old failure does not notify again
    late = await notify(env, new_ledger, failed)
    assert set(statuses(late).values()) == {"already-sent"}
    assert len(smtp.messages) == 1


async def test_resolve_before_any_notice_is_cheap_and_quiet(
    env: dict[str, str], new_ledger: Callable[[], Ledger], table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from azure.data.tables.aio import TableServiceClient

    caplog.set_level(logging.INFO, logger="labguard.notices")
    async with Notifier.from_settings(settings(env), ledger=new_ledger()) as notifier:
        await notifier.resolve(plan(state="Succeeded"))  # table does not even exist yet
        assert await notifier.open_snapshot() == frozenset()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    async with TableServiceClient.from_connection_string(env["AzureWebJobsStorage"]) as service:
        assert table_name not in [t.name async for t in service.list_tables()]  # nothing was written


async def test_unreachable_ledger_still_delivers(
    env: dict[str, str], smtp: SmtpServer, receiver: HttpsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labguard.notices")
    dead = azurite_connection_string(free_port())
    failed = plan(support=SUPPORT)
    for _ in range(2):
        ledger = Ledger.from_connection_string(dead, "notices", retry_total=0)
        async with Notifier.from_settings(settings(env, AzureWebJobsStorage=dead), ledger=ledger) as notifier:
            outcome = await notifier.notify_failure(failed)
        assert outcome.all_delivered
        assert outcome.ledger_fault is not None and "ledger read failed" in outcome.ledger_fault
        assert "AccountKey" not in outcome.ledger_fault
    assert len(smtp.messages) == 2  # at least once beats never
    assert any("notice ledger fault" in r.getMessage() for r in caplog.records)


async def test_default_ledger_from_settings(env: dict[str, str], smtp: SmtpServer) -> None:
    """Without an injected ledger, AzureWebJobsStorage + LABGUARD_LEDGER_TABLE are used."""
    failed = plan(support=SUPPORT)
    for expected in ("sent", "already-sent"):
        async with Notifier.from_settings(settings(env, LABGUARD_WEBHOOK_URLS="")) as notifier:
            assert notifier.enabled
            outcome = await notifier.notify_failure(failed)
        assert by_channel(outcome)["email"].status == expected
    assert len(smtp.messages) == 1


async def test_nothing_configured() -> None:
    async with Notifier.from_settings(settings({})) as notifier:
        assert not notifier.enabled
        outcome = await notifier.notify_failure(plan(support=SUPPORT))
    assert outcome.results == ()
    assert not outcome.all_delivered
    assert outcome.ledger_fault is not None  # no AzureWebJobsStorage either


async def test_tls_is_verified(env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer) -> None:
    """Without the test CA in LABGUARD_CA_BUNDLE, the self-issued certificates are rejected everywhere."""
    outcome = await notify(env, new_ledger, plan(support=SUPPORT), LABGUARD_CA_BUNDLE="")
    assert statuses(outcome) == {"email": "failed", "eventgrid": "failed", "webhook:localhost": "failed"}
    assert "TLS" in by_channel(outcome)["email"].detail
    assert smtp.messages == []


async def test_wrong_smtp_password_is_reported_without_the_password(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "WRONG-secret-Pa55"
    outcome = await notify(env, new_ledger, plan(support=SUPPORT), LABGUARD_SMTP_PASSWORD=wrong)
    email = by_channel(outcome)["email"]
    assert email.status == "failed" and "refused the login" in email.detail
    assert set(smtp.recorder.logins) == {"labguard@school.example"}  # smtplib tries PLAIN, then LOGIN
    assert wrong not in caplog.text and wrong not in repr(outcome)


async def test_secrets_never_logged_or_reported(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # including the Azure SDK's HTTP logging
    outcome = await notify(env, new_ledger, plan(support=SUPPORT))
    assert outcome.all_delivered
    outcome_text = repr(outcome)
    for secret in (env["LABGUARD_SMTP_PASSWORD"], TOPIC_KEY, "SECRET-TOKEN-abc123", "IncomingWebhook"):
        assert secret not in caplog.text, secret
        assert secret not in outcome_text, secret
    sent = [r for r in caplog.records if r.name == "labguard.notices" and r.getMessage().startswith("notice sent")]
    assert {getattr(r, "channel", None) for r in sent} == {"email", "eventgrid", "webhook:localhost"}
    assert all(getattr(r, "plan_id", "").endswith("/labPlans/physics-101") for r in sent)
    assert all(getattr(r, "correlation_id", None) == "run-1" for r in sent)


async def test_claim_of_a_crashed_run_blocks_until_its_lease_expires(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that claimed the email and died: others wait for the lease, then one of them sends."""
    failed = plan(support=SUPPORT)
    notice = Notice.from_plan(failed)
    crashed = new_ledger()
    async with crashed:
        assert await crashed.claim(failed.id, notice.failure_key, notice.digest, "email") is not None

    held = await notify(env, new_ledger, failed, LABGUARD_WEBHOOK_URLS="")
    assert by_channel(held)["email"].status == "skipped" and "claim" in by_channel(held)["email"].detail
    assert by_channel(held)["eventgrid"].status == "sent"
    assert smtp.messages == []

    monkeypatch.setattr(ledger_module, "CLAIM_LEASE", ledger_module.timedelta(0))
    taken_over = await notify(env, new_ledger, failed, LABGUARD_WEBHOOK_URLS="")
    assert statuses(taken_over) == {"email": "sent", "eventgrid": "already-sent"}
    assert len(smtp.messages) == 1


async def test_the_admin_notice_of_a_failed_write_is_its_own_notice_on_every_channel(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    failed = plan(support=SUPPORT)
    reason = "labguard's own write failed (the write labguard just made): SubnetInUse"
    async with Notifier.from_settings(settings(env), ledger=new_ledger()) as notifier:
        owner = await notifier.notify_failure(failed, correlation_id="run-1")
        admin = await notifier.notify_admin(failed, reason=reason, correlation_id="run-2")
        again = await notifier.notify_admin(failed, reason=reason, correlation_id="run-3")
    assert set(statuses(owner).values()) == {"sent"}
    # Same failure, other notice: the owner's ledger rows do not stand in for the admin's.
    assert statuses(admin) == {"email": "sent", "eventgrid": "sent", "webhook:localhost": "sent"}, admin
    assert set(statuses(again).values()) == {"already-sent"}, again
    admin_mail = smtp.messages[-1]
    assert admin_mail.rcpt_tos == ["it-helpdesk@school.example"]
    assert "labguard's own write" in admin_mail.message["Subject"]
    owner_event, admin_event = (hit.json()[0] for hit in receiver.to(EVENTS))
    assert owner_event["type"] == "Labguard.LabPlan.ProvisioningFailed" and "adminReason" not in owner_event["data"]
    assert admin_event["type"] == "Labguard.LabPlan.WriteFailed" and admin_event["data"]["adminReason"] == reason
    assert admin_event["id"] != owner_event["id"]
    owner_hook, admin_hook = (hit.json() for hit in receiver.to(WEBHOOK_PATH))
    assert "labguard's own write" in str(admin_hook) and "labguard's own write" not in str(owner_hook)


async def test_without_an_admin_address_the_admin_mail_is_skipped_not_failed(
    env: dict[str, str], new_ledger: Callable[[], Ledger], smtp: SmtpServer, receiver: HttpsReceiver, caplog: Any
) -> None:
    no_admin = {k: v for k, v in env.items() if k != "LABGUARD_FALLBACK_EMAIL"}
    caplog.set_level(logging.INFO, logger="labguard")
    async with Notifier.from_settings(settings(no_admin), ledger=new_ledger()) as notifier:
        admin = await notifier.notify_admin(plan(support=SUPPORT), reason="labguard's own write failed")
    assert statuses(admin) == {"email": "skipped", "eventgrid": "sent", "webhook:localhost": "sent"}, admin
    assert "LABGUARD_FALLBACK_EMAIL" in by_channel(admin)["email"].detail
    assert smtp.messages == []
    assert any(r.getMessage().startswith("notice.admin-email-skipped ") for r in caplog.records)


async def test_the_admin_notice_waits_no_longer_than_notice_wait_s(
    env: dict[str, str], new_ledger: Callable[[], Ledger], receiver: HttpsReceiver
) -> None:
    receiver.delays[WEBHOOK_PATH] = 3.0
    s = settings(env, LABGUARD_NOTICE_WAIT_SECONDS="1")
    async with Notifier.from_settings(s, ledger=new_ledger()) as notifier:
        started = asyncio.get_running_loop().time()
        admin = await notifier.notify_admin(plan(support=SUPPORT), reason="labguard's own write failed")
        waited = asyncio.get_running_loop().time() - started
    assert admin.deferred and waited < 2.5
