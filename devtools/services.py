"""The local services ``make demo`` runs: the Lab Services endpoint, Azurite and an SMTP sink.

Child processes start in their own session (so a terminal's Ctrl-C reaches the demo, which stops
them in order) and, on Linux, with a parent-death signal, so even a demo killed with SIGKILL leaves
nothing behind. :class:`Children` stops each process group it started, by its id, and nothing else.

These are development tools: they need the dev requirements (trustme, aiosmtpd) and Azurite from
``npm ci``, which ``make demo`` installs first.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any, Protocol

from shared.runtime.runs import APP_ROOT

AZURITE_TABLE = APP_ROOT / "node_modules" / ".bin" / "azurite-table"
# Azurite's documented development account key (public; it only opens the local emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STARTUP_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A local service could not start; the message says what to do (one line)."""


# ------------------------------------------------------------------------------------ child processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the demo dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Children:
    """The processes the demo started; :meth:`stop_all` ends each one's process group, newest first."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, argv: list[str], *, log: IO[bytes], stdout: int | IO[bytes] | None = None, **kw: Any) -> Any:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # set before any thread of ours starts
            **kw,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in reversed(self.procs):
            stop_process(proc, timeout)
        self.procs.clear()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the child's process group (its own session), then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    # The group may hold a grandchild that outlived its leader: end it too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------ the Lab Services endpoint


@dataclass(frozen=True)
class Endpoint:
    endpoint: str
    ca_file: str
    tenant_id: str
    authority: str


class EmulatorStarting:
    """``python -m emulator --port 0 --state SEED`` started; :meth:`ready` waits for its one JSON line."""

    def __init__(self, children: Children, seed: Path, workdir: Path) -> None:
        self._log = (workdir / "emulator.log").open("wb")
        self.proc = children.spawn(
            [sys.executable, "-m", "emulator", "--port", "0", "--state", str(seed)],
            log=self._log,
            stdout=subprocess.PIPE,
            cwd=APP_ROOT,
        )

    def ready(self, timeout: float = STARTUP_TIMEOUT_S) -> Endpoint:
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([stream], [], [], 0.1)
            if readable:
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        if not line.endswith(b"\n"):
            raise ServiceError(
                f"the local Lab Services endpoint did not start (see {self._log.name}); run `make demo` from the repo"
            )
        first, _, rest = line.partition(b"\n")
        info = json.loads(first)
        self._log.write(rest)
        threading.Thread(target=_drain, args=(stream, self._log), daemon=True).start()
        config = _get_json(f"{info['endpoint']}/_emulator/config", info["ca_file"])
        return Endpoint(info["endpoint"], info["ca_file"], config["tenant_id"], config["authority"])


def _drain(stream: IO[bytes], log: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
            log.write(chunk)


def _get_json(url: str, ca_file: str) -> Any:
    import urllib.request

    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, context=context, timeout=10) as response:  # noqa: S310 - https only
        return json.loads(response.read())


# ------------------------------------------------------------------------------------ Azurite


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )


class AzuriteStarting:
    """Azurite's Table service, in memory, on a free loopback port; :meth:`ready` waits until it listens."""

    def __init__(self, children: Children, workdir: Path) -> None:
        if not AZURITE_TABLE.exists():
            raise ServiceError(
                f"Azurite is not installed ({AZURITE_TABLE} is missing): run `make demo`, it runs npm ci"
            )
        if shutil.which("node") is None:
            raise ServiceError("Node.js is not on PATH and Azurite needs it: install Node.js 18+, then `make demo`")
        self._children = children
        self._workdir = workdir
        self._log_path = workdir / "azurite.log"
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        with self._log_path.open("ab") as log:
            self.proc = self._children.spawn(
                [
                    str(AZURITE_TABLE),
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    str(self.port),
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ],
                log=log,
                cwd=self._workdir,
                env={**os.environ, "AZURITE_ACCEPT_EULA": "true"},
            )

    def ready(self, timeout: float = STARTUP_TIMEOUT_S) -> Azurite:
        for _attempt in range(3):  # the free port can be taken before Azurite binds it
            if wait_listening(self.proc, self.port, timeout):
                return Azurite(self.port)
            stop_process(self.proc)
            self._start()
        tail = self._log_path.read_text(errors="replace")[-300:].strip().replace("\n", " ")
        raise ServiceError(f"Azurite did not start on 127.0.0.1 ({tail}); run `make demo` again")


# ------------------------------------------------------------------------------------ TLS and the SMTP sink


@dataclass(frozen=True)
class Tls:
    ca_file: str
    server_context: ssl.SSLContext


def make_tls(directory: Path) -> Tls:
    """A throwaway CA (trustme) and a certificate for localhost, for the SMTP sink's STARTTLS."""
    import trustme

    ca = trustme.CA(organization_name="labguard demo throwaway CA")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = directory / "smtp-sink-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return Tls(str(ca_file), context)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())

    def text(self) -> str:
        return self.body("plain")


class ServerTls(Protocol):
    @property
    def server_context(self) -> ssl.SSLContext: ...


@dataclass
class SmtpSink:
    """What the sink received, and two switches the tests use to play a relay having a bad day."""

    host: str
    port: int
    username: str
    password: str
    messages: list[Mail] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    fail_data_with: str | None = None  # answer DATA with this, e.g. "451 4.3.0 Try again later"
    reject_rcpt: set[str] = field(default_factory=set)  # answer RCPT for these with 550

    @property
    def recorder(self) -> SmtpSink:  # the tests' name for the switches
        return self

    def settings(self) -> dict[str, str]:
        """The app settings that point labguard at this sink."""
        return {
            "LABGUARD_SMTP_HOST": self.host,
            "LABGUARD_SMTP_PORT": str(self.port),
            "LABGUARD_SMTP_USERNAME": self.username,
            "LABGUARD_SMTP_PASSWORD": self.password,
        }


@contextlib.asynccontextmanager
async def smtp_sink(
    tls: ServerTls,
    *,
    username: str = "labguard@school.example",
    password: str = "demo-only-Pa55word",  # noqa: S107
) -> AsyncIterator[SmtpSink]:
    """aiosmtpd on 127.0.0.1 in the running loop, requiring STARTTLS and AUTH, keeping every message."""
    import asyncio

    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

    loop = asyncio.get_running_loop()
    sink = SmtpSink("localhost", 0, username, password)

    class Handler:
        def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> Any:
            if isinstance(data, LoginPassword):
                login = data.login.decode()
                sink.logins.append(login)
                ok = login == username and data.password.decode() == password
                return AuthResult(success=ok, handled=False, auth_data=login)
            return AuthResult(success=False, handled=False)

        async def handle_RCPT(
            self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
        ) -> str:
            if address.lower() in sink.reject_rcpt:
                return "550 5.1.1 No such user here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            if sink.fail_data_with:
                return sink.fail_data_with
            login = session.auth_data if isinstance(session.auth_data, str) else None
            raw = envelope.original_content or b""
            tls_on = session.ssl is not None
            sink.messages.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), raw, login, tls_on))
            return "250 Message accepted for delivery"

    handler = Handler()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=tls.server_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=handler.authenticate,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    sink.port = int(server.sockets[0].getsockname()[1])
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


def combined_bundle(directory: Path, *pem_files: str) -> str:
    """One PEM holding every throwaway CA (LABGUARD_CA_BUNDLE takes one file)."""
    path = directory / "demo-ca-bundle.pem"
    path.write_text("".join(Path(p).read_text(encoding="ascii") for p in pem_files), encoding="ascii")
    return str(path)


def on_signal(handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """Install ``handler`` for SIGTERM (and SIGHUP); returns a function restoring the previous ones."""
    saved = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            saved[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in saved.items():
            signal.signal(sig, previous)

    return restore
