"""Fixtures of the chaos test: the notice servers (SMTP sink, HTTPS receiver, an Azurite that can be stopped).

The servers are the notice tests' own (:mod:`tests.notices.servers`); only the wiring is here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.notices.servers import (
    HttpsReceiver,
    SmtpServer,
    StoppableAzurite,
    TlsMaterial,
    https_receiver,
    make_tls,
    smtp_server,
)


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    return make_tls(tmp_path)


@pytest.fixture
async def smtp(tls: TlsMaterial) -> AsyncIterator[SmtpServer]:
    async with smtp_server(tls) as server:
        yield server


@pytest.fixture
async def receiver(tls: TlsMaterial) -> AsyncIterator[HttpsReceiver]:
    async with https_receiver(tls) as server:
        yield server


@pytest.fixture
def ledger_storage(tmp_path: Path) -> Iterator[StoppableAzurite]:
    """Azurite's Table service on disk and one port: the chaos run stops it for a while and starts it again."""
    service = StoppableAzurite(tmp_path / "azurite")
    service.start()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(autouse=True)
async def _close_runtimes() -> AsyncIterator[None]:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()
