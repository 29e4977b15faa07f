"""shared.edge.pacing as plain data: an injected clock, no real sleeping, no timing assertions."""

from __future__ import annotations

import asyncio

import pytest

from shared.edge.pacing import (
    ARM_SUBSCRIPTION_LIMITS,
    Limit,
    Pacer,
    request_kind,
    subscription_of,
)

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
OTHER = "11111111-2222-3333-4444-555555555555"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(clock: Clock, headroom: float = 0.0, **limits: Limit) -> Pacer:
    chosen = {**ARM_SUBSCRIPTION_LIMITS, **limits}
    return Pacer(limits=chosen, headroom=headroom, clock=clock, sleep=clock.sleep)


def test_defaults_are_arms_documented_subscription_limits() -> None:
    assert ARM_SUBSCRIPTION_LIMITS["reads"] == Limit(250, 25)
    assert ARM_SUBSCRIPTION_LIMITS["writes"] == Limit(200, 10)
    assert ARM_SUBSCRIPTION_LIMITS["deletes"] == Limit(200, 10)
    assert Pacer().headroom == 0.05


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("GET", "reads"),
        ("head", "reads"),
        ("PATCH", "writes"),
        ("PUT", "writes"),
        ("POST", "writes"),
        ("DELETE", "deletes"),
    ],
)
def test_request_kind_follows_arms_buckets(method: str, kind: str) -> None:
    assert request_kind(method) == kind


def test_subscription_of_absolute_urls_and_paths() -> None:
    assert subscription_of(f"https://management.azure.com/subscriptions/{SUB.upper()}/providers/x?a=1") == SUB
    assert subscription_of(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/p") == SUB
    assert subscription_of(f"https://127.0.0.1:8443/subscriptions/{SUB}?api-version=1") == SUB
    assert subscription_of("https://management.azure.com/tenants?api-version=2022-01-01") is None
    assert subscription_of("https://management.azure.com/providers/Microsoft.LabServices/operations") is None


def test_the_burst_goes_out_at_once_then_requests_are_spaced_at_the_refill_rate() -> None:
    clock = Clock()
    p = pacer(clock, writes=Limit(3, 2))
    delays = [p.reserve(SUB, "writes").delay for _ in range(6)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]
    assert p.stats.requests == 6 and p.stats.waits == 3
    assert p.stats.waited_s == pytest.approx(3.0) and p.stats.max_wait_s == pytest.approx(1.5)


def test_tokens_refill_with_time_up_to_the_burst_only() -> None:
    clock = Clock()
    p = pacer(clock, reads=Limit(4, 1))
    for _ in range(4):
        p.reserve(SUB, "reads")
    assert p.available(SUB, "reads") == 0
    clock.now += 2.5
    assert p.available(SUB, "reads") == pytest.approx(2.5)
    clock.now += 100
    assert p.available(SUB, "reads") == 4


def test_buckets_are_per_subscription_and_per_kind() -> None:
    clock = Clock()
    p = pacer(clock, reads=Limit(1, 1), writes=Limit(1, 1))
    assert p.reserve(SUB, "reads").delay == 0
    assert p.reserve(SUB, "writes").delay == 0
    assert p.reserve(OTHER, "reads").delay == 0
    assert p.reserve(SUB.upper(), "reads").delay == 1.0  # ids are case-insensitive


def test_headroom_keeps_part_of_the_burst_and_rate_unspent() -> None:
    clock = Clock()
    p = pacer(clock, headroom=0.1, writes=Limit(10, 10))
    delays = [p.reserve(SUB, "writes").delay for _ in range(10)]
    assert delays[:9] == [0.0] * 9
    assert delays[9] == pytest.approx(1 / 9)


def test_acquire_sleeps_exactly_the_tickets_delay() -> None:
    clock = Clock()
    p = pacer(clock, writes=Limit(1, 4))

    async def run() -> list[float]:
        return [(await p.acquire(SUB, "writes")).delay for _ in range(3)]

    assert asyncio.run(run()) == [0.0, 0.25, 0.25]
    assert clock.slept == [0.25, 0.25]


def test_arms_remaining_count_lowers_the_local_bucket() -> None:
    clock = Clock()
    p = pacer(clock, reads=Limit(250, 25))
    first = p.reserve(SUB, "reads")
    for _ in range(9):
        p.reserve(SUB, "reads")
    assert p.available(SUB, "reads") == 240
    # Another client of the same identity spent most of the budget: ARM had 30 left after our first request,
    # and our nine later requests come off that too.
    p.observe(first, 200, {"x-ms-ratelimit-remaining-subscription-reads": "30"})
    assert p.available(SUB, "reads") == 21
    assert p.stats.corrections == 1


def test_arms_remaining_count_never_raises_the_local_bucket() -> None:
    clock = Clock()
    p = pacer(clock, writes=Limit(200, 10))
    ticket = p.reserve(SUB, "writes")
    p.observe(ticket, 200, {"x-ms-ratelimit-remaining-subscription-writes": "199"})
    assert p.available(SUB, "writes") == 199
    p.observe(ticket, 200, {"x-ms-ratelimit-remaining-subscription-writes": "1000"})
    assert p.available(SUB, "writes") == 199
    assert p.stats.corrections == 0


def test_remaining_count_is_read_in_local_units_with_headroom() -> None:
    clock = Clock()
    p = pacer(clock, headroom=0.1, writes=Limit(100, 10))
    ticket = p.reserve(SUB, "writes")  # local bucket: 90 - 1
    p.observe(ticket, 200, {"x-ms-ratelimit-remaining-subscription-writes": "50"})
    assert p.available(SUB, "writes") == pytest.approx(40)  # 50 on ARM minus the 10 kept in reserve


def test_a_429_empties_the_bucket_and_holds_it_for_retry_after() -> None:
    clock = Clock()
    p = pacer(clock, writes=Limit(200, 10))
    ticket = p.reserve(SUB, "writes")
    p.observe(ticket, 429, {"Retry-After": "3"})
    assert p.stats.throttled == 1
    nxt = p.reserve(SUB, "writes")
    assert nxt.delay == pytest.approx(3.0)  # held by Retry-After (longer than the 0.1 s refill)
    clock.now += 3.0
    assert p.reserve(SUB, "writes").delay == 0.0  # 3 s refilled 30 tokens and the hold is over


def test_a_429_without_retry_after_waits_for_one_refill() -> None:
    clock = Clock()
    p = pacer(clock, reads=Limit(250, 25))
    ticket = p.reserve(SUB, "reads")
    p.observe(ticket, 429, {})
    assert p.reserve(SUB, "reads").delay == pytest.approx(0.04)


def test_retry_after_is_capped_and_bad_headers_are_ignored() -> None:
    clock = Clock()
    p = pacer(clock)
    ticket = p.reserve(SUB, "reads")
    p.observe(ticket, 200, {"x-ms-ratelimit-remaining-subscription-reads": "lots"})
    assert p.available(SUB, "reads") == 249
    p.observe(ticket, 429, {"Retry-After": "86400"})
    assert p.reserve(SUB, "reads").delay == pytest.approx(60.0)
    p.observe(ticket, 429, {"Retry-After": "nan"})
    assert p.stats.throttled == 2


def test_waiting_requests_are_served_in_order() -> None:
    clock = Clock()
    p = pacer(clock, writes=Limit(1, 1))
    tickets = [p.reserve(SUB, "writes") for _ in range(4)]
    assert [t.seq for t in tickets] == [1, 2, 3, 4]
    assert [t.delay for t in tickets] == [0.0, 1.0, 2.0, 3.0]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        Limit(0, 1)
    with pytest.raises(ValueError, match="burst"):
        Limit(10, 0)
    with pytest.raises(ValueError, match="headroom"):
        Pacer(headroom=1.0)
    with pytest.raises(ValueError, match="missing"):
        Pacer(limits={"reads": Limit(1, 1)})
