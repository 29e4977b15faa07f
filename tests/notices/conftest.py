"""Fixtures for notice tests: a trustme CA, aiosmtpd (STARTTLS + AUTH), an HTTPS receiver, Azurite.

The servers themselves live in :mod:`tests.notices.servers` so end-to-end tests can reuse them.
Azurite starts once per session (a second or two); each test gets its own ledger table.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from shared.notices.ledger import Ledger
from tests.notices.plans import TOPIC_KEY, WEBHOOK_PATH
from tests.notices.servers import (
    Azurite,
    HttpsReceiver,
    SmtpServer,
    TlsMaterial,
    azurite,
    https_receiver,
    make_tls,
    smtp_server,
)


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def azurite_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with azurite(tmp_path_factory.mktemp("azurite")) as service:
        yield service


@pytest.fixture
async def smtp(tls: TlsMaterial) -> AsyncIterator[SmtpServer]:
    async with smtp_server(tls) as server:
        yield server


@pytest.fixture
async def receiver(tls: TlsMaterial) -> AsyncIterator[HttpsReceiver]:
    async with https_receiver(tls) as server:
        yield server


@pytest.fixture
def table_name() -> str:
    return "notices" + uuid.uuid4().hex[:16]


@pytest.fixture
def new_ledger(azurite_table: Azurite, table_name: str) -> Callable[[], Ledger]:
    """A fresh client on this test's table (one per Notifier: a Notifier closes its ledger)."""

    def make() -> Ledger:
        return Ledger.from_connection_string(azurite_table.connection_string, table_name, retry_total=0)

    return make


@pytest.fixture
def env(
    tls: TlsMaterial, smtp: SmtpServer, receiver: HttpsReceiver, azurite_table: Azurite, table_name: str
) -> dict[str, str]:
    """App settings with every channel on, as an admin would write them."""
    return {
        "LABGUARD_CA_BUNDLE": tls.ca_file,
        **smtp.settings(),
        "LABGUARD_MAIL_FROM": "labguard@school.example",
        "LABGUARD_FALLBACK_EMAIL": "it-helpdesk@school.example",
        "LABGUARD_EVENTGRID_TOPIC_ENDPOINT": receiver.url("/api/events"),
        "LABGUARD_EVENTGRID_TOPIC_KEY": TOPIC_KEY,
        "LABGUARD_WEBHOOK_URLS": receiver.url(WEBHOOK_PATH),
        "LABGUARD_SUPPORT_URL_HOSTS": f"localhost:{receiver.port}",
        "LABGUARD_LEDGER_TABLE": table_name,
        "AzureWebJobsStorage": azurite_table.connection_string,
    }
