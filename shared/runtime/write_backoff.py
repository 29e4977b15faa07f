"""Per-plan write backoff: a plan whose write did not converge is not re-patched on every run.

When the proof read after a write still finds drift (the service dropped or rewrote a value), the
plan's next write waits: 30 minutes after the first unconverged write, doubling each time, at most a
day. A new drift on a field that did converge still gets its write (the owner changed something
else), but the unconverged fields alone never cause a PATCH before the plan is due again.

The state lives where every instance of a scaled-out app sees it: an Azure Table in the notice
ledger's storage account, connected as the ledger is (identity or connection string), table
``<LABGUARD_LEDGER_TABLE>writes``, one row per plan. Without storage (the CLI) it is kept in
process. The table is never on the critical path: each call is bounded, and while it cannot be read
or written the in-process copy is used, so a storage outage cannot turn into a PATCH loop on one
worker either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.core.plans import PlanId
from shared.runtime.logs import record
from shared.runtime.settings import Settings

BASE_DELAY = timedelta(minutes=30)
MAX_DELAY = timedelta(hours=24)
TABLE_CALL_TIMEOUT_S = 3.0

log = logging.getLogger("labguard.backoff")


def backoff_delay(attempts: int) -> timedelta:
    """30 min after the first unconverged write, doubling, capped at a day."""
    if attempts <= 0:
        return timedelta(0)
    delay: timedelta = BASE_DELAY * (2 ** min(attempts - 1, 16))
    return min(delay, MAX_DELAY)


@dataclass(frozen=True)
class BackoffState:
    """One plan's backoff: how many writes in a row did not converge, on which fields, and when to try again."""

    attempts: int
    retry_at: datetime
    fields: frozenset[str]
    reason: str = ""

    def holds(self, now: datetime, drifted_fields: Iterable[str]) -> bool:
        """Whether a write now must wait: not yet due, and every drifted field is one that did not converge."""
        return now < self.retry_at and set(drifted_fields) <= self.fields


class WriteBackoff(Protocol):
    """What the reconcile core needs: read a plan's backoff, record an unconverged write, clear it."""

    async def get(self, plan_id: PlanId) -> BackoffState | None: ...

    async def unconverged(self, plan_id: PlanId, now: datetime, fields: Iterable[str], reason: str) -> BackoffState: ...

    async def clear(self, plan_id: PlanId) -> None: ...


class MemoryBackoff:
    """In-process backoff (the CLI, and the fallback while the table cannot be reached)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._states: dict[str, BackoffState] = {}
        self._limit = limit

    async def get(self, plan_id: PlanId) -> BackoffState | None:
        return self._states.get(plan_id.key)

    def put(self, plan_id: PlanId, state: BackoffState) -> None:
        if plan_id.key not in self._states and len(self._states) >= self._limit:
            self._states.pop(next(iter(self._states)))  # bounded: the oldest entry goes first
        self._states[plan_id.key] = state

    async def unconverged(self, plan_id: PlanId, now: datetime, fields: Iterable[str], reason: str) -> BackoffState:
        previous = self._states.get(plan_id.key)
        state = _next_state(previous, now, fields, reason)
        self.put(plan_id, state)
        return state

    async def clear(self, plan_id: PlanId) -> None:
        self._states.pop(plan_id.key, None)


def _next_state(previous: BackoffState | None, now: datetime, fields: Iterable[str], reason: str) -> BackoffState:
    attempts = (previous.attempts if previous else 0) + 1
    return BackoffState(attempts, now + backoff_delay(attempts), frozenset(fields), reason[:500])


class TableBackoff:
    """Backoff rows in Azure Table storage (one row per plan), with the in-process copy as fallback."""

    def __init__(self, client: Any, closer: Callable[[], Awaitable[None]] | None = None) -> None:
        self._client = client
        self._closer = closer or client.close
        self._memory = MemoryBackoff()
        self._table_ready = False
        self.table_name: str = client.table_name

    @classmethod
    def from_settings(cls, settings: Settings) -> TableBackoff | None:
        """Beside the notice ledger, connected the same way (identity on a table endpoint, or a
        connection string); None when the settings name no storage."""
        from shared.notices.ledger import open_table  # the ledger's client building, one place for it

        opened = open_table(
            settings,
            backoff_table_name(settings.ledger_table),
            retry_total=1,
            connection_timeout=3,
            read_timeout=TABLE_CALL_TIMEOUT_S,
        )
        if opened is None:
            return None
        client, credential = opened

        async def close() -> None:
            try:
                await client.close()
            finally:
                if credential is not None:
                    await credential.close()

        return cls(client, close)

    async def close(self) -> None:
        await self._closer()

    async def get(self, plan_id: PlanId) -> BackoffState | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await asyncio.wait_for(
                self._client.get_entity(_partition(plan_id), "backoff"), TABLE_CALL_TIMEOUT_S
            )
        except ResourceNotFoundError:
            return await self._memory.get(plan_id)
        except Exception as exc:  # storage down or slow: the in-process copy decides
            self._fault("read", exc)
            return await self._memory.get(plan_id)
        state = _from_entity(entity)
        if state is not None:
            self._memory.put(plan_id, state)
        return state or await self._memory.get(plan_id)

    async def unconverged(self, plan_id: PlanId, now: datetime, fields: Iterable[str], reason: str) -> BackoffState:
        previous = await self.get(plan_id)
        state = _next_state(previous, now, fields, reason)
        self._memory.put(plan_id, state)
        try:
            await asyncio.wait_for(self._upsert(plan_id, state), TABLE_CALL_TIMEOUT_S * 2)
        except Exception as exc:  # kept in process; the next write that converges clears both
            self._fault("write", exc)
        return state

    async def clear(self, plan_id: PlanId) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        await self._memory.clear(plan_id)
        try:
            await asyncio.wait_for(self._client.delete_entity(_partition(plan_id), "backoff"), TABLE_CALL_TIMEOUT_S)
        except ResourceNotFoundError:
            return
        except Exception as exc:
            self._fault("clear", exc)

    async def _upsert(self, plan_id: PlanId, state: BackoffState) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.data.tables import UpdateMode

        if not self._table_ready:
            with contextlib.suppress(ResourceExistsError):
                await self._client.create_table()
            self._table_ready = True
        await self._client.upsert_entity(
            {
                "PartitionKey": _partition(plan_id),
                "RowKey": "backoff",
                "PlanId": plan_id.path,
                "Attempts": state.attempts,
                "RetryAt": state.retry_at,
                "Fields": ",".join(sorted(state.fields)),
                "Reason": state.reason,
            },
            mode=UpdateMode.REPLACE,
        )

    def _fault(self, what: str, exc: BaseException) -> None:
        reason = getattr(exc, "error_code", None) or ""
        record(
            log,
            logging.WARNING,
            "backoff.storage-fault",
            action=what,
            table=self.table_name,
            error=f"{type(exc).__name__} {reason}".strip()[:200],
            note="using this worker's in-process backoff",
        )


def _partition(plan_id: PlanId) -> str:
    from shared.notices.ledger import partition_key  # the notice ledger's key rules: one place for them

    return partition_key(plan_id)


def _from_entity(entity: Any) -> BackoffState | None:
    retry_at = entity.get("RetryAt")
    if not isinstance(retry_at, datetime):
        return None
    if retry_at.tzinfo is None:
        retry_at = retry_at.replace(tzinfo=UTC)
    try:
        attempts = int(entity.get("Attempts") or 0)
    except (TypeError, ValueError):
        return None
    fields = frozenset(f for f in str(entity.get("Fields") or "").split(",") if f)
    return BackoffState(attempts, retry_at, fields, str(entity.get("Reason") or ""))


def backoff_table_name(ledger_table: str) -> str:
    """The backoff table beside the notice ledger's (Table names: letters and digits, at most 63)."""
    return (ledger_table + "writes")[:63]
