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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- SMTP


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    login: str | None

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class SmtpRecorder:
    username: str
    password: str
    messages: list[ReceivedMail] = field(default_factory=list)
    fail_data_with: str | None = None  # e.g. "451 4.3.0 Try again later"
    reject_rcpt: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            self.logins.append(login)
            ok = login == self.username and auth_data.password.decode() == self.password
            return AuthResult(success=ok, handled=False, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.reject_rcpt:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_data_with:
            return self.fail_data_with
        raw = envelope.original_content or b""
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self.messages.append(ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), raw, login))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: SmtpRecorder

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.recorder.messages

    def settings(self) -> dict[str, str]:
        return {
            "LABGUARD_SMTP_HOST": self.host,
            "LABGUARD_SMTP_PORT": str(self.port),
            "LABGUARD_SMTP_USERNAME": self.recorder.username,
            "LABGUARD_SMTP_PASSWORD": self.recorder.password,
        }


@contextlib.asynccontextmanager
async def smtp_server(
    tls: TlsMaterial, *, username: str = "labguard@school.example", password: str = "smtp-Pa55word!"
) -> AsyncIterator[SmtpServer]:
    """aiosmtpd in the running loop (the client runs in a worker thread), STARTTLS + AUTH required."""
    recorder = SmtpRecorder(username, password)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(
            recorder,
            hostname="localhost",
            tls_context=tls.server_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=recorder.authenticate,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield SmtpServer("localhost", port, recorder)
    finally:
        server.close()
        await server.wait_closed()


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
    from labguard.services import Azurite as Service

    return Service(port).connection_string


@contextlib.contextmanager
def azurite(workdir: Path, *, startup_timeout: float = 30.0) -> Iterator[Azurite]:
    """Azurite's Table service (in memory) on a free loopback port, started as the demo starts it."""
    from labguard.services import AzuriteStarting, Children, ServiceError

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
