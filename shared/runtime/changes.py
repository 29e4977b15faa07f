"""The change log: every write labguard made, in Azure Table Storage, for the compliance page.

ARM's activity log also has these writes, but reading it needs another role and another API; labguard
already writes to its own storage, so it records what it changed there: one row per write (to a plan or a
lab), with how it ended (fixed, or unconverged, proof-deferred, write-failed), keyed by UTC date
(``PartitionKey``) so "the last 7 days" is one range query. Recording is best effort: the write was
already made, so a storage fault is logged (``changes.unrecorded``) and the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.core.change import Change
from shared.runtime.logs import record
from shared.runtime.settings import Settings

if TYPE_CHECKING:  # azure-data-tables only when a table is opened (an event without storage never does)
    from azure.data.tables.aio import TableClient

log = logging.getLogger("labguard.changes")
MAX_ROWS_READ = 2000


class ChangeLog:
    """Async methods over one :class:`azure.data.tables.aio.TableClient`; an async context manager."""

    def __init__(self, client: TableClient, *, owned_credential: Any | None = None) -> None:
        self._client = client
        self._owned_credential = owned_credential  # closed with the log
        self._table_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ChangeLog | None:
        """Where the settings keep labguard's state (identity in Azure, a connection string locally)."""
        from shared.notices.ledger import open_table

        opened = open_table(settings, settings.changes_table)
        return None if opened is None else cls(opened[0], owned_credential=opened[1])

    @classmethod
    def from_connection_string(cls, conn: str, table: str, **client_kwargs: Any) -> ChangeLog:
        kwargs: dict[str, Any] = {"retry_total": 2, "connection_timeout": 10, "read_timeout": 20}
        kwargs.update(client_kwargs)
        from azure.data.tables.aio import TableClient

        return cls(TableClient.from_connection_string(conn, table_name=table, **kwargs))

    async def __aenter__(self) -> ChangeLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._client.close()
        finally:
            if self._owned_credential is not None:
                await self._owned_credential.close()

    async def record(self, change: Change) -> None:
        if not self._table_ready:
            with contextlib.suppress(ResourceExistsError):
                await self._client.create_table()
            self._table_ready = True
        at = change.at.astimezone(UTC)
        digest = hashlib.sha256(change.plan_id.lower().encode("utf-8")).hexdigest()[:12]
        await self._client.upsert_entity(
            {
                "PartitionKey": at.date().isoformat(),
                "RowKey": f"{at:%H%M%S%f}.{digest}",
                "PlanId": change.plan_id,
                "At": at,
                "Changes": json.dumps([list(c) for c in change.changes])[:30000],
                "Trigger": change.trigger,
                "CorrelationId": change.correlation_id or "",
                "Mode": change.mode,
                "Status": change.status,
                "Detail": (change.detail or "")[:1000],
                "Kind": change.kind,
                "LabPlanId": change.lab_plan_id or "",
            }
        )

    async def recent(self, now: datetime, days: int = 7) -> list[Change]:
        """The changes of the last ``days`` days, newest first (at most MAX_ROWS_READ)."""
        since = now.astimezone(UTC) - timedelta(days=days)
        found: list[Change] = []
        try:
            async for entity in self._client.query_entities(
                "PartitionKey ge @day", parameters={"day": since.date().isoformat()}
            ):
                at = entity.get("At")
                if not isinstance(at, datetime):
                    continue
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                if at < since:
                    continue
                try:
                    rows = json.loads(str(entity.get("Changes") or "[]"))
                    changes = tuple((str(r[0]), _opt(r[1]), _opt(r[2])) for r in rows if isinstance(r, list))
                except (ValueError, IndexError, TypeError):
                    changes = ()
                found.append(
                    Change(
                        at=at,
                        plan_id=str(entity.get("PlanId") or ""),
                        changes=changes,
                        trigger=str(entity.get("Trigger") or ""),
                        correlation_id=str(entity.get("CorrelationId") or "") or None,
                        mode=str(entity.get("Mode") or "enforce"),
                        status=str(entity.get("Status") or "fixed"),
                        detail=str(entity.get("Detail") or "") or None,
                        kind="lab" if entity.get("Kind") == "lab" else "plan",
                        lab_plan_id=str(entity.get("LabPlanId") or "") or None,
                    )
                )
                if len(found) >= MAX_ROWS_READ:
                    break
        except ResourceNotFoundError:  # no table yet: nothing was ever changed
            return []
        return sorted(found, key=lambda c: c.at, reverse=True)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def change_of(outcome: Any, *, trigger: str, correlation_id: str | None, at: datetime | None = None) -> Change | None:
    """The Change for a :class:`~shared.runtime.reconcile.PlanOutcome` that wrote its plan or lab (however it
    ended), else None. A lab's row carries the lab's id, ``kind`` "lab" and the plan it names."""
    status = getattr(outcome, "status", None)
    if not (status == "fixed" or getattr(outcome, "written", False)):
        return None
    lab = getattr(outcome, "lab", None)
    evaluation = lab if lab is not None else getattr(outcome, "evaluation", None)
    if evaluation is None:
        return None
    if lab is not None:
        resource_id, kind = lab.lab.id.path, "lab"
        plan = lab.lab.lab_plan_id.path if lab.lab.lab_plan_id is not None else None
    else:
        resource_id, kind, plan = evaluation.plan.id.path, "plan", None
    return Change(
        status=str(status),
        detail=None if status == "fixed" else getattr(outcome, "detail", None),
        at=at or datetime.now(UTC),
        plan_id=resource_id,
        changes=tuple((f.path, f.observed, f.patch_value) for f in evaluation.drift),
        trigger=trigger,
        correlation_id=correlation_id,
        kind=kind,
        lab_plan_id=plan,
    )


async def record_changes(
    settings: Settings, outcomes: Sequence[Any], *, trigger: str, correlation_id: str | None = None
) -> int:
    """Record every write; never raises (a fault is one ``changes.unrecorded`` record). Returns rows written."""
    changes = [c for c in (change_of(o, trigger=trigger, correlation_id=correlation_id) for o in outcomes) if c]
    if not changes:
        return 0
    change_log = ChangeLog.from_settings(settings)
    if change_log is None:
        record(log, logging.WARNING, "changes.unrecorded", count=len(changes), error="no storage is set")
        return 0
    written = 0
    try:
        async with change_log:
            for change in changes:
                await change_log.record(change)
                written += 1
    except Exception as exc:
        record(
            log,
            logging.ERROR,
            "changes.unrecorded",
            count=len(changes) - written,
            error=type(exc).__name__,
            correlation_id=correlation_id,
        )
    return written
