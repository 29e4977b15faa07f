"""The notice ledger: which failure was delivered on which channel, in Azure Table Storage.

One partition per plan (its lower-case ARM id with ``/`` written as ``|``, so Storage Explorer shows
which plan a row is about), one row per failure and channel: ``<failure digest>.<channel>``.

A row is ``pending`` while one run holds the delivery claim and ``sent`` once the channel accepted
the notice. The claim (an insert that fails if the row exists, or an ETag-guarded takeover of a
stale claim) is what keeps an Event Grid trigger and a sweep that race on the same failure from both
sending; a failed delivery deletes its claim, so the next event or sweep retries. A plan back in
Succeeded closes its open rows (``IsOpen`` false, ``ResolvedAt``); closed rows still count as sent,
so a late event for the old failure does not notify again.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.core.plans import PlanId
from shared.runtime.settings import Settings

if TYPE_CHECKING:  # azure-data-tables is imported only when a table is opened (not on a first event without one)
    from azure.data.tables.aio import TableClient

CLAIM_LEASE = timedelta(minutes=5)
_UNSAFE_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def partition_key(plan_id: PlanId) -> str:
    return _UNSAFE_KEY_CHARS.sub("|", plan_id.key.strip("/"))


def row_key(digest: str, channel_key: str) -> str:
    return f"{digest}.{_UNSAFE_KEY_CHARS.sub('_', channel_key)}"


@dataclass(frozen=True)
class LedgerRow:
    channel_key: str
    state: str  # "pending" | "sent"
    claimed_at: datetime | None
    etag: str | None


@dataclass(frozen=True)
class Claim:
    """A delivery claim held by this run; pass it back to :meth:`Ledger.mark_sent` or :meth:`Ledger.release`."""

    partition: str
    row: str
    etag: str


class Ledger:
    """Async methods over one :class:`azure.data.tables.aio.TableClient`; creates the table on first use."""

    def __init__(self, client: TableClient, *, owned_credential: Any | None = None) -> None:
        self._client = client
        self._owned_credential = owned_credential  # closed with the ledger
        self._table_ready = False
        self.table_name: str = client.table_name

    @classmethod
    def from_connection_string(cls, conn: str, table: str, **client_kwargs: Any) -> Ledger:
        """``client_kwargs`` go to the SDK pipeline (for example ``retry_total``)."""
        from azure.data.tables.aio import TableClient

        return cls(TableClient.from_connection_string(conn, table_name=table, **_client_options(client_kwargs)))

    @classmethod
    def from_endpoint(cls, endpoint: str, table: str, credential: Any | None = None, **client_kwargs: Any) -> Ledger:
        """Identity-based (no account key): the table endpoint and an async token credential.

        Without ``credential`` the ledger makes the app's credential (:func:`shared.edge.identity.app_credential`:
        the host's managed identity in Azure, AZURE_CLIENT_ID for a user-assigned one, ``az login`` on a laptop)
        and closes it.
        """
        owned = None
        if credential is None:
            from shared.edge.identity import app_credential  # the host's managed identity, or DefaultAzureCredential

            credential = owned = app_credential()
        from azure.data.tables.aio import TableClient

        client = TableClient(
            endpoint=endpoint, table_name=table, credential=credential, **_client_options(client_kwargs)
        )
        return cls(client, owned_credential=owned)

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._owned_credential is not None:
                await self._owned_credential.close()

    async def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_table()
        self._table_ready = True

    async def rows(self, plan_id: PlanId, digest: str) -> dict[str, LedgerRow]:
        """Every row of one failure, by channel key (one query)."""
        found: dict[str, LedgerRow] = {}
        entities = self._client.query_entities(
            "PartitionKey eq @pk and FailureDigest eq @fd",
            parameters={"pk": partition_key(plan_id), "fd": digest},
        )
        try:
            async for entity in entities:
                found[str(entity["Channel"])] = LedgerRow(
                    channel_key=str(entity["Channel"]),
                    state=str(entity.get("State", "")),
                    claimed_at=_as_datetime(entity.get("ClaimedAt")),
                    etag=entity.metadata.get("etag"),
                )
        except ResourceNotFoundError:  # no table yet: nothing was ever sent; claim() creates it
            return {}
        return found

    async def claim(
        self, plan_id: PlanId, failure_key: str, digest: str, channel_key: str, *, existing: LedgerRow | None = None
    ) -> Claim | None:
        """Claim one delivery. None when another run holds a fresh claim or the channel was already sent."""
        from azure.data.tables import UpdateMode

        await self._ensure_table()
        now = datetime.now(UTC)
        entity: dict[str, Any] = {
            "PartitionKey": partition_key(plan_id),
            "RowKey": row_key(digest, channel_key),
            "PlanId": plan_id.path,
            "FailureKey": failure_key,
            "FailureDigest": digest,
            "Channel": channel_key,
            "State": "pending",
            "ClaimedAt": now,
            "IsOpen": True,
        }
        try:
            if existing is None:
                meta = await self._client.create_entity(entity)
            else:
                if existing.state == "sent" or existing.etag is None:
                    return None
                if existing.claimed_at is not None and now - existing.claimed_at < CLAIM_LEASE:
                    return None
                meta = await self._client.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=existing.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        return Claim(entity["PartitionKey"], entity["RowKey"], str(meta["etag"]))

    async def mark_sent(self, claim: Claim, detail: str) -> None:
        """Record the delivery (only ever called after the channel accepted the notice)."""
        from azure.data.tables import UpdateMode

        await self._client.update_entity(
            {
                "PartitionKey": claim.partition,
                "RowKey": claim.row,
                "State": "sent",
                "SentAt": datetime.now(UTC),
                "Detail": detail[:1000],
            },
            mode=UpdateMode.MERGE,
        )

    async def record_sent(self, plan_id: PlanId, failure_key: str, digest: str, channel_key: str, detail: str) -> None:
        """Record a delivery made without a claim (the ledger was unreachable when the run started)."""
        from azure.data.tables import UpdateMode

        await self._ensure_table()
        entity: dict[str, Any] = {
            "PartitionKey": partition_key(plan_id),
            "RowKey": row_key(digest, channel_key),
            "PlanId": plan_id.path,
            "FailureKey": failure_key,
            "FailureDigest": digest,
            "Channel": channel_key,
            "State": "sent",
            "SentAt": datetime.now(UTC),
            "IsOpen": True,
            "Detail": detail[:1000],
        }
        try:
            await self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except ResourceNotFoundError:  # the table went away during an outage (a fresh emulator, say): create it
            self._table_ready = False
            await self._ensure_table()
            await self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def release(self, claim: Claim) -> None:
        """Drop a claim after a failed delivery, unless someone else took it over meanwhile."""
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await self._client.delete_entity(
                claim.partition, claim.row, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )

    async def close_open(self, plan_id: PlanId) -> int:
        """The plan is back in Succeeded: close its open sent rows. One query, one batch per 100 rows."""
        from azure.data.tables import UpdateMode

        now = datetime.now(UTC)
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        try:
            async for entity in self._client.query_entities(
                "PartitionKey eq @pk and IsOpen eq true", parameters={"pk": partition_key(plan_id)}
            ):
                if entity.get("State") != "sent":
                    continue  # a live claim belongs to a delivery still in flight
                operations.append(
                    (
                        "update",
                        {
                            "PartitionKey": entity["PartitionKey"],
                            "RowKey": entity["RowKey"],
                            "IsOpen": False,
                            "ResolvedAt": now,
                        },
                        {"mode": UpdateMode.MERGE},
                    )
                )
        except ResourceNotFoundError:  # no table yet: nothing to close
            return 0
        for start in range(0, len(operations), 100):
            await self._client.submit_transaction(operations[start : start + 100])
        return len(operations)

    async def open_partitions(self) -> frozenset[str]:
        """Partition keys of every plan with an open row: one query per sweep instead of one per plan."""
        try:
            return frozenset(
                [
                    str(entity["PartitionKey"])
                    async for entity in self._client.query_entities("IsOpen eq true", select=["PartitionKey"])
                ]
            )
        except ResourceNotFoundError:  # no table yet: nothing is open
            return frozenset()

    async def open_rows(self) -> list[tuple[str, str, str]]:
        """(partition key, row key, state) of every open row: one query per sweep, for the sweep's snapshot
        and for the notifier's memory of what was sent (so a ledger outage later repeats none of it)."""
        try:
            return [
                (str(entity["PartitionKey"]), str(entity["RowKey"]), str(entity.get("State", "")))
                async for entity in self._client.query_entities(
                    "IsOpen eq true", select=["PartitionKey", "RowKey", "State"]
                )
            ]
        except ResourceNotFoundError:  # no table yet: nothing is open
            return []


def open_table(settings: Settings, table: str, **client_kwargs: Any) -> tuple[TableClient, Any | None] | None:
    """A client for ``table`` where the settings keep labguard's state, and the credential it owns (close
    both): identity-based on a table endpoint in Azure (no account key), else by connection string
    (Azurite locally, tests); None when neither is set. The ledger, the write backoff, the change log
    and the digest all open their tables here, so none of them is left without storage in Azure."""
    if not (settings.ledger_table_endpoint or settings.storage_connection):
        return None
    from azure.data.tables.aio import TableClient

    options = _client_options(client_kwargs)
    if settings.ledger_table_endpoint:
        from shared.edge.identity import app_credential  # the host's managed identity, or DefaultAzureCredential

        credential = app_credential()
        client = TableClient(
            endpoint=settings.ledger_table_endpoint, table_name=table, credential=credential, **options
        )
        return client, credential
    if settings.storage_connection:
        return TableClient.from_connection_string(
            settings.storage_connection.get_secret_value(), table_name=table, **options
        ), None
    return None


def open_ledger(settings: Settings, **client_kwargs: Any) -> Ledger | None:
    """The ledger the settings name (see :func:`open_table`); None when no storage is set."""
    opened = open_table(settings, settings.ledger_table, **client_kwargs)
    if opened is None:
        return None
    client, credential = opened
    return Ledger(client, owned_credential=credential)


STORAGE_SETTINGS = "AzureWebJobsStorage (a connection string) or AzureWebJobsStorage__tableServiceUri (identity)"


def _client_options(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"retry_total": 2, "connection_timeout": 10, "read_timeout": 20, **overrides}


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None
