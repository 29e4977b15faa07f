"""Email channel: failure notices over SMTP with STARTTLS and login (campus relay, Office 365).

smtplib is blocking, so the whole conversation runs in a worker thread (:func:`asyncio.to_thread`).
TLS is mandatory: port 465 uses implicit TLS, any other port must offer STARTTLS, otherwise nothing
(neither the password nor the notice) is sent. Recipients are supportInfo.email when it holds valid
addresses, else ``LABGUARD_FALLBACK_EMAIL``; if the server refuses every support address, the notice
goes to the fallback instead, so no notice is dropped silently.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid

from shared.core.text import clean_line
from shared.edge.tls import ssl_context
from shared.errors import DeliveryError
from shared.notices.changer_claims import is_valid_address
from shared.notices.message import Notice

TIMEOUT_SECONDS = 30
IMPLICIT_TLS_PORT = 465
# RFC 5322 allows 998-character lines: ARM ids stay readable in headers instead of RFC 2047 chunks.
# 7bit: non-ASCII bodies go quoted-printable, so no relay needs 8BITMIME.
_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")
MAIL_POLICY = _POLICY  # also the changer mail's (shared.notices.changer)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    mail_from: str | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    fallback_email: str | None = None
    ca_bundle: str | None = None
    timeout: float = TIMEOUT_SECONDS

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Recipients:
    to: tuple[str, ...]
    note: str | None  # why the reader got it, shown at the top of the notice


def choose_recipients(notice: Notice, fallback: str | None) -> Recipients:
    if notice.admin_reason:  # labguard's own failure: the admin's address only, never the plan's contacts
        if fallback and is_valid_address(fallback):
            return Recipients((fallback,), f"For the labguard admin: {notice.admin_reason}.")
        raise DeliveryError("LABGUARD_FALLBACK_EMAIL is not set to a valid address: no admin address to send to")
    if notice.recipients:
        return Recipients(notice.recipients, None)
    if fallback and is_valid_address(fallback):
        why = (
            f"supportInfo.email ({notice.support_email!r}) is not a valid address"
            if notice.support_email
            else "the plan has no supportInfo.email"
        )
        return Recipients((fallback,), f"You receive this notice because {why}. Please pass it to the plan's owners.")
    raise DeliveryError(
        "the plan has no valid supportInfo.email and LABGUARD_FALLBACK_EMAIL is not set to a valid address"
    )


def build_message(
    notice: Notice, *, mail_from: str, recipients: Recipients, correlation_id: str | None = None
) -> EmailMessage:
    """A multipart/alternative message; header values are cleaned single lines, never raw ARM text."""
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = notice.subject
    msg["From"] = mail_from
    msg["To"] = ", ".join(recipients.to)
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = mail_from.rpartition("@")[2] or "labguard.invalid"
    msg["Message-ID"] = make_msgid(idstring="labguard", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office loops
    msg["X-Labguard-Plan-Id"] = notice.plan_id.path
    msg["X-Labguard-Failure"] = notice.digest
    msg.set_content(notice.text(note=recipients.note, correlation_id=correlation_id))
    msg.add_alternative(notice.html(note=recipients.note, correlation_id=correlation_id), subtype="html")
    return msg


def _send_blocking(config: SmtpConfig, msg: EmailMessage, to: tuple[str, ...]) -> None:
    """One SMTP conversation. Raises smtplib/ssl/OSError exceptions; the caller turns them into safe text."""
    ctx: ssl.SSLContext = ssl_context(config.ca_bundle)
    client: smtplib.SMTP
    if config.port == IMPLICIT_TLS_PORT:
        client = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=ctx)
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with client:
        client.ehlo()
        if config.port != IMPLICIT_TLS_PORT:
            if not client.has_extn("starttls"):
                raise DeliveryError(
                    f"{config.where} does not offer STARTTLS; labguard never sends notices or passwords in clear text"
                )
            client.starttls(context=ctx)
            client.ehlo()
        if config.username:
            client.login(config.username, config.password or "")
        assert config.mail_from is not None
        client.send_message(msg, from_addr=config.mail_from, to_addrs=list(to))


def _describe(exc: BaseException, config: SmtpConfig) -> str:
    """Safe text for a failed conversation: server replies are kept, the password never appears."""
    if isinstance(exc, DeliveryError):
        text = str(exc)
    elif isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{config.where} refused the login for {config.username!r}: {exc.smtp_code}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = f"{config.where} refused every recipient: " + "; ".join(
            f"{addr} ({code})" for addr, (code, _msg) in exc.recipients.items()
        )
    elif isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        text = f"{config.where} answered {exc.smtp_code} {reply}"
    elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
        text = f"TLS with {config.where} failed: {type(exc).__name__}: {exc}"
    elif isinstance(exc, socket.timeout | TimeoutError):
        text = f"{config.where} did not answer within {config.timeout:g} s"
    elif isinstance(exc, OSError | smtplib.SMTPException):
        text = f"cannot deliver through {config.where}: {type(exc).__name__}: {exc}"
    else:
        text = f"cannot deliver through {config.where}: {type(exc).__name__}"
    if config.password:
        text = text.replace(config.password, "***")
    return clean_line(text, 500)


async def send_notice(config: SmtpConfig, notice: Notice, *, correlation_id: str | None = None) -> str:
    """Send one notice; returns a safe detail naming the recipients, raises DeliveryError on failure."""
    if not config.mail_from or not is_valid_address(config.mail_from):
        raise DeliveryError("LABGUARD_MAIL_FROM is not set to a valid address")
    recipients = choose_recipients(notice, config.fallback_email)
    msg = build_message(notice, mail_from=config.mail_from, recipients=recipients, correlation_id=correlation_id)
    try:
        await asyncio.to_thread(_send_blocking, config, msg, recipients.to)
    except smtplib.SMTPRecipientsRefused as exc:
        fallback = config.fallback_email
        if recipients.note is not None or not fallback or not is_valid_address(fallback):
            raise DeliveryError(_describe(exc, config)) from None
        refused = _describe(exc, config)
        rerouted = Recipients(
            (fallback,),
            f"You receive this notice because the mail server refused the plan's support address "
            f"({', '.join(recipients.to)}). Please pass it to the plan's owners.",
        )
        msg = build_message(notice, mail_from=config.mail_from, recipients=rerouted, correlation_id=correlation_id)
        try:
            await asyncio.to_thread(_send_blocking, config, msg, rerouted.to)
        except Exception as again:
            raise DeliveryError(f"{refused}; fallback failed too: {_describe(again, config)}") from None
        return f"sent to fallback {fallback} via {config.where} ({refused})"
    except Exception as exc:
        raise DeliveryError(_describe(exc, config)) from None
    kind = "fallback " if recipients.note else ""
    return f"sent to {kind}{', '.join(recipients.to)} via {config.where}"


async def send_message(config: SmtpConfig, msg: EmailMessage, to: tuple[str, ...]) -> None:
    """Send a message built elsewhere (the daily digest) over the same TLS-only conversation.

    Raises DeliveryError with safe text on failure."""
    try:
        await asyncio.to_thread(_send_blocking, config, msg, to)
    except Exception as exc:
        raise DeliveryError(_describe(exc, config)) from None
