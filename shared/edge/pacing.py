"""Client-side pacing: keep labguard's ARM requests inside the subscription's budget, not on 429 retries.

Azure Resource Manager throttles with token buckets per region, per subscription, per service principal
and per operation type (reads, writes, deletes), since subscriptions moved to the regional throttling
architecture in 2024. The documented subscription limits are reads **250** burst refilled at **25/s**,
writes **200** at **10/s**, deletes **200** at **10/s**
(https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling,
"Regional throttling and token bucket algorithm"). An empty bucket answers 429 with ``Retry-After``.

A sweep over one large subscription can empty those buckets in seconds. Instead of sending requests ARM
will refuse and waiting out each 429, :class:`Pacer` keeps a local copy of each (subscription, kind)
bucket and makes a request wait for its token before it is sent. It also listens to ARM: the
``x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`` header of every answer (the server's
count after that request, which other clients of the same identity also spend) lowers the local count
when ARM has fewer tokens than we thought, and a 429's ``Retry-After`` holds the bucket until then.

Pure asyncio and arithmetic, no Azure imports: the clock and the sleep are injectable, so the
behaviour is tested as plain data. Single event loop: reservations are taken synchronously (no lock).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Kind = Literal["reads", "writes", "deletes"]

REMAINING_HEADER = "x-ms-ratelimit-remaining-subscription-{kind}"
_REMAINING_BY_KIND = {kind: REMAINING_HEADER.format(kind=kind) for kind in ("reads", "writes", "deletes")}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SUBSCRIPTION = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/]+)?/subscriptions/([^/?#]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Limit:
    """One token bucket: ``burst`` tokens at most, refilled at ``per_second``."""

    burst: float
    per_second: float

    def __post_init__(self) -> None:
        if not (self.burst >= 1 and self.per_second > 0):
            raise ValueError(f"a limit needs burst >= 1 and per_second > 0, not {self.burst}/{self.per_second}")


# ARM's documented per-subscription limits (see the module docstring for the source).
ARM_SUBSCRIPTION_LIMITS: Mapping[Kind, Limit] = {
    "reads": Limit(250, 25),
    "writes": Limit(200, 10),
    "deletes": Limit(200, 10),
}


def request_kind(method: str) -> Kind:
    """Which ARM bucket an HTTP method spends: GET/HEAD/OPTIONS read, DELETE deletes, the rest write."""
    upper = method.upper()
    if upper in _READ_METHODS:
        return "reads"
    return "deletes" if upper == "DELETE" else "writes"


def subscription_of(url: str) -> str | None:
    """The subscription id a request URL (absolute or a path) is scoped to, lower-case; None if tenant-level."""
    match = _SUBSCRIPTION.match(url)
    return match.group(1).lower() if match else None


class Ticket(NamedTuple):
    """One request's token: which bucket, its sequence number in that bucket, and how long it must wait.
    (A named tuple: one is made for every request a sweep sends.)"""

    subscription: str
    kind: Kind
    seq: int
    delay: float


@dataclass
class PacerStats:
    """What pacing did, for the sweep's report: requests paced, how many waited, for how long, 429s seen."""

    requests: int = 0
    waits: int = 0
    waited_s: float = 0.0
    max_wait_s: float = 0.0
    throttled: int = 0
    corrections: int = 0  # times ARM's remaining-count header lowered the local count


@dataclass
class _Bucket:
    burst: float
    rate: float
    tokens: float  # may go negative: tokens promised to requests still waiting for their turn
    stamp: float
    taken: int = 0  # tokens handed out so far (the sequence number of the last ticket)
    hold_until: float = 0.0  # a 429's Retry-After

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


@dataclass
class Pacer:
    """Per-subscription token buckets, one per request kind, mirroring ARM's.

    ``headroom`` (a fraction, default 5 %) is left unspent in both burst and rate, so requests that
    reach ARM a little bunched up (network jitter) still find a token, and other callers sharing the
    identity's budget keep a little of it.
    """

    limits: Mapping[Kind, Limit] = field(default_factory=lambda: dict(ARM_SUBSCRIPTION_LIMITS))
    headroom: float = 0.05
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stats: PacerStats = field(default_factory=PacerStats)
    _buckets: dict[tuple[str, Kind], _Bucket] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.headroom < 1.0:
            raise ValueError(f"headroom is a fraction in [0, 1), not {self.headroom}")
        missing = {"reads", "writes", "deletes"} - set(self.limits)
        if missing:
            raise ValueError(f"limits are missing for {sorted(missing)}")

    def _bucket(self, subscription: str, kind: Kind, now: float) -> _Bucket:
        key = (subscription.lower(), kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            limit = self.limits[kind]
            burst = max(1.0, limit.burst * (1.0 - self.headroom))
            bucket = self._buckets[key] = _Bucket(burst, limit.per_second * (1.0 - self.headroom), burst, now)
        else:
            bucket.refill(now)
        return bucket

    def reserve(self, subscription: str, kind: Kind) -> Ticket:
        """Take the next token of a bucket now; the ticket says how long to wait before sending (0: at once).

        Tokens are handed out in order, so waiting requests are served first come, first served.
        """
        now = self.clock()
        bucket = self._bucket(subscription, kind, now)
        bucket.tokens -= 1.0
        bucket.taken += 1
        delay = -bucket.tokens / bucket.rate if bucket.tokens < 0 else 0.0
        delay = max(delay, bucket.hold_until - now, 0.0)
        self.stats.requests += 1
        if delay > 0:
            self.stats.waits += 1
            self.stats.waited_s += delay
            self.stats.max_wait_s = max(self.stats.max_wait_s, delay)
        return Ticket(subscription.lower(), kind, bucket.taken, delay)

    async def acquire(self, subscription: str, kind: Kind) -> Ticket:
        """Reserve a token and wait for it."""
        ticket = self.reserve(subscription, kind)
        if ticket.delay > 0:
            await self.sleep(ticket.delay)
        return ticket

    def observe(self, ticket: Ticket, status: int, headers: Mapping[str, str]) -> None:
        """Learn from ARM's answer to the request ``ticket`` let through.

        ``remaining`` (ARM's count right after our request) minus the tokens we handed out since is
        the most this bucket can hold now; the local count only ever goes down to it, never up. A 429
        means the bucket is empty; its ``Retry-After`` holds the bucket until then.
        """
        now = self.clock()
        bucket = self._bucket(ticket.subscription, ticket.kind, now)
        remaining = _number(headers.get(_REMAINING_BY_KIND[ticket.kind]))
        if status == 429:
            self.stats.throttled += 1
            remaining = 0.0 if remaining is None else min(remaining, 0.0)
            retry_after = _number(headers.get("Retry-After"))
            hold = retry_after if retry_after is not None else 1.0 / bucket.rate
            bucket.hold_until = max(bucket.hold_until, now + min(max(hold, 0.0), 60.0))
        if remaining is None:
            return
        # The local bucket is ARM's minus the headroom (it starts at burst * (1 - headroom)).
        reserve = self.limits[ticket.kind].burst * self.headroom
        ceiling = remaining - reserve - (bucket.taken - ticket.seq)
        if ceiling < bucket.tokens:
            bucket.tokens = ceiling
            self.stats.corrections += 1

    def available(self, subscription: str, kind: Kind) -> float:
        """Tokens the local bucket holds now (negative: promised to waiting requests)."""
        return self._bucket(subscription, kind, self.clock()).tokens


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
