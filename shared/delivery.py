"""One entry point for failure notices: build, consult the ledger, send on every channel, record.

The reconcile core calls :meth:`Notifier.notify_failure` for a plan in Failed (from the Event Grid
trigger or the sweep, whichever sees it first) and :meth:`Notifier.resolve` for a plan back in
Succeeded. Per failure (plan id + error timestamp + code) and channel, a notice is delivered once:

* the ledger row for a channel is claimed before sending and marked ``sent`` only after the channel
  accepted the notice; a failed channel releases its claim and is retried by the next event or sweep;
* channels are independent: one channel down never blocks or repeats another;
* if the ledger cannot be read or written, the notice is delivered anyway (at least once beats never)
  and :attr:`NoticeOutcome.ledger_fault` says what went wrong.

Nothing here logs or reports secrets: the SMTP password and topic key never leave their clients,
webhooks are named by host only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Literal

import aiohttp

from shared.lab_plans import LabPlan, PlanId
from shared.ledger import Claim, Ledger, LedgerRow, open_ledger, partition_key
from shared.mail import SmtpConfig, send_notice
from shared.notices import Notice, clean_line, failure_digest
from shared.settings import Settings
from shared.topic import TopicPublisher
from shared.webhooks import (
    DeliveryError,
    check_support_url,
    https_session,
    parse_allow_list,
    post_json,
    safe_host,
    webhook_payload,
)

log = logging.getLogger("labguard.notices")

Status = Literal["sent", "already-sent", "failed", "skipped"]


@dataclass(frozen=True)
class ChannelResult:
    channel: str  # "email" | "eventgrid" | "webhook:<host>" | "support-url:<host>"
    status: Status
    detail: str  # never contains secrets


@dataclass(frozen=True)
class NoticeOutcome:
    plan_id: PlanId
    failure_key: str
    results: tuple[ChannelResult, ...]
    ledger_fault: str | None

    @property
    def all_delivered(self) -> bool:
        """At least one channel delivered (now or before) and none failed; skipped channels do not count."""
        return any(r.status in ("sent", "already-sent") for r in self.results) and not any(
            r.status == "failed" for r in self.results
        )


@dataclass(frozen=True)
class _Channel:
    name: str  # reported
    ledger_key: str  # unique per destination; for webhooks includes a digest of the URL (never the URL)
    send: Callable[[Notice, str | None], Awaitable[str]]


@dataclass
class _Run:
    notice: Notice
    correlation_id: str | None
    ledger_faults: list[str] = field(default_factory=list)


class Notifier:
    """Built once per run from Settings; an async context manager that closes its clients."""

    def __init__(
        self,
        *,
        smtp: SmtpConfig | None,
        topic_endpoint: str | None,
        topic_key: str | None,
        webhook_urls: tuple[str, ...],
        support_url_hosts: tuple[str, ...],
        ca_bundle: str | None,
        ledger: Ledger | None,
        ledger_problem: str | None = None,
    ) -> None:
        self._smtp = smtp
        self._topic_endpoint = topic_endpoint
        self._topic_key = topic_key
        self._webhook_urls = webhook_urls
        self._allow = parse_allow_list(support_url_hosts)
        self._ca_bundle = ca_bundle
        self._ledger = ledger
        self._ledger_problem = ledger_problem
        self._session: aiohttp.ClientSession | None = None
        self._topic: TopicPublisher | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, ledger: Ledger | None = None) -> Notifier:
        problem = None
        if ledger is None:
            ledger = open_ledger(settings)
            if ledger is None:
                problem = (
                    "no ledger: neither AzureWebJobsStorage nor AzureWebJobsStorage__tableServiceUri is set, "
                    "so repeats cannot be suppressed"
                )
        smtp = None
        if settings.smtp_host:
            smtp = SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                mail_from=settings.mail_from,
                username=settings.smtp_username,
                password=settings.smtp_password,
                fallback_email=settings.fallback_email,
                ca_bundle=settings.ca_bundle,
            )
        return cls(
            smtp=smtp,
            topic_endpoint=settings.eventgrid_topic_endpoint,
            topic_key=settings.eventgrid_topic_key,
            webhook_urls=settings.webhook_urls,
            support_url_hosts=settings.support_url_hosts,
            ca_bundle=settings.ca_bundle,
            ledger=ledger,
            ledger_problem=problem,
        )

    @property
    def enabled(self) -> bool:
        """Any channel configured (the support-url channel needs LABGUARD_SUPPORT_URL_HOSTS)."""
        return bool(self._smtp or self._topic_endpoint or self._webhook_urls or self._allow)

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._topic is not None:
            await self._topic.close()
            self._topic = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._ledger is not None:
            await self._ledger.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = https_session(self._ca_bundle)
        return self._session

    # ------------------------------------------------------------------------- channels

    def _channels(self, notice: Notice, extra: dict[str, str]) -> tuple[list[_Channel], list[ChannelResult]]:
        """The channels to try for this notice, and results for those skipped or misconfigured up front."""
        channels: list[_Channel] = []
        upfront: list[ChannelResult] = []
        if self._smtp is not None:
            smtp = self._smtp

            async def email(n: Notice, cid: str | None) -> str:
                return await send_notice(smtp, n, correlation_id=cid)

            channels.append(_Channel("email", "email", email))
        if self._topic_endpoint:
            if not self._topic_key:
                upfront.append(
                    ChannelResult("eventgrid", "failed", "LABGUARD_EVENTGRID_TOPIC_KEY is not set for the topic")
                )
            else:
                channels.append(_Channel("eventgrid", "eventgrid", self._publish))
        for url in self._webhook_urls:
            host = safe_host(url)
            name = f"webhook:{host}"
            if not url.lower().startswith("https://"):
                upfront.append(
                    ChannelResult(name, "failed", "webhook URL is not https; labguard posts over https only")
                )
                continue
            channels.append(
                _Channel(name, f"webhook:{host}:{failure_digest(url)[:12]}", self._webhook_sender(url, host))
            )
        url = notice.support_url
        if url:
            decision = check_support_url(url, self._allow)
            name = f"support-url:{decision.host}"
            if decision.allowed and decision.url is not None:
                target = decision.url
                channels.append(_Channel(name, f"support-url:{decision.host}", self._support_sender(target)))
            else:
                # Expected by default (no allow-list): info. A URL that fails an allow-list: warning.
                log.log(
                    logging.WARNING if self._allow else logging.INFO,
                    "supportInfo.url not requested: %s",
                    decision.reason,
                    extra={**extra, "channel": name, "reason": decision.reason},
                )
                upfront.append(ChannelResult(name, "skipped", f"not requested: {decision.reason}"))
        return channels, upfront

    async def _publish(self, notice: Notice, correlation_id: str | None) -> str:
        if self._topic is None:
            assert self._topic_endpoint and self._topic_key
            try:
                self._topic = TopicPublisher(self._topic_endpoint, self._topic_key, self._http())
            except ValueError as exc:
                raise DeliveryError(str(exc)) from None
        return await self._topic.publish(notice, correlation_id=correlation_id)

    def _webhook_sender(self, url: str, host: str) -> Callable[[Notice, str | None], Awaitable[str]]:
        async def send(notice: Notice, correlation_id: str | None) -> str:
            return await post_json(self._http(), url, webhook_payload(notice, host, correlation_id=correlation_id))

        return send

    def _support_sender(self, url: str) -> Callable[[Notice, str | None], Awaitable[str]]:
        async def send(notice: Notice, correlation_id: str | None) -> str:
            payload = {"type": "Labguard.LabPlan.ProvisioningFailed", **notice.as_data(correlation_id=correlation_id)}
            return await post_json(self._http(), url, payload)

        return send

    # ------------------------------------------------------------------------- entry points

    async def notify_failure(self, plan: LabPlan, *, correlation_id: str | None = None) -> NoticeOutcome:
        """Deliver the plan's failure notice once per channel. Never raises for channel or ledger faults."""
        notice = Notice.from_plan(plan)
        extra = {"plan_id": plan.id.path, "correlation_id": correlation_id or ""}
        if plan.provisioning_state != "Failed":
            log.warning(
                "notify_failure called for a plan in %r; notifying anyway",
                clean_line(plan.provisioning_state, 32),
                extra={**extra, "channel": ""},
            )
        # Within one process, the event trigger and the sweep for one failure take turns.
        lock = self._locks.setdefault(notice.failure_key, asyncio.Lock())
        async with lock:
            outcome = await self._notify(notice, correlation_id, extra)
        if not outcome.results:
            log.error(
                "no notice channel is configured; the failure of %s reached nobody",
                notice.plan_name,
                extra={**extra, "channel": ""},
            )
        return outcome

    async def notify_admin(self, plan: LabPlan, *, reason: str, correlation_id: str | None = None) -> NoticeOutcome:
        """labguard's own write left the plan Failed: tell the admin (fallback email, topic, webhooks) once.

        The plan's support contacts (supportInfo.email, supportInfo.url) are not used: the owner did
        not break it. Ledgered like any notice, so it is sent once per failure and channel.
        """
        notice = replace(Notice.from_plan(plan), recipients=(), support_url="", admin_reason=reason)
        extra = {"plan_id": plan.id.path, "correlation_id": correlation_id or ""}
        lock = self._locks.setdefault(notice.failure_key, asyncio.Lock())
        async with lock:
            return await self._notify(notice, correlation_id, extra)

    async def _notify(self, notice: Notice, correlation_id: str | None, extra: dict[str, str]) -> NoticeOutcome:
        run = _Run(notice, correlation_id)
        channels, upfront = self._channels(notice, extra)
        rows: dict[str, LedgerRow] | None = None
        if self._ledger_problem:
            run.ledger_faults.append(self._ledger_problem)
        elif self._ledger is not None and channels:
            try:
                rows = await self._ledger.rows(notice.plan_id, notice.digest)
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger read failed: {_fault(exc)}")
        results = await asyncio.gather(*(self._deliver(run, channel, rows, extra) for channel in channels))
        fault = "; ".join(dict.fromkeys(run.ledger_faults)) or None
        if fault:
            log.error("notice ledger fault: %s", fault, extra={**extra, "channel": "ledger"})
        return NoticeOutcome(notice.plan_id, notice.failure_key, (*upfront, *results), fault)

    async def _deliver(
        self, run: _Run, channel: _Channel, rows: dict[str, LedgerRow] | None, extra: dict[str, str]
    ) -> ChannelResult:
        notice = run.notice
        log_extra = {**extra, "channel": channel.name}
        claim: Claim | None = None
        if rows is not None and self._ledger is not None:
            existing = rows.get(channel.ledger_key)
            if existing is not None and existing.state == "sent":
                return ChannelResult(channel.name, "already-sent", "delivered earlier for this failure")
            try:
                claim = await self._ledger.claim(
                    notice.plan_id, notice.failure_key, notice.digest, channel.ledger_key, existing=existing
                )
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger claim failed: {_fault(exc)}")
                rows = None  # deliver anyway, record afterwards if the ledger comes back
            else:
                if claim is None:
                    log.info("another run is delivering this notice", extra=log_extra)
                    return ChannelResult(
                        channel.name, "skipped", "another run holds the delivery claim; it is retried if that run fails"
                    )
        try:
            detail = await channel.send(notice, run.correlation_id)
        except DeliveryError as exc:
            return await self._failed(run, channel, claim, str(exc), log_extra)
        except Exception as exc:  # a channel bug must not stop the other channels
            return await self._failed(run, channel, claim, f"unexpected {type(exc).__name__}", log_extra)
        log.info("notice sent: %s", detail, extra=log_extra)
        if self._ledger is not None and not self._ledger_problem:
            try:
                if claim is not None:
                    await self._ledger.mark_sent(claim, detail)
                else:
                    await self._ledger.record_sent(
                        notice.plan_id, notice.failure_key, notice.digest, channel.ledger_key, detail
                    )
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger write failed: {_fault(exc)}")
        return ChannelResult(channel.name, "sent", detail)

    async def _failed(
        self, run: _Run, channel: _Channel, claim: Claim | None, detail: str, log_extra: dict[str, str]
    ) -> ChannelResult:
        log.error("notice not delivered: %s", detail, extra=log_extra)
        if claim is not None and self._ledger is not None:
            try:
                await self._ledger.release(claim)
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger release failed (retried after the claim lease): {_fault(exc)}")
        return ChannelResult(channel.name, "failed", clean_line(detail, 500))

    async def open_snapshot(self) -> frozenset[str] | None:
        """Which plans have open notice records (one ledger query), so a sweep resolves only those.

        None when there is no ledger or it cannot be read: callers then resolve plan by plan.
        """
        if self._ledger is None:
            return None
        try:
            return await self._ledger.open_partitions()
        except Exception as exc:  # any ledger fault: fall back to per-plan checks
            log.warning("notice ledger fault while listing open records: %s", _fault(exc))
            return None

    def may_have_open(self, snapshot: frozenset[str] | None, plan: LabPlan) -> bool:
        return snapshot is None or partition_key(plan.id) in snapshot

    async def resolve(self, plan: LabPlan) -> None:
        """The plan is back in Succeeded: close its open ledger rows (one query). Ledger faults are logged."""
        if self._ledger is None:
            return
        extra = {"plan_id": plan.id.path, "channel": "ledger", "correlation_id": ""}
        try:
            closed = await self._ledger.close_open(plan.id)
        except Exception as exc:  # any ledger fault: deliver anyway, report it
            log.error("notice ledger fault while resolving: %s", _fault(exc), extra=extra)
            return
        if closed:
            log.info("closed %d notice record(s): plan is back in Succeeded", closed, extra=extra)


def _fault(exc: BaseException) -> str:
    """Ledger faults name the error type and the service's short reason, never the connection string."""
    reason = getattr(exc, "reason", None) or getattr(exc, "error_code", None) or ""
    return clean_line(f"{type(exc).__name__} {reason}".strip(), 200)
