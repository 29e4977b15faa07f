"""What a timer sweep leaves behind besides its log records: the change log, the page, the digest.

After each sweep (:func:`shared.runtime.runs.on_timer`): the plans labguard fixed go into the change log
(:mod:`shared.runtime.changes`); with ``LABGUARD_REPORT_CONTAINER`` set, the compliance snapshot is written as
``latest.json`` and the page as ``latest.html`` to that blob container (with the app's identity when
``LABGUARD_REPORT_ACCOUNT_URL`` is set, else through ``AzureWebJobsStorage``); with
``LABGUARD_DIGEST_EMAIL`` set, the daily digest goes out (:mod:`shared.notices.digest`). None of
these fails the sweep: each fault is one log record, and the next sweep tries again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.core.labs import is_lab_outcome
from shared.core.report_html import render_html
from shared.core.rules import Policy
from shared.core.snapshot import CHANGES_WINDOW_DAYS, Change, LabEntry, NoticeState, PlanEntry, build_snapshot
from shared.notices.digest import DigestResult, send_daily_digest
from shared.notices.ledger import STORAGE_SETTINGS
from shared.runtime.changes import ChangeLog, record_changes
from shared.runtime.logs import record
from shared.runtime.settings import Settings

log = logging.getLogger("labguard.outputs")
SNAPSHOT_BLOB = "latest.json"
PAGE_BLOB = "latest.html"


@dataclass(frozen=True)
class OutputsResult:
    changes_recorded: int
    published: tuple[str, ...]
    digest: DigestResult | None


def wanted(settings: Settings) -> bool:
    """Whether a sweep needs to keep its outcomes (the page or the digest is switched on)."""
    return bool(settings.report_container or settings.digest_email)


def notice_state(notice: Any) -> NoticeState | None:
    """A :class:`shared.notices.delivery.NoticeOutcome` as the page shows it."""
    results = getattr(notice, "results", None)
    if results is None:
        return None
    return NoticeState(
        sent=tuple(r.channel for r in results if r.status in ("sent", "already-sent")),
        failed=tuple(r.channel for r in results if r.status == "failed"),
    )


def entries_of(outcomes: Sequence[Any]) -> list[PlanEntry]:
    """The plans' outcomes as the snapshot takes them (labs: :func:`lab_entries_of`)."""
    entries = []
    for outcome in outcomes:
        if is_lab_outcome(outcome):
            continue
        notice = _notice(outcome)
        entries.append(PlanEntry(outcome.plan_id, outcome.status, outcome.evaluation, outcome.detail, notice))
    return entries


def lab_entries_of(outcomes: Sequence[Any]) -> list[LabEntry]:
    """The labs' outcomes, shown under their plans."""
    return [
        LabEntry(outcome.plan_id, outcome.status, outcome.lab, outcome.detail, _notice(outcome))
        for outcome in outcomes
        if is_lab_outcome(outcome)
    ]


def _notice(outcome: Any) -> NoticeState | None:
    notice = notice_state(outcome.notice) if outcome.notice is not None else None
    if outcome.status == "provisioning-failed" and notice is None:
        notice = NoticeState(problem=outcome.detail or "no notice channel configured")
    return notice


async def recent_changes(settings: Settings, now: datetime) -> tuple[list[Change], str | None]:
    """The change log's last 7 days, or a problem line for the page."""
    change_log = ChangeLog.from_settings(settings)
    if change_log is None:
        return [], f"No change log: set {STORAGE_SETTINGS}."
    try:
        async with change_log:
            return await change_log.recent(now, CHANGES_WINDOW_DAYS), None
    except Exception as exc:
        return [], f"The change log could not be read ({type(exc).__name__})."


async def publish(
    settings: Settings, snapshot: dict[str, Any], page: str, *, credential: Any = None
) -> tuple[str, ...]:
    """Write the snapshot and the page to the report container; returns the blob names written."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.storage.blob import ContentSettings
    from azure.storage.blob.aio import BlobServiceClient

    assert settings.report_container is not None
    own_credential = None
    account_url = settings.report_account_url or settings.blob_endpoint
    if account_url:  # identity-based: the app's managed identity, no account key
        if credential is None:
            from shared.edge.identity import app_credential  # the host's managed identity, or DefaultAzureCredential

            credential = own_credential = app_credential()
        service = BlobServiceClient(account_url, credential=credential, retry_total=2)
    elif settings.storage_connection:
        service = BlobServiceClient.from_connection_string(
            settings.storage_connection.get_secret_value(), retry_total=2
        )
    else:
        raise ValueError(
            "set LABGUARD_REPORT_ACCOUNT_URL, AzureWebJobsStorage__blobServiceUri or AzureWebJobsStorage "
            "for the report container"
        )
    blobs = (
        (SNAPSHOT_BLOB, json.dumps(snapshot, indent=1, ensure_ascii=False).encode("utf-8"), "application/json"),
        (PAGE_BLOB, page.encode("utf-8"), "text/html; charset=utf-8"),
    )
    try:
        async with service:
            container = service.get_container_client(settings.report_container)
            for name, data, content_type in blobs:
                settings_ = ContentSettings(content_type=content_type, cache_control="no-cache")
                try:
                    await container.upload_blob(name, data, overwrite=True, content_settings=settings_)
                except ResourceNotFoundError:  # first sweep: create the container (needs Blob Data Contributor)
                    with contextlib.suppress(ResourceExistsError):
                        await container.create_container()
                    await container.upload_blob(name, data, overwrite=True, content_settings=settings_)
    finally:
        if own_credential is not None:
            await own_credential.close()
    return tuple(name for name, _, _ in blobs)


async def after_sweep(
    settings: Settings,
    policy: Policy,
    outcomes: Sequence[Any],
    *,
    list_failures: Sequence[tuple[str, str]] = (),
    correlation_id: str | None = None,
    now: datetime | None = None,
    credential: Any = None,
) -> OutputsResult:
    """Change log, page and digest after a sweep. Never raises."""
    now = now or datetime.now(UTC)
    written = await record_changes(settings, outcomes, trigger="sweep", correlation_id=correlation_id)
    if not wanted(settings):
        return OutputsResult(written, (), None)
    changes, problem = await recent_changes(settings, now)
    snapshot = build_snapshot(
        entries_of(outcomes),
        policy,
        source="the timer sweep",
        subscriptions=settings.subscriptions,
        resource_groups=settings.resource_groups,
        generated_at=now,
        changes=changes,
        changes_problem=problem,
        list_failures=list_failures,
        labs=lab_entries_of(outcomes),
    )
    published: tuple[str, ...] = ()
    if settings.report_container:
        try:
            published = await publish(settings, snapshot, render_html(snapshot), credential=credential)
            record(log, logging.INFO, "report.published", container=settings.report_container, blobs=list(published))
        except Exception as exc:
            record(
                log,
                logging.ERROR,
                "report.unpublished",
                container=settings.report_container,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                correlation_id=correlation_id,
            )
    digest = await send_daily_digest(settings, snapshot, now=now) if settings.digest_email else None
    return OutputsResult(written, published, digest)
