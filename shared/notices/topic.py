"""Event Grid channel: one CloudEvent per failure on a custom topic, through azure-eventgrid.

Admins route ``Labguard.LabPlan.ProvisioningFailed`` events to Logic Apps, Teams or their ticketing
system with ordinary event subscriptions (filter on the subject, which is the plan's ARM path).
The key travels in the ``aeg-sas-key`` header (AzureKeyCredential) and is never logged or reported.
The event id is derived from the failure key, so a subscriber can drop a repeat the ledger could not
prevent (ledger unreachable). Redirects are refused, and the SDK retries once at most: the next event
or sweep is the real retry.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.core.pipeline.transport import AioHttpTransport
from azure.eventgrid.aio import EventGridPublisherClient

from shared.core.text import clean_line
from shared.errors import DeliveryError
from shared.notices.message import Notice
from shared.notices.support_url import safe_host

EVENT_SOURCE = "labguard"


def cloud_event(notice: Notice, *, correlation_id: str | None = None) -> CloudEvent[dict[str, Any]]:
    data: dict[str, Any] = notice.as_data(correlation_id=correlation_id)
    return CloudEvent(
        source=EVENT_SOURCE,
        type=notice.event_type,
        subject=notice.plan_id.path,
        id=f"{notice.digest}-admin" if notice.admin_reason else notice.digest,
        data=data,
        datacontenttype="application/json",
    )


class TopicPublisher:
    """Publishes notices to one custom topic; shares the caller's aiohttp session (and its TLS trust)."""

    def __init__(self, endpoint: str, key: str, session: aiohttp.ClientSession) -> None:
        if not endpoint.lower().startswith("https://"):
            raise ValueError("LABGUARD_EVENTGRID_TOPIC_ENDPOINT must be an https:// URL")
        self._key = key
        self.host = safe_host(endpoint)
        self._client = EventGridPublisherClient(
            endpoint,
            AzureKeyCredential(key),
            transport=AioHttpTransport(session=session, session_owner=False),
            permit_redirects=False,
            retry_total=1,
            retry_backoff_factor=0.5,
            connection_timeout=10,
            read_timeout=20,
        )

    async def publish(self, notice: Notice, *, correlation_id: str | None = None) -> str:
        try:
            await self._client.send([cloud_event(notice, correlation_id=correlation_id)])
        except HttpResponseError as exc:
            raise DeliveryError(
                self._scrub(f"topic {self.host} answered HTTP {exc.status_code} ({exc.reason})")
            ) from None
        except AzureError as exc:
            raise DeliveryError(self._scrub(f"cannot reach topic {self.host}: {type(exc).__name__}")) from None
        return f"event {notice.digest} accepted by topic {self.host}"

    def _scrub(self, text: str) -> str:
        return clean_line(text.replace(self._key, "***"), 500)

    async def close(self) -> None:
        await self._client.close()
