"""Real local servers for notice tests, reusable by end-to-end tests (``from tests.notices.servers import ...``).

* :func:`make_tls` - a trustme CA and a server certificate for ``localhost`` / ``127.0.0.1``; the CA
  PEM file is what ``LABGUARD_CA_BUNDLE`` points at.
* :func:`smtp_server` - aiosmtpd on 127.0.0.1 (port chosen by the OS) requiring STARTTLS and AUTH
  (``auth_require_tls``); records every message it accepts; can be told to refuse (451) or to
  reject recipients (550) to simulate an outage.
* :func:`https_receiver` - an aiohttp HTTPS server on 127.0.0.1 recording every request (path,
  query, headers, body); per-path canned answers (status, Location) simulate outages and redirects.
* :func:`azurite` - Azurite's Table service from ``node_modules`` (installed by ``make test``) on a
  free loopback port, in-memory; yields the connection string, stops the process on exit.
* :class:`StoppableAzurite` - Azurite on disk on a fixed port, stopped and started again by a test
  (a ledger outage); :func:`hung_server` - a TCP server that accepts and never answers (a hung ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from devtools.services import Mail, SmtpSink, smtp_sink

ROOT = Path(__file__).resolve().parents[2]
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"


# ----------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsMaterial:
    ca: trustme.CA
    ca_file: str  # LABGUARD_CA_BUNDLE
    server_context: ssl.SSLContext


def make_tls(directory: Path) -> TlsMaterial:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return TlsMaterial(ca, str(ca_file), ctx)


# ----------------------------------------------------------------------------- SMTP


# The SMTP server is the demo's sink (devtools.services): one implementation, with switches for outages.
ReceivedMail = Mail
SmtpServer = SmtpSink


def smtp_server(
    tls: TlsMaterial, *, username: str = "labguard@school.example", password: str = "smtp-Pa55word!"
) -> contextlib.AbstractAsyncContextManager[SmtpSink]:
    """aiosmtpd in the running loop (the client runs in a worker thread), STARTTLS + AUTH required."""
    return smtp_sink(tls, username=username, password=password)


# ----------------------------------------------------------------------------- HTTPS receiver


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpsReceiver:
    base_url: str
    port: int
    hits: list[Hit] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds to wait before answering

    def url(self, path: str) -> str:
        return self.base_url + path

    def to(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def answer(self, path: str, status: int = 200, **headers: str) -> None:
        """Answer requests to ``path`` with ``status`` (and headers such as Location) from now on."""
        self.answers[path] = (status, dict(headers))


@contextlib.asynccontextmanager
async def https_receiver(tls: TlsMaterial) -> AsyncIterator[HttpsReceiver]:
    """Records every request; answers 200 unless told otherwise with :meth:`HttpsReceiver.answer`."""
    receiver: HttpsReceiver | None = None

    async def handle(request: web.Request) -> web.Response:
        assert receiver is not None
        body = await request.read()
        receiver.hits.append(
            Hit(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        await asyncio.sleep(receiver.delays.get(request.path, 0.0))
        status, headers = receiver.answers.get(request.path, (200, {}))
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context)
    await site.start()
    port = int(runner.addresses[0][1])
    receiver = HttpsReceiver(f"https://localhost:{port}", port)
    try:
        yield receiver
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------- Azurite


@dataclass(frozen=True)
class Azurite:
    port: int
    connection_string: str


def azurite_connection_string(port: int) -> str:
    from devtools.services import Azurite as Service

    return Service(port).connection_string


@contextlib.contextmanager
def azurite(workdir: Path, *, startup_timeout: float = 30.0) -> Iterator[Azurite]:
    """Azurite's Table service (in memory) on a free loopback port, started as the demo starts it."""
    from devtools.services import AzuriteStarting, Children, ServiceError

    if not AZURITE_TABLE.exists():
        pytest.fail(
            f"Azurite is not installed ({AZURITE_TABLE} is missing). Run `make test`: it installs the npm "
            "dev services (npm ci) before running pytest.",
            pytrace=False,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        try:
            service = AzuriteStarting(children, workdir).ready(startup_timeout)
        except ServiceError as exc:
            pytest.fail(f"{exc} (Run `make test`: it installs Azurite with npm ci.)", pytrace=False)
        yield Azurite(service.port, service.connection_string)
    finally:
        children.stop_all()


class StoppableAzurite:
    """Azurite's Table service on disk and on one port, so a test can stop it (an outage) and start it again
    with its tables intact. Started and stopped by process id, as the demo does (:mod:`devtools.services`)."""

    def __init__(self, workdir: Path) -> None:
        from devtools.services import Azurite as Service
        from devtools.services import Children, free_port

        if not AZURITE_TABLE.exists():
            pytest.fail(f"Azurite is not installed ({AZURITE_TABLE} is missing). Run `make test`.", pytrace=False)
        self._workdir = workdir
        self._children = Children()
        self.port = free_port()
        self.connection_string = Service(self.port).connection_string
        self.proc: Any = None

    def start(self, timeout: float = 30.0) -> None:
        import os

        from devtools.services import wait_listening

        self._workdir.mkdir(parents=True, exist_ok=True)
        with (self._workdir / "azurite.log").open("ab") as log:
            self.proc = self._children.spawn(
                [
                    str(AZURITE_TABLE),
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    str(self.port),
                    "--location",
                    str(self._workdir),
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ],
                log=log,
                cwd=self._workdir,
                env={**os.environ, "AZURITE_ACCEPT_EULA": "true"},
            )
        if not wait_listening(self.proc, self.port, timeout):
            pytest.fail(f"Azurite did not start on port {self.port} (see {self._workdir / 'azurite.log'})")

    def stop(self) -> None:
        """Ctrl-C (SIGINT: Azurite saves its tables and closes), then the demo's stop for anything left."""
        import os
        import signal
        import subprocess

        from devtools.services import stop_process

        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            stop_process(self.proc)
            self._children.procs.remove(self.proc)
            self.proc = None

    def close(self) -> None:
        self._children.stop_all()


@contextlib.asynccontextmanager
async def hung_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never answers (a hung Table endpoint)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in held:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
