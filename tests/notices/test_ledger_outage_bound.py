"""The README's bound for a ledger outage, for a worker that starts during it (found while checking the chaos run).

A worker that has not read the ledger before the outage (a restart, a scale-out) cannot know what was sent
before it: it sends each open failure it meets once more (never loses it), and only once however often it
meets it. The README says so; this keeps it true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.notices import delivery
from shared.notices.delivery import Notifier
from tests.notices.plans import SUPPORT, plan, settings
from tests.notices.servers import SmtpServer, StoppableAzurite

pytestmark = pytest.mark.integration


@pytest.fixture
def stoppable(tmp_path: Path) -> Iterator[StoppableAzurite]:
    service = StoppableAzurite(tmp_path / "azurite")
    service.start()
    try:
        yield service
    finally:
        service.close()


async def test_a_worker_started_during_the_outage_repeats_an_earlier_notice_once_at_most(
    env: dict[str, str], stoppable: StoppableAzurite, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "LEDGER_RETRY_S", 0.3)
    failed = plan(support=SUPPORT)
    config = settings(env, AzureWebJobsStorage=stoppable.connection_string, LABGUARD_WEBHOOK_URLS="")
    async with Notifier.from_settings(config) as before_the_outage:
        assert (await before_the_outage.notify_failure(failed)).all_delivered
    assert len(smtp.messages) == 1

    stoppable.stop()
    async with Notifier.from_settings(config) as started_during_it:  # has never read the ledger
        for _ in range(4):
            assert (await started_during_it.notify_failure(failed)).all_delivered
    assert len(smtp.messages) == 2  # the documented repeat: one more copy for this worker, not one per attempt
