"""Sends the daily digest (:mod:`shared.core.digest`) once per day, through the notices' SMTP relay and ledger.

The ledger table of the notices gets one row per day (``PartitionKey`` ``labguard-digest``, ``RowKey``
the UTC date). As for notices, the row is claimed (an insert that fails if it exists) before sending
and marked ``sent`` after the relay accepted the mail; a failed send deletes the claim so the next
sweep retries; a claim older than the lease (a crashed run) is taken over with its ETag. The sent row
keeps the item keys, so the next day's digest knows what is new. No ledger, no digest: without it
labguard could not keep "once a day". Marking the row ``sent`` is tried a few times; if it still fails,
this process remembers the day (so it never takes over its own claim and sends again) and marks the row
on its next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

from shared.core.digest import Digest, build_digest
from shared.notices.email import SmtpConfig, send_message
from shared.notices.ledger import STORAGE_SETTINGS, open_table
from shared.runtime.logs import record
from shared.runtime.settings import Settings

log = logging.getLogger("labguard.digest")
PARTITION = "labguard-digest"
CLAIM_LEASE = timedelta(minutes=10)
MAX_KEYS_KEPT = 1500  # 21 characters each: well inside a table property's 64 KiB
_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")
MARK_SENT_ATTEMPTS = 3
MARK_SENT_PAUSE_S = 0.5
#: Days this process has sent a digest for, by (ledger table, recipient, day): the row to mark ``sent``.
_SENT_HERE: dict[tuple[str, str, str], dict[str, Any]] = {}

Status = Literal["off", "no-ledger", "nothing-new", "already-sent", "in-flight", "sent", "failed"]


@dataclass(frozen=True)
class DigestResult:
    status: Status
    detail: str = ""
    items: int = 0
    new: int = 0


def build_message(digest: Digest, *, mail_from: str, to: str) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = digest.subject
    msg["From"] = mail_from
    msg["To"] = to
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(
        idstring="labguard-digest", domain=mail_from.rpartition("@")[2] or "labguard.invalid"
    )
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Labguard-Digest"] = digest.day.isoformat()
    msg.set_content(digest.text())
    msg.add_alternative(digest.html(), subtype="html")
    return msg


async def send_daily_digest(
    settings: Settings, snapshot: dict[str, Any], *, now: datetime | None = None
) -> DigestResult:
    """Send today's digest if something is new and it was not sent today. Never raises."""
    if not settings.digest_email:
        return DigestResult("off")
    has_storage = bool(settings.storage_connection or settings.ledger_table_endpoint)
    if not has_storage or not settings.smtp_host or not settings.mail_from:
        missing = STORAGE_SETTINGS if not has_storage else "LABGUARD_SMTP_HOST / LABGUARD_MAIL_FROM"
        record(log, logging.WARNING, "digest.unsent", reason=f"{missing} is not set")
        return DigestResult("no-ledger", f"{missing} is not set")
    now = now or datetime.now(UTC)
    try:
        return await _send(settings, snapshot, now)
    except Exception as exc:
        log.exception("traceback of the digest failure")
        record(log, logging.ERROR, "digest.failed", error=type(exc).__name__, day=now.date().isoformat())
        return DigestResult("failed", type(exc).__name__)


async def _send(settings: Settings, snapshot: dict[str, Any], now: datetime) -> DigestResult:
    assert settings.digest_email is not None
    opened = open_table(settings, settings.ledger_table)
    assert opened is not None  # checked by the caller
    table, credential = opened
    try:
        return await _send_with(table, settings, snapshot, now, now.astimezone(UTC).date())
    finally:
        try:
            await table.close()
        finally:
            if credential is not None:
                await credential.close()


async def _send_with(
    table: Any, settings: Settings, snapshot: dict[str, Any], now: datetime, day: date
) -> DigestResult:
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )
    from azure.data.tables import UpdateMode

    assert settings.digest_email is not None
    sent_here = (settings.ledger_table, settings.digest_email.lower(), day.isoformat())
    if sent_here in _SENT_HERE:  # the relay took it, the ledger may not know yet: never take over our own claim
        if await _mark_sent(table, _SENT_HERE[sent_here], day):
            _SENT_HERE[sent_here] = {}
        return DigestResult("already-sent", day.isoformat())
    with contextlib.suppress(ResourceExistsError):
        await table.create_table()
    existing: Any = None
    try:
        existing = await table.get_entity(PARTITION, day.isoformat())
    except ResourceNotFoundError:
        existing = None
    if existing is not None and existing.get("State") == "sent":
        return DigestResult("already-sent", day.isoformat())
    claimed_at = existing.get("ClaimedAt") if existing is not None else None
    if isinstance(claimed_at, datetime) and now - claimed_at.replace(tzinfo=claimed_at.tzinfo or UTC) < CLAIM_LEASE:
        return DigestResult("in-flight", day.isoformat())

    previous = await _previous_keys(table, day.isoformat())
    digest = build_digest(snapshot, day, previous)
    if digest is None:
        record(log, logging.INFO, "digest.nothing-new", day=day.isoformat())
        return DigestResult("nothing-new", day.isoformat())

    entity = {"PartitionKey": PARTITION, "RowKey": day.isoformat(), "State": "pending", "ClaimedAt": now}
    try:
        if existing is None:
            meta = await table.create_entity(entity)
        else:
            meta = await table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=existing.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
    except (ResourceExistsError, ResourceModifiedError):
        return DigestResult("in-flight", day.isoformat())

    config = SmtpConfig(
        host=settings.smtp_host or "",
        port=settings.smtp_port,
        mail_from=settings.mail_from,
        username=settings.smtp_username,
        password=settings.smtp_password,
        ca_bundle=settings.ca_bundle,
    )
    msg = build_message(digest, mail_from=settings.mail_from or "", to=settings.digest_email)
    try:
        await send_message(config, msg, (settings.digest_email,))
    except Exception as exc:
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await table.delete_entity(
                PARTITION, day.isoformat(), etag=meta["etag"], match_condition=MatchConditions.IfNotModified
            )
        record(log, logging.ERROR, "digest.failed", day=day.isoformat(), error=str(exc)[:300])
        return DigestResult("failed", str(exc)[:300], len(digest.items), len(digest.new))
    sent_row = {
        "PartitionKey": PARTITION,
        "RowKey": day.isoformat(),
        "State": "sent",
        "SentAt": datetime.now(UTC),
        "Items": json.dumps(digest.keys[:MAX_KEYS_KEPT]),
        "ItemCount": len(digest.items),
        "NewCount": len(digest.new),
        "To": settings.digest_email,
    }
    _SENT_HERE[sent_here] = sent_row
    if await _mark_sent(table, sent_row, day):
        _SENT_HERE[sent_here] = {}
    record(log, logging.INFO, "digest.sent", day=day.isoformat(), items=len(digest.items), new=len(digest.new))
    return DigestResult("sent", settings.digest_email, len(digest.items), len(digest.new))


async def _mark_sent(table: Any, row: dict[str, Any], day: date) -> bool:
    """Mark the day's row ``sent`` (a few tries); False, with a ``digest.unmarked`` record, if it still fails."""
    if not row:  # already marked
        return True
    from azure.data.tables import UpdateMode

    error = ""
    for attempt in range(1, MARK_SENT_ATTEMPTS + 1):
        try:
            await table.upsert_entity(row, mode=UpdateMode.MERGE)
            return True
        except Exception as exc:
            error = type(exc).__name__
            if attempt < MARK_SENT_ATTEMPTS:
                await asyncio.sleep(MARK_SENT_PAUSE_S * attempt)
    record(
        log,
        logging.ERROR,
        "digest.unmarked",
        day=day.isoformat(),
        error=error,
        attempts=MARK_SENT_ATTEMPTS,
        note="the digest was sent; this process will not send it again and marks the row on its next sweep",
    )
    return False


async def _previous_keys(table: Any, today: str) -> frozenset[str]:
    """The item keys of the latest digest sent before today (empty when there was none)."""
    latest: tuple[str, str] | None = None
    async for entity in table.query_entities(
        "PartitionKey eq @pk and RowKey lt @today and State eq 'sent'",
        parameters={"pk": PARTITION, "today": today},
        select=["RowKey", "Items"],
    ):
        key = str(entity["RowKey"])
        if latest is None or key > latest[0]:
            latest = (key, str(entity.get("Items") or "[]"))
    if latest is None:
        return frozenset()
    try:
        keys = json.loads(latest[1])
    except ValueError:
        return frozenset()
    return frozenset(str(k) for k in keys) if isinstance(keys, list) else frozenset()
