"""One entry point for failure notices: build, consult the ledger, send on every channel, record.

The reconcile core calls :meth:`Notifier.notify_failure` for a plan in Failed (from the Event Grid
trigger or the sweep, whichever sees it first) and :meth:`Notifier.resolve` for a plan back in
Succeeded. Per failure (plan id + error timestamp + code) and channel, a notice is delivered once:

* the ledger row for a channel is claimed before sending and marked ``sent`` only after the channel
  accepted the notice; a failed channel releases its claim and is retried by the next event or sweep;
* channels are independent: one channel down never blocks or repeats another;
* if the ledger cannot be read or written, the notice is delivered anyway (at least once beats never)
  and :attr:`NoticeOutcome.ledger_fault` says what went wrong;
* while the ledger is down, this worker's bounded memory of what it sent (or saw recorded as sent)
  stands in for it: a notice it knows is never sent again, a new failure is sent once, and the rows
  it owes are written when the ledger answers again (:class:`SentMemory`);
* every ledger call is bounded (a hung Table endpoint is treated as down, and left alone for
  ``LEDGER_RETRY_S``), and a caller waits at most ``notice_wait_s`` for the whole notice step: what
  has not finished by then goes on in the background and is reported ``deferred``.

Nothing here logs or reports secrets: the SMTP password and topic key never leave their clients,
webhooks are named by host only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import aiohttp

from shared.core.failures import failure_digest
from shared.core.plans import LabPlan, PlanId
from shared.core.text import clean_line
from shared.errors import DeliveryError
from shared.notices.changer_claims import is_valid_address
from shared.notices.ledger import Claim, Ledger, LedgerRow, open_ledger, partition_key, row_key
from shared.notices.message import Notice
from shared.notices.support_url import check_support_url, parse_allow_list, safe_host
from shared.notices.webhook import https_session, post_json, webhook_payload
from shared.runtime.logs import record
from shared.runtime.settings import Settings, secret_value

if TYPE_CHECKING:  # the mail and Event Grid topic channels are imported only when configured (first event)
    from shared.notices.email import SmtpConfig
    from shared.notices.topic import TopicPublisher

log = logging.getLogger("labguard.notices")

T = TypeVar("T")

DEFAULT_NOTICE_WAIT_S = 5.0  # LABGUARD_NOTICE_WAIT_SECONDS: Event Grid gives a delivery 30 s in all
DEFAULT_MEMORY_SIZE = 10_000  # notices (failure x channel) one worker remembers; about 2 MB
LEDGER_RETRY_S = 30.0  # after a ledger fault, how long this worker works from memory before trying it again
CLOSE_WAIT_S = 30.0  # on close, how long deliveries still in flight may take to finish

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
    deferred: bool = False  # still running in the background after notice_wait_s; the sweep checks it again

    @property
    def all_delivered(self) -> bool:
        """At least one channel delivered (now or before) and none failed; skipped channels do not count."""
        return any(r.status in ("sent", "already-sent") for r in self.results) and not any(
            r.status == "failed" for r in self.results
        )


class Ledgered(Protocol):
    """What the ledger keys a delivery on: a failure :class:`Notice`, or a changer mail (shared.notices.changer)."""

    @property
    def plan_id(self) -> PlanId: ...

    @property
    def failure_key(self) -> str: ...

    @property
    def digest(self) -> str: ...


@dataclass(frozen=True)
class _Channel:
    name: str  # reported
    ledger_key: str  # unique per destination; for webhooks includes a digest of the URL (never the URL)
    send: Callable[[Any, str | None], Awaitable[str]]  # (the Notice or other Ledgered item, correlation id)


MemoryKey = tuple[str, str]  # (ledger partition key, row key): one failure on one channel


@dataclass(frozen=True)
class _Owed:
    """A delivery the ledger has not recorded yet (it was down): written when it answers again."""

    plan_id: PlanId
    failure_key: str
    digest: str
    channel_key: str
    detail: str


class SentMemory:
    """This worker's memory of notices delivered (by it, or recorded in the ledger), least recent first.

    Bounded: past ``size`` entries the least recently used is forgotten (and, for a row still owed to the
    ledger, the oldest owed row is dropped with a warning), so memory never grows with the estate.
    """

    def __init__(self, size: int = DEFAULT_MEMORY_SIZE) -> None:
        self.size = max(1, size)
        self._sent: OrderedDict[MemoryKey, None] = OrderedDict()
        self.owed: OrderedDict[MemoryKey, _Owed] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sent)

    def knows(self, key: MemoryKey) -> bool:
        if key in self._sent:
            self._sent.move_to_end(key)
            return True
        return False

    def remember(self, key: MemoryKey) -> None:
        self._sent[key] = None
        self._sent.move_to_end(key)
        while len(self._sent) > self.size:
            self._sent.popitem(last=False)

    def owe(self, key: MemoryKey, row: _Owed) -> None:
        self.owed[key] = row
        while len(self.owed) > self.size:
            lost, _ = self.owed.popitem(last=False)
            record(log, logging.WARNING, "notice.ledger-row-dropped", partition=lost[0], row=lost[1])

    def settle(self, key: MemoryKey) -> None:
        self.owed.pop(key, None)


@dataclass
class _Run:
    notice: Ledgered
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
        notice_wait_s: float = DEFAULT_NOTICE_WAIT_S,
        memory_size: int = DEFAULT_MEMORY_SIZE,
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
        self._notice_wait_s = notice_wait_s
        # Each ledger call gets a fraction of the wait, so a hung ledger still leaves time to send.
        self._ledger_call_s = max(0.2, notice_wait_s / 3)
        self._ledger_down_until = 0.0
        self.memory = SentMemory(memory_size)
        self._flushing = asyncio.Lock()
        self._in_flight: set[asyncio.Task[NoticeOutcome]] = set()

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
            from shared.notices.email import SmtpConfig

            smtp = SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                mail_from=settings.mail_from,
                username=settings.smtp_username,
                password=secret_value(settings.smtp_password),
                fallback_email=settings.fallback_email,
                ca_bundle=settings.ca_bundle,
            )
        return cls(
            smtp=smtp,
            topic_endpoint=settings.eventgrid_topic_endpoint,
            topic_key=secret_value(settings.eventgrid_topic_key),
            webhook_urls=tuple(url.get_secret_value() for url in settings.webhook_urls),
            support_url_hosts=settings.support_url_hosts,
            ca_bundle=settings.ca_bundle,
            ledger=ledger,
            ledger_problem=problem,
            notice_wait_s=settings.notice_wait_s,
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
        if self._in_flight:  # deliveries that outlived their caller's wait: let them finish, bounded
            _, late = await asyncio.wait(set(self._in_flight), timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
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
        if notice.admin_reason:
            channels, upfront = self._owner_channels(notice, extra)
            admin = [replace(c, ledger_key=f"{c.ledger_key}:admin") for c in channels]
            if self._smtp is not None and not is_valid_address(self._smtp.fallback_email or ""):
                # The admin's address is LABGUARD_FALLBACK_EMAIL: without it the mail has nobody to go to.
                # Not a failed delivery (that would fail the plan every sweep): skipped, and said so.
                admin = [c for c in admin if c.name != "email"]
                why = (
                    "LABGUARD_FALLBACK_EMAIL (the admin's address) is not set: "
                    "no mail about labguard's own failed write"
                )
                record(log, logging.WARNING, "notice.admin-email-skipped", plan_id=notice.plan_id.key, reason=why)
                upfront.append(ChannelResult("email", "skipped", why))
            return admin, upfront
        return self._owner_channels(notice, extra)

    def _owner_channels(self, notice: Notice, extra: dict[str, str]) -> tuple[list[_Channel], list[ChannelResult]]:
        channels: list[_Channel] = []
        upfront: list[ChannelResult] = []
        if self._smtp is not None:
            smtp = self._smtp

            async def email(n: Notice, cid: str | None) -> str:
                from shared.notices.email import send_notice

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
            from shared.notices.topic import TopicPublisher

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
            payload = {"type": notice.event_type, **notice.as_data(correlation_id=correlation_id)}
            return await post_json(self._http(), url, payload)

        return send

    # ------------------------------------------------------------------------- entry points

    async def notify_failure(self, plan: LabPlan, *, correlation_id: str | None = None) -> NoticeOutcome:
        """Deliver the plan's failure notice once per channel. Never raises for channel or ledger faults.

        Waits at most ``notice_wait_s``; a step still running then (a slow channel, say) goes on in the
        background and the outcome is ``deferred``: the caller acknowledges, the next sweep checks again.
        """
        notice = Notice.from_plan(plan)
        extra = {"plan_id": plan.id.path, "correlation_id": correlation_id or ""}
        if plan.provisioning_state != "Failed":
            log.warning(
                "notify_failure called for a plan in %r; notifying anyway",
                clean_line(plan.provisioning_state, 32),
                extra={**extra, "channel": ""},
            )
        return await self._notify_bounded(notice, correlation_id, extra)

    async def _notify_bounded(
        self,
        notice: Ledgered,
        correlation_id: str | None,
        extra: dict[str, str],
        work: Coroutine[Any, Any, NoticeOutcome] | None = None,
    ) -> NoticeOutcome:
        """Deliver, waiting at most ``notice_wait_s``; past that the step goes on in the background (``deferred``).

        ``work``: another delivery than the notice's channels (:meth:`deliver_once`)."""
        if work is None:
            assert isinstance(notice, Notice)
            work = self._notify_in_turn(notice, correlation_id, extra)
        task = asyncio.ensure_future(work)
        self._in_flight.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=self._notice_wait_s)
        if task not in done:
            record(
                log,
                logging.WARNING,
                "notice.deferred",
                plan_id=notice.plan_id.key,
                wait_s=self._notice_wait_s,
                correlation_id=correlation_id,
                note="still delivering in the background; the next sweep checks this failure again",
            )
            return NoticeOutcome(notice.plan_id, notice.failure_key, (), None, deferred=True)
        outcome = task.result()
        if not outcome.results and isinstance(notice, Notice):
            log.error(
                "no notice channel is configured; the failure of %s reached nobody",
                notice.plan_name,
                extra={**extra, "channel": ""},
            )
        return outcome

    def _finished(self, task: asyncio.Task[NoticeOutcome]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here, so never "never retrieved"
            log.error("notice step failed: %s", type(task.exception()).__name__)

    async def _notify_in_turn(self, notice: Notice, correlation_id: str | None, extra: dict[str, str]) -> NoticeOutcome:
        # Within one process, the event trigger and the sweep for one failure take turns.
        lock = self._locks.setdefault(notice.failure_key, asyncio.Lock())
        async with lock:
            await self.flush_owed()
            return await self._notify(notice, correlation_id, extra)

    async def deliver_once(
        self,
        item: Ledgered,
        channel: str,
        send: Callable[[], Awaitable[str]],
        *,
        correlation_id: str | None = None,
    ) -> NoticeOutcome:
        """Deliver ``item`` once on one channel, with everything a failure notice gets: the ledger claim and
        row (keyed on ``item.digest``), this worker's memory and owed rows while the ledger is down, the
        bounded ledger calls and the ``notice_wait_s`` bound. ``send`` returns a safe detail or raises
        DeliveryError. Used for the mail to a person whose change labguard undid."""
        extra = {"plan_id": item.plan_id.path, "correlation_id": correlation_id or ""}

        async def sender(_item: object, _cid: str | None) -> str:
            return await send()

        async def once() -> NoticeOutcome:
            lock = self._locks.setdefault(item.failure_key, asyncio.Lock())
            async with lock:
                await self.flush_owed()
                run = _Run(item, correlation_id)
                rows = await self._read_rows(run)
                result = await self._deliver(run, _Channel(channel, channel, sender), rows, extra)
                fault = "; ".join(dict.fromkeys(run.ledger_faults)) or None
                return NoticeOutcome(item.plan_id, item.failure_key, (result,), fault)

        return await self._notify_bounded(item, correlation_id, extra, once())

    # ------------------------------------------------------------------------- the ledger, bounded

    def _ledger_usable(self) -> bool:
        return self._ledger is not None and not self._ledger_problem and time.monotonic() >= self._ledger_down_until

    async def _ledger_call(self, call: Awaitable[T]) -> T:
        """One ledger call, bounded; a fault or timeout marks the ledger down for ``LEDGER_RETRY_S``."""
        try:
            async with asyncio.timeout(self._ledger_call_s):
                return await call
        except Exception:
            self._ledger_down_until = time.monotonic() + LEDGER_RETRY_S
            raise

    async def flush_owed(self) -> int:
        """Write the ledger rows owed from an outage, if the ledger answers again. Returns how many."""
        if not self.memory.owed or not self._ledger_usable() or self._flushing.locked():
            return 0
        assert self._ledger is not None
        written = 0
        async with self._flushing:
            for key, row in list(self.memory.owed.items()):
                try:
                    await self._ledger_call(
                        self._ledger.record_sent(row.plan_id, row.failure_key, row.digest, row.channel_key, row.detail)
                    )
                except Exception as exc:  # still down: keep owing, try again later
                    log.warning("notice ledger still unreachable: %s", _fault(exc))
                    break
                self.memory.settle(key)
                written += 1
        if written:
            record(log, logging.INFO, "notice.ledger-caught-up", rows=written, still_owed=len(self.memory.owed))
        return written

    async def notify_admin(self, plan: LabPlan, *, reason: str, correlation_id: str | None = None) -> NoticeOutcome:
        """labguard's own write left the plan Failed: tell the admin (fallback email, topic, webhooks) once.

        The plan's support contacts (supportInfo.email, supportInfo.url) are not used: the owner did
        not break it. Ledgered like any notice, so it is sent once per failure and channel.
        """
        notice = replace(Notice.from_plan(plan), recipients=(), support_url="", admin_reason=reason)
        extra = {"plan_id": plan.id.path, "correlation_id": correlation_id or ""}
        return await self._notify_bounded(notice, correlation_id, extra)

    async def _notify(self, notice: Notice, correlation_id: str | None, extra: dict[str, str]) -> NoticeOutcome:
        run = _Run(notice, correlation_id)
        channels, upfront = self._channels(notice, extra)
        rows = await self._read_rows(run) if channels else None
        if self._ledger_problem and not channels:
            run.ledger_faults.append(self._ledger_problem)
        results = await asyncio.gather(*(self._deliver(run, channel, rows, extra) for channel in channels))
        fault = "; ".join(dict.fromkeys(run.ledger_faults)) or None
        if fault:
            log.error("notice ledger fault: %s", fault, extra={**extra, "channel": "ledger"})
        return NoticeOutcome(notice.plan_id, notice.failure_key, (*upfront, *results), fault)

    async def _read_rows(self, run: _Run) -> dict[str, LedgerRow] | None:
        """The ledger's rows of this delivery (one bounded query); None when the ledger cannot say."""
        if self._ledger_problem:
            run.ledger_faults.append(self._ledger_problem)
            return None
        if self._ledger is None:
            return None
        if not self._ledger_usable():
            run.ledger_faults.append("ledger unreachable; this worker's memory of sent notices stands in")
            return None
        try:
            return await self._ledger_call(self._ledger.rows(run.notice.plan_id, run.notice.digest))
        except Exception as exc:  # any ledger fault: deliver anyway, report it
            run.ledger_faults.append(f"ledger read failed: {_fault(exc)}")
            return None

    async def _deliver(
        self, run: _Run, channel: _Channel, rows: dict[str, LedgerRow] | None, extra: dict[str, str]
    ) -> ChannelResult:
        notice = run.notice
        log_extra = {**extra, "channel": channel.name}
        key: MemoryKey = (partition_key(notice.plan_id), row_key(notice.digest, channel.ledger_key))
        existing = rows.get(channel.ledger_key) if rows is not None else None
        if existing is not None and existing.state == "sent":
            self.memory.remember(key)
            return ChannelResult(channel.name, "already-sent", "delivered earlier for this failure")
        if self.memory.knows(key):
            return ChannelResult(channel.name, "already-sent", "delivered earlier by this worker")
        claim: Claim | None = None
        if rows is not None and self._ledger is not None and self._ledger_usable():
            try:
                claim = await self._ledger_call(
                    self._ledger.claim(
                        notice.plan_id, notice.failure_key, notice.digest, channel.ledger_key, existing=existing
                    )
                )
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger claim failed: {_fault(exc)}")
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
        self.memory.remember(key)
        if self._ledger is not None and not self._ledger_problem:
            owed = _Owed(notice.plan_id, notice.failure_key, notice.digest, channel.ledger_key, detail)
            if not self._ledger_usable():
                self.memory.owe(key, owed)
            else:
                try:
                    if claim is not None:
                        await self._ledger_call(self._ledger.mark_sent(claim, detail))
                    else:
                        await self._ledger_call(
                            self._ledger.record_sent(
                                notice.plan_id, notice.failure_key, notice.digest, channel.ledger_key, detail
                            )
                        )
                except Exception as exc:  # any ledger fault: written when the ledger answers again
                    run.ledger_faults.append(f"ledger write failed: {_fault(exc)}")
                    self.memory.owe(key, owed)
        return ChannelResult(channel.name, "sent", detail)

    async def _failed(
        self, run: _Run, channel: _Channel, claim: Claim | None, detail: str, log_extra: dict[str, str]
    ) -> ChannelResult:
        log.error("notice not delivered: %s", detail, extra=log_extra)
        if claim is not None and self._ledger is not None:
            try:
                await self._ledger_call(self._ledger.release(claim))
            except Exception as exc:  # any ledger fault: deliver anyway, report it
                run.ledger_faults.append(f"ledger release failed (retried after the claim lease): {_fault(exc)}")
        return ChannelResult(channel.name, "failed", clean_line(detail, 500))

    async def open_snapshot(self) -> frozenset[str] | None:
        """Which plans have open notice records (one ledger query), so a sweep resolves only those.

        None when there is no ledger or it cannot be read: callers then resolve plan by plan.
        """
        if self._ledger is None or not self._ledger_usable():
            return None
        await self.flush_owed()
        try:
            rows = await self._ledger_call(self._ledger.open_rows())
        except Exception as exc:  # any ledger fault: fall back to per-plan checks
            log.warning("notice ledger fault while listing open records: %s", _fault(exc))
            return None
        for partition, row, state in rows:  # what is recorded as sent, so an outage later repeats none of it
            if state == "sent":
                self.memory.remember((partition, row))
        return frozenset(partition for partition, _, _ in rows)

    def may_have_open(self, snapshot: frozenset[str] | None, plan: LabPlan) -> bool:
        return snapshot is None or partition_key(plan.id) in snapshot

    async def resolve(self, plan: LabPlan) -> None:
        """The plan is back in Succeeded: close its open ledger rows (one query). Ledger faults are logged."""
        if self._ledger is None or not self._ledger_usable():
            return  # while the ledger is down, the rows are closed by a later sweep
        extra = {"plan_id": plan.id.path, "channel": "ledger", "correlation_id": ""}
        await self.flush_owed()
        try:
            closed = await self._ledger_call(self._ledger.close_open(plan.id))
        except Exception as exc:  # any ledger fault: deliver anyway, report it
            log.error("notice ledger fault while resolving: %s", _fault(exc), extra=extra)
            return
        if closed:
            log.info("closed %d notice record(s): plan is back in Succeeded", closed, extra=extra)


def _fault(exc: BaseException) -> str:
    """Ledger faults name the error type and the service's short reason, never the connection string."""
    reason = getattr(exc, "reason", None) or getattr(exc, "error_code", None) or ""
    return clean_line(f"{type(exc).__name__} {reason}".strip(), 200)
