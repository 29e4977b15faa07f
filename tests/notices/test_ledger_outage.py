"""Issue 13, items 3 and 4: the notice ledger stopped, or hung, never repeats a notice and never holds an
invocation past Event Grid's 30 s; what did not finish is picked up by the next sweep, once.

Real parts only: the Functions app against the local Lab Services endpoint, Azurite (stopped and started
again on the same port, tables on disk), the SMTP sink, the HTTPS receiver, and a TCP server that accepts
and never answers as the hung ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.testing import start_emulator
from shared.core.plans import PlanId
from shared.notices import delivery
from shared.notices.delivery import Notifier
from tests.app.test_functions_e2e import deliver, tick, write_event
from tests.notices.plans import SUPPORT, WEBHOOK_PATH, functions_env, ledger_rows, plan, plan_json, settings
from tests.notices.servers import (
    HttpsReceiver,
    SmtpServer,
    StoppableAzurite,
    TlsMaterial,
    azurite_connection_string,
    hung_server,
)

pytestmark = pytest.mark.integration

ERROR = {
    "action": "Update",
    "code": "SubnetInUse",
    "message": "The subnet 'labs' is in use by another lab plan.",
    "timestamp": "2026-11-23T09:00:00Z",
}
POLICY = "mode: enforce\nautoShutdown:\n  shutdownOnDisconnect: Enabled\n"


@pytest.fixture
def stoppable(tmp_path: Path) -> Iterator[StoppableAzurite]:
    service = StoppableAzurite(tmp_path / "azurite")
    service.start()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Try a down ledger again after 0.3 s instead of 30 s, so a test sees it come back."""
    monkeypatch.setattr(delivery, "LEDGER_RETRY_S", 0.3, raising=False)


@pytest.fixture
def emu() -> Iterator[Any]:
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
def app_env(
    emu: Any, env: dict[str, str], tls: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, str]]:
    """Point the real Functions app at the endpoint and every notice channel; ``overrides`` replace settings."""

    def configure(**overrides: str) -> dict[str, str]:
        values = functions_env(emu, env, tls.ca_file, tmp_path, POLICY, LABGUARD_SUPPORT_URL_HOSTS="", **overrides)
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        return values

    return configure


@pytest.fixture(autouse=True)
async def _close_runtimes() -> AsyncIterator[None]:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()


def failed_plan(emu: Any, name: str, error: dict[str, str] = ERROR) -> str:
    body = plan_json(state="Succeeded", with_error=False, support=SUPPORT, name=name)
    emu.put_plan(body)
    emu.fail_plan(body["id"], error)
    return str(body["id"])


def mails_about(smtp: SmtpServer, plan_name: str) -> int:
    return sum(1 for mail in smtp.messages if f"Lab plan {plan_name} failed" in str(mail.message["Subject"]))


async def sent_rows(connection: str, table: str, plan_id: str) -> list[str]:
    rows = await ledger_rows(connection, table, PlanId.parse(plan_id))
    return sorted(str(row["Channel"]) for row in rows if row["State"] == "sent")


# ---- item 3: a stopped ledger repeats nothing -------------------------------------------------------


async def test_a_stopped_ledger_repeats_no_notice_and_catches_up_when_it_returns(
    emu: Any,
    app_env: Callable[..., dict[str, str]],
    stoppable: StoppableAzurite,
    smtp: SmtpServer,
    receiver: HttpsReceiver,
    fast_retry: None,
) -> None:
    """The chaos run's finding: 5 copies of one notice over 3 sweeps and recovery. Now: one per channel."""
    values = app_env(AzureWebJobsStorage=stoppable.connection_string)
    table = values["LABGUARD_LEDGER_TABLE"]
    earlier = failed_plan(emu, "earlier-failure")
    await tick()  # ledger up: notified once, recorded
    assert mails_about(smtp, "earlier-failure") == 1

    stoppable.stop()  # Table storage unreachable
    during = failed_plan(emu, "failed-during-outage", {**ERROR, "code": "QuotaExceeded"})
    for _ in range(3):
        await tick()  # three sweeps during the outage
        await deliver(write_event(during))  # and events for the new failure
        await deliver(write_event(earlier))  # and, redelivered, for the earlier one
    assert mails_about(smtp, "earlier-failure") == 1  # already sent: never again
    assert mails_about(smtp, "failed-during-outage") == 1  # new: once, while the ledger is down
    assert len(receiver.to("/api/events")) == 2 and len(receiver.to(WEBHOOK_PATH)) == 2

    stoppable.start()  # the ledger returns (same tables, same port)
    await asyncio.sleep(0.4)  # past the retry pause
    await tick()  # the sweep writes the rows this worker owed, and sends nothing
    assert mails_about(smtp, "failed-during-outage") == 1 and mails_about(smtp, "earlier-failure") == 1
    assert await sent_rows(stoppable.connection_string, table, during) == [
        "email",
        "eventgrid",
        f"webhook:{_hook(receiver)}",
    ]

    # Another worker (a fresh runtime, empty memory) reads those rows: still nothing is sent again.
    from shared.runtime.runs import close_runtimes

    await close_runtimes()
    await tick()
    await deliver(write_event(during))
    assert mails_about(smtp, "failed-during-outage") == 1
    assert len(receiver.to("/api/events")) == 2 and len(receiver.to(WEBHOOK_PATH)) == 2


def _hook(receiver: HttpsReceiver) -> str:
    from shared.core.failures import failure_digest

    return f"localhost:{failure_digest(receiver.url(WEBHOOK_PATH))[:12]}"


async def test_a_worker_that_starts_during_the_outage_knows_what_the_ledger_said_before(
    env: dict[str, str], stoppable: StoppableAzurite, smtp: SmtpServer, fast_retry: None
) -> None:
    """A sweep's snapshot teaches the worker what was sent (by anyone): an outage after it repeats none of it."""
    failed = plan(support=SUPPORT)
    config = settings(env, AzureWebJobsStorage=stoppable.connection_string, LABGUARD_WEBHOOK_URLS="")
    async with Notifier.from_settings(config) as other_worker:
        await other_worker.notify_failure(failed)
    assert len(smtp.messages) == 1

    async with Notifier.from_settings(config) as worker:
        assert await worker.open_snapshot()  # the sweep's one query, before the outage
        stoppable.stop()
        for _ in range(3):
            outcome = await worker.notify_failure(failed)
            assert {r.status for r in outcome.results} == {"already-sent"}, outcome
            assert outcome.ledger_fault is not None
    assert len(smtp.messages) == 1


async def test_without_a_memory_of_it_each_worker_sends_a_failure_at_most_once_during_an_outage(
    env: dict[str, str], smtp: SmtpServer
) -> None:
    """The documented bound: a failure first seen during an outage reaches each channel once per worker."""
    dead = azurite_connection_string(_free_port())
    failed = plan(support=SUPPORT)
    config = settings(env, AzureWebJobsStorage=dead, LABGUARD_WEBHOOK_URLS="")
    for _worker in range(2):
        async with Notifier.from_settings(config) as worker:
            for _ in range(4):
                assert (await worker.notify_failure(failed)).all_delivered
    assert len(smtp.messages) == 2  # two workers, four attempts each: one copy per worker


def _free_port() -> int:
    from devtools.services import free_port

    return free_port()


def test_the_memory_is_bounded() -> None:
    from shared.notices.delivery import SentMemory

    memory = SentMemory(size=3)
    for n in range(10):
        memory.remember((f"p{n}", "row"))
    assert len(memory) == 3
    assert not memory.knows(("p0", "row")) and memory.knows(("p9", "row"))
    memory.knows(("p7", "row"))  # used: kept over p8
    memory.remember(("p10", "row"))
    assert memory.knows(("p7", "row")) and not memory.knows(("p8", "row"))


# ---- item 4: a hung ledger holds no invocation ----------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_hung_ledger_holds_an_event_for_seconds_not_minutes(
    emu: Any, app_env: Callable[..., dict[str, str]], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    async with hung_server() as port:
        app_env(AzureWebJobsStorage=azurite_connection_string(port), LABGUARD_NOTICE_WAIT_SECONDS="2")
        plan_id = failed_plan(emu, "hung-ledger")
        started = time.monotonic()
        await deliver(write_event(plan_id))
        took = time.monotonic() - started
        assert took < 15, took  # was 20 s x 3 tries x 3 calls; Event Grid gives up after 30 s
        assert mails_about(smtp, "hung-ledger") == 1
        started = time.monotonic()
        await tick()  # the sweep on the same worker: ledger still hung, nothing sent twice
        await deliver(write_event(plan_id))
        assert time.monotonic() - started < 15
        assert mails_about(smtp, "hung-ledger") == 1
        assert len(receiver.to("/api/events")) == 1


@pytest.mark.timeout(60)
async def test_a_notice_step_past_its_wait_is_acknowledged_and_the_next_sweep_sends_it_once(
    emu: Any, app_env: Callable[..., dict[str, str]], smtp: SmtpServer, receiver: HttpsReceiver
) -> None:
    app_env(LABGUARD_NOTICE_WAIT_SECONDS="1")
    plan_id = failed_plan(emu, "slow-channel")
    receiver.delays[WEBHOOK_PATH] = 2.5  # a webhook that answers slowly, then refuses
    receiver.answer(WEBHOOK_PATH, 503)
    started = time.monotonic()
    await deliver(write_event(plan_id))  # acknowledged: no RunFailed, so Event Grid does not redeliver
    assert time.monotonic() - started < 2.4
    await asyncio.sleep(2.5)  # the step finishes in the background: email sent, webhook refused
    assert mails_about(smtp, "slow-channel") == 1 and len(receiver.to(WEBHOOK_PATH)) == 1

    receiver.delays.clear()
    receiver.answer(WEBHOOK_PATH, 200)
    await tick()  # the sweep picks up what did not finish: the webhook, once
    await tick()
    assert len(receiver.to(WEBHOOK_PATH)) == 2 and receiver.answers[WEBHOOK_PATH][0] == 200
    assert mails_about(smtp, "slow-channel") == 1
    assert len(receiver.to("/api/events")) == 1


def test_the_notice_wait_is_a_setting_with_a_sane_default() -> None:
    from shared.errors import SettingsError
    from shared.runtime.settings import Settings

    assert Settings.from_env({}).notice_wait_s == 5
    assert Settings.from_env({"LABGUARD_NOTICE_WAIT_SECONDS": "12"}).notice_wait_s == 12
    for bad in ("0", "30", "soon"):  # past 25 s Event Grid (30 s) would redeliver before the answer
        with pytest.raises(SettingsError, match="LABGUARD_NOTICE_WAIT_SECONDS"):
            Settings.from_env({"LABGUARD_NOTICE_WAIT_SECONDS": bad})
