"""Sweep fan-out: the timer enqueues one message per scope; queue-triggered workers sweep them.

Why a queue: one invocation cannot sweep a large estate inside a Consumption run's limit, and the
Functions host already scales a Storage queue out across instances, retries a failed message after
the queue's visibility timeout and moves it to ``<queue>-poison`` after ``maxDequeueCount`` (host.json).
Each subscription is one message, so one subscription is swept by one worker at a time and its ARM
budget (paced per runtime by :mod:`shared.edge.pacing`) holds across the whole app.

How one ``sweep.summary`` per run is assembled: every message carries the run id, the run's start
and how many scopes the run enqueued. A worker that finishes its scope (or the poison handler that
gives up on it) upserts one row ``(PartitionKey=run id, RowKey=scope)`` with the scope's counts into
a Table, then reads the run's partition. The worker that sees every scope's row tries to insert the
run's ``summary`` row; the insert succeeds for exactly one of them (a second insert is a 409), and
that one logs the run's ``sweep.summary``. Table storage is strongly consistent, so the last scope to
write its row always sees all of them; a retried scope overwrites its own row, never adds one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.runtime.logs import record
from shared.runtime.settings import Settings

log = logging.getLogger("labguard.fanout")

SWEEP_QUEUE = "labguard-sweep"  # handlers/queue_sweep.py and infra/modules/storage.bicep name the same queue
POISON_QUEUE = SWEEP_QUEUE + "-poison"  # the host's name for it: <queue>-poison
AUTO_MIN_SCOPES = 10  # LABGUARD_SWEEP_FANOUT=auto queues a run from this many scopes up
SUMMARY_ROW = "summary"
# The counts a scope row keeps and the run's summary adds up (SweepSummary.as_record's numbers).
SUMMED = (
    "compliant",
    "drifted",
    "fixed",
    "skipped",
    "exempt",
    "provisioning_failed",
    "failed",
    "gone",
    "unconverged",
    "write_failed",
    "proof_deferred",
    "plans",
    "arm_calls",
    "throttled",
)


class BadMessage(ValueError):
    """A queue message that is not a labguard scope message (one line says why; never retried)."""


@dataclass(frozen=True)
class ScopeMessage:
    """One scope of one run: what a queue message carries."""

    run_id: str
    subscription: str
    resource_group: str | None
    scopes: int  # how many scope messages the run enqueued
    started: str  # ISO time the timer enqueued the run

    def to_json(self) -> str:
        return json.dumps(
            {
                "run": self.run_id,
                "subscription": self.subscription,
                "resourceGroup": self.resource_group,
                "scopes": self.scopes,
                "started": self.started,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ScopeMessage:
        try:
            data = json.loads(text)
        except ValueError:
            raise BadMessage("the message is not JSON") from None
        if not isinstance(data, Mapping):
            raise BadMessage("the message is not a JSON object")
        run, sub, rg = data.get("run"), data.get("subscription"), data.get("resourceGroup")
        scopes, started = data.get("scopes"), data.get("started")
        if not (isinstance(run, str) and 0 < len(run) <= 64 and run.replace("-", "").isalnum()):
            raise BadMessage("'run' is missing or not a run id")
        if not (isinstance(sub, str) and 0 < len(sub) <= 64 and sub.replace("-", "").isalnum()):
            raise BadMessage("'subscription' is missing or not a subscription id")
        if rg is not None and not (isinstance(rg, str) and 0 < len(rg) <= 90):
            raise BadMessage("'resourceGroup' is not a resource group name")
        if not (isinstance(scopes, int) and not isinstance(scopes, bool) and 0 < scopes <= 1_000_000):
            raise BadMessage("'scopes' is not a positive count")
        if not isinstance(started, str) or len(started) > 40:
            raise BadMessage("'started' is not a time")
        return cls(run, sub.lower(), rg.lower() if rg else None, scopes, started)

    @property
    def scope(self) -> str:
        group = f"/resourceGroups/{self.resource_group}" if self.resource_group else ""
        return f"/subscriptions/{self.subscription}{group}"

    @property
    def row_key(self) -> str:
        """The scope's row in the run's partition (RowKey forbids / \\ # ?; resource group names have none)."""
        return "scope-" + self.subscription + (f".{self.resource_group}" if self.resource_group else "")


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by time and is unique across instances: ``20261202T170000Z-1a2b3c4d``."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def fans_out(setting: str, scopes: int) -> bool:
    """Whether a run goes through the queue: ``on``, or ``auto`` from AUTO_MIN_SCOPES scopes up."""
    return setting == "on" or (setting == "auto" and scopes >= AUTO_MIN_SCOPES)


def has_queue(settings: Settings) -> bool:
    return bool(settings.storage_connection or settings.queue_endpoint)


def run_messages(run_id: str, scopes: Sequence[tuple[str, str | None]], started: datetime) -> list[ScopeMessage]:
    when = started.astimezone(UTC).isoformat(timespec="seconds")
    return [ScopeMessage(run_id, sub.lower(), rg.lower() if rg else None, len(scopes), when) for sub, rg in scopes]


def run_table_name(ledger_table: str) -> str:
    """The run table beside the notice ledger's (Table names: letters and digits, at most 63)."""
    return (ledger_table + "runs")[:63]


def assemble(rows: Sequence[Mapping[str, Any]], message: ScopeMessage, now: datetime) -> dict[str, Any]:
    """The run's summary from its scope rows: counts added up, failed scopes named, wall time of the run."""
    totals: dict[str, Any] = {name: 0 for name in SUMMED}
    failed_scopes: list[str] = []
    not_registered: set[str] = set()
    empty: set[str] = set()
    for row in rows:
        not_registered.update(str(s) for s in json.loads(str(row.get("NotRegistered") or "[]")))
        empty.update(str(s) for s in json.loads(str(row.get("EmptyScopes") or "[]")))
        counts = json.loads(str(row.get("Counts") or "{}"))
        for name in SUMMED:
            value = counts.get(name, 0)
            totals[name] += value if isinstance(value, int) else 0
        if row.get("Status") == "failed":
            failed_scopes.append(str(row.get("Scope")))
    try:
        started = datetime.fromisoformat(message.started)
        duration = round((now - started).total_seconds(), 3)
    except ValueError:
        duration = None
    return {
        "run_id": message.run_id,
        "scopes": message.scopes,
        "scopes_failed": len(failed_scopes),
        "failed_scopes": sorted(failed_scopes)[:20],
        **totals,
        "not_registered": sorted(not_registered)[:50],
        "empty_scopes": sorted(empty)[:50],
        "duration_s": duration,
    }


class SweepQueue:
    """Sends a run's scope messages (base64 text, the Functions host's default queue encoding)."""

    def __init__(self, client: Any, owned_credential: Any | None = None) -> None:
        self._client = client
        self._owned_credential = owned_credential
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings, queue: str = SWEEP_QUEUE) -> SweepQueue:
        from azure.storage.queue import TextBase64EncodePolicy
        from azure.storage.queue.aio import QueueClient

        options: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(), "retry_total": 2}
        if settings.storage_connection:
            return cls(
                QueueClient.from_connection_string(settings.storage_connection.get_secret_value(), queue, **options)
            )
        if not settings.queue_endpoint:
            raise ValueError("no queue: set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri")
        from shared.edge.identity import app_credential  # the host's managed identity, or DefaultAzureCredential

        credential = app_credential()
        return cls(QueueClient(settings.queue_endpoint, queue, credential=credential, **options), credential)

    async def send(self, messages: Sequence[ScopeMessage]) -> None:
        from azure.core.exceptions import ResourceExistsError

        if not self._ready:  # infra creates the queue; locally (Azurite) the first run does
            with contextlib.suppress(ResourceExistsError):
                await self._client.create_queue()
            self._ready = True
        for message in messages:
            await self._client.send_message(message.to_json())

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._owned_credential is not None:
                await self._owned_credential.close()


class RunBook:
    """The per-run rows in Table storage from which each run's one ``sweep.summary`` is assembled."""

    def __init__(self, client: Any, owned_credential: Any | None = None) -> None:
        self._client = client
        self._owned_credential = owned_credential
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RunBook:
        from azure.data.tables.aio import TableClient

        table = run_table_name(settings.ledger_table)
        options: dict[str, Any] = {"retry_total": 3, "connection_timeout": 10, "read_timeout": 20}
        if settings.ledger_table_endpoint:
            from shared.edge.identity import app_credential  # the host's managed identity, or DefaultAzureCredential

            credential = app_credential()
            endpoint = settings.ledger_table_endpoint
            client = TableClient(endpoint=endpoint, table_name=table, credential=credential, **options)
            return cls(client, credential)
        if not settings.storage_connection:
            raise ValueError("no run table: set AzureWebJobsStorage or AzureWebJobsStorage__tableServiceUri")
        return cls(
            TableClient.from_connection_string(
                settings.storage_connection.get_secret_value(), table_name=table, **options
            )
        )

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._owned_credential is not None:
                await self._owned_credential.close()

    async def scope_finished(
        self, message: ScopeMessage, counts: Mapping[str, Any], *, status: str, error: str | None = None
    ) -> dict[str, Any] | None:
        """Record one scope's end; the run's summary when this call is the one that completes the run."""
        from azure.core.exceptions import ResourceExistsError
        from azure.data.tables import UpdateMode

        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                await self._client.create_table()
            self._ready = True
        row = {
            "PartitionKey": message.run_id,
            "RowKey": message.row_key,
            "Scope": message.scope,
            "Status": status,
            "Counts": json.dumps({k: counts.get(k, 0) for k in SUMMED}),
            "NotRegistered": json.dumps(list(counts.get("not_registered") or [])[:50]),
            "EmptyScopes": json.dumps(list(counts.get("empty_scopes") or [])[:50]),
            "Error": (error or "")[:500],
        }
        await self._client.upsert_entity(row, mode=UpdateMode.REPLACE)
        rows = [
            entity
            async for entity in self._client.query_entities("PartitionKey eq @run", parameters={"run": message.run_id})
        ]
        scopes = [r for r in rows if str(r.get("RowKey", "")).startswith("scope-")]
        if len(scopes) < message.scopes or any(r.get("RowKey") == SUMMARY_ROW for r in rows):
            return None
        now = datetime.now(UTC)
        summary = assemble(scopes, message, now)
        try:  # exactly one finisher's insert succeeds: that one reports the run
            await self._client.create_entity(
                {"PartitionKey": message.run_id, "RowKey": SUMMARY_ROW, "Summary": json.dumps(summary)}
            )
        except ResourceExistsError:
            return None
        return summary


async def enqueue_run(
    settings: Settings, scopes: Sequence[tuple[str, str | None]], *, queue: SweepQueue | None = None
) -> str:
    """Enqueue one message per scope for a new run; returns the run id."""
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    messages = run_messages(run_id, scopes, started)
    own = queue is None
    sender = queue if queue is not None else SweepQueue.from_settings(settings)
    try:
        await sender.send(messages)
    finally:
        if own:
            await sender.close()
    record(log, logging.INFO, "sweep.enqueued", run_id=run_id, scopes=len(messages), queue=SWEEP_QUEUE)
    return run_id
