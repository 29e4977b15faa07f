"""The ARM adapter's bounds, against the local endpoint: LRO waits end, calls stay within budget."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.core.plans import PlanId
from shared.runtime.runs import build_runtime, load_settings

from .conftest import compliant_plan, plan_body


async def test_an_operation_that_never_finishes_is_not_polled_forever(emu: Any, configure: Any) -> None:
    body = plan_body("slow")
    emu.put_plan(body)
    emu.configure(lro_delay_s=60)  # ARM keeps answering InProgress
    runtime = await build_runtime(load_settings(), operation_timeout_s=1.0, poll_interval_s=0.2)
    try:
        started = time.monotonic()
        outcome = await runtime.reconciler.reconcile_plan(PlanId.parse(body["id"]))
        assert outcome.status == "proof-deferred"  # the next sweep reads the plan and proves the write
        assert time.monotonic() - started < 5
    finally:
        await runtime.close()


async def test_sweep_arm_calls_are_list_pages_plus_three_per_drifted_plan(emu: Any, configure: Any) -> None:
    emu.configure(page_size=4)
    drifted = [plan_body(f"drift-{i}", rg=f"rg-{i % 3}") for i in range(5)]
    clean = [compliant_plan(f"ok-{i}", rg=f"rg-{i % 3}") for i in range(12)]
    for body in drifted + clean:
        emu.put_plan(body)
    emu.clear_requests()
    runtime = await build_runtime(load_settings())
    try:
        summary = await runtime.reconciler.sweep([(load_settings().subscriptions[0], None)])
    finally:
        await runtime.close()
    pages = -(-(len(drifted) + len(clean)) // 4)
    calls = summary.arm_calls
    assert calls["list"] == pages
    # A read right before each write, the write, and the proof read once the service finished it.
    assert calls["get"] == 2 * len(drifted) and calls["patch"] == len(drifted)
    assert summary.counts["fixed"] == len(drifted) and summary.counts["compliant"] == len(clean)
    arm = [r for r in emu.requests() if r["kind"] == "arm"]
    assert len(arm) == sum(calls.values())  # the counter agrees with what the endpoint saw


async def test_a_link_to_another_host_is_never_followed_with_our_token(emu: Any, configure: Any) -> None:
    """A nextLink (or polling URL) pointing off the configured endpoint is refused, not requested."""
    from shared.errors import ArmError

    runtime = await build_runtime(load_settings())
    try:
        arm = runtime.session.plans
        with pytest.raises(ArmError, match="not followed"):
            arm._checked_url("https://attacker.example/steal?api-version=2023-06-07")
        with pytest.raises(ArmError, match="not followed"):
            arm._checked_url(emu.endpoint.replace("https://", "http://") + "/subscriptions")
        assert arm._checked_url(emu.endpoint + "/x") == emu.endpoint + "/x"
    finally:
        await runtime.close()


class _BrokenNotifier:
    """A notice channel with a bug: it raises for every failed plan (not an ARM error)."""

    enabled = True

    async def notify_failure(self, plan: Any, *, correlation_id: str | None = None) -> Any:
        raise RuntimeError("channel bug")

    async def resolve(self, plan: Any) -> None:
        return None

    async def open_snapshot(self) -> frozenset[str] | None:
        return None

    def may_have_open(self, snapshot: frozenset[str] | None, plan: Any) -> bool:
        return False


async def test_an_unexpected_error_on_one_plan_never_stops_the_sweep(emu: Any, configure: Any) -> None:
    import asyncio

    from shared.runtime.reconcile import Reconciler

    broken = plan_body("broken")
    emu.put_plan(broken)
    emu.fail_plan(broken["id"], {"action": "Update", "code": "X", "message": "m", "timestamp": "2026-11-23T00:00:00Z"})
    drifted = [plan_body(f"drift-{i}") for i in range(3)]
    for body in drifted:
        emu.put_plan(body)
    runtime = await build_runtime(load_settings())
    try:
        policy = runtime.reconciler.policy
        reconciler = Reconciler(runtime.session.plans, policy, notifier=_BrokenNotifier(), concurrency=2)
        scopes = [(load_settings().subscriptions[0], None)]
        summary = await asyncio.wait_for(reconciler.sweep(scopes), timeout=30)
        assert summary.counts["fixed"] == 3
        assert summary.failed == 1
        assert "RuntimeError" in summary.failures[0][1]

        # A caller's callback that raises ends the sweep with that error instead of hanging it.
        def explode(outcome: Any) -> None:
            raise KeyError("callback bug")

        with pytest.raises(KeyError, match="callback bug"):
            await asyncio.wait_for(reconciler.sweep(scopes, on_outcome=explode), timeout=30)
    finally:
        await runtime.close()


async def test_a_page_whose_next_link_points_back_ends_the_listing_with_an_error(
    emu: Any, configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nextLink naming a page already read once looped for ever; a hostile plan id in a page that
    does not map is kept to one capped line."""
    from shared.edge.arm import ArmError, BadPlan

    runtime = await build_runtime(load_settings())
    try:
        arm = runtime.session.plans
        calls: list[str] = []
        hostile_id = "/subscriptions/x/" + "A" * 100_000

        async def page(method: str, url: str, **kw: Any) -> dict[str, Any]:
            calls.append(url)
            if len(calls) > 20:
                raise RuntimeError("the listing went round in circles")
            loop_link = (
                f"{emu.endpoint}/subscriptions/s/providers/Microsoft.LabServices/labPlans"
                "?api-version=2023-06-07&$skipToken=1"
            )
            return {"value": [{"id": hostile_id, "properties": {}}], "nextLink": loop_link}

        monkeypatch.setattr(arm, "_json", page)
        items: list[Any] = []
        with pytest.raises(ArmError, match="already read") as raised:
            async for item in arm.list_plans("s"):
                items.append(item)
        assert raised.value.transient
        assert len(calls) == 2  # the first page and the linked page; its link back is not followed
        assert items and all(isinstance(i, BadPlan) and len(i.id) <= 300 for i in items)
    finally:
        await runtime.close()


async def test_the_lab_listing_has_the_same_loop_guard_and_caps_as_plans(
    emu: Any, configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lab listing was a copy of the plans' pager without the nextLink guard: it looped for ever."""
    from shared.edge.arm import ArmError
    from shared.edge.lab_arm import BadLab, LabsArm

    runtime = await build_runtime(load_settings())
    try:
        arm = runtime.session.plans
        calls: list[str] = []

        async def page(method: str, url: str, **kw: Any) -> dict[str, Any]:
            calls.append(url)
            if len(calls) > 20:
                raise RuntimeError("the listing went round in circles")
            loop_link = (
                f"{emu.endpoint}/subscriptions/s/providers/Microsoft.LabServices/labs"
                "?api-version=2023-06-07&$skipToken=1"
            )
            return {"value": [{"id": "/x/" + "B" * 100_000, "properties": {}}], "nextLink": loop_link}

        monkeypatch.setattr(arm, "_json", page)
        items: list[Any] = []
        with pytest.raises(ArmError, match="already read"):
            async for item in LabsArm(arm).list_labs("s"):
                items.append(item)
        assert len(calls) == 2
        assert items and all(isinstance(i, BadLab) and len(i.id) <= 300 for i in items)
    finally:
        await runtime.close()


async def test_at_most_list_concurrency_scopes_list_plans_and_at_most_as_many_list_labs(
    emu: Any, configure: Any
) -> None:
    """Memory follows the listing bound only if every page a scope lists is inside a bound: its plan pages
    (LABGUARD_LIST_CONCURRENCY scopes at once) and its lab pages (as many again). Lab pages had none: once
    compliant plans were settled as they were listed, every scope reached its lab listing at once."""
    from shared.runtime.settings import Settings
    from tests.labs.lab_fixtures import SUB as LAB_SUB
    from tests.labs.lab_fixtures import compliant_lab

    from .conftest import SUB

    groups = [f"rg-list-{i}" for i in range(8)]
    for rg in groups:
        emu.put_plan(compliant_plan(f"ok-{rg}", rg=rg))
        for n in range(3):  # three lab pages a scope: lab listing takes longer than plan listing
            lab = compliant_lab(f"lab-{rg}-{n}", rg=rg)
            lab["id"] = lab["id"].replace(LAB_SUB, SUB)  # in the app's subscription
            emu.put_lab(lab)
    configure(LABGUARD_LIST_CONCURRENCY="2", LABGUARD_RESOURCE_GROUPS=",".join(groups), LABGUARD_LABS="on")
    emu.configure(latency_ms=30, page_size=1)
    emu.clear_requests()
    settings: Settings = load_settings()
    runtime = await build_runtime(settings)
    try:
        await runtime.reconciler.sweep([(settings.subscriptions[0], rg) for rg in groups])
    finally:
        await runtime.close()
    spans: dict[str, dict[str, list[float]]] = {"labplans": {}, "labs": {}}
    for request in emu.requests():
        path = request["path"].lower().split("?")[0]
        collection = path.rsplit("/", 1)[-1]
        if request["kind"] != "arm" or "/resourcegroups/" not in path or collection not in spans:
            continue
        rg = path.split("/resourcegroups/")[1].split("/")[0]
        start, end = request["time"] - request["duration_ms"] / 1000, request["time"]
        span = spans[collection].setdefault(rg, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    most = {}
    for collection, by_scope in spans.items():
        assert sorted(by_scope) == groups, collection  # each scope listed its plans and its labs
        edges = sorted([(s, 1) for s, _ in by_scope.values()] + [(e, -1) for _, e in by_scope.values()])
        at_once = most[collection] = 0
        for _, step in edges:
            at_once += step
            most[collection] = max(most[collection], at_once)
    assert most == {"labplans": 2, "labs": 2}
