"""The write loop through the real Functions: read right before every write, prove it after, back off.

Every way the local endpoint can answer a write (200 at once, 202 with the usual LRO headers, the
spec example's 202 with only a bare Location, an operation URL our role cannot read) must end in the
same fixed plan; a service that drops a written value must not cause a PATCH per sweep; a plan that
turns Failed or busy while labguard waits is not written.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.core.plans import PlanId
from shared.edge.pacing import Pacer
from shared.errors import BusyRetry
from shared.runtime.runs import build_runtime, load_settings

from .conftest import plan_body
from .test_functions_e2e import arm_requests, deliver, patches, shutdown_of, tick, write_event

FIXED = {"noConnectDelay": "PT30M", "idleDelay": "PT30M"}


def records(caplog: Any, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith(event + " ")
    ]


@pytest.mark.parametrize("patch_mode", ["merge", "replace"])
@pytest.mark.parametrize(
    ("patch_reply", "operation_status"),
    [("lro", None), ("200", None), ("spec", None), ("lro", 403), ("spec", 403), ("lro", 400)],
)
async def test_every_write_answer_ends_in_a_proved_fix(
    emu: Any, configure: Any, caplog: Any, patch_reply: str, operation_status: int | None, patch_mode: str
) -> None:
    emu.configure(patch_reply=patch_reply, operation_status=operation_status, patch_mode=patch_mode)
    body = plan_body("answers")
    emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    await deliver(write_event(body["id"]))  # raises if the fix failed
    assert [r["status"] for r in patches(emu)] == [200 if patch_reply == "200" else 202]
    assert {k: shutdown_of(emu, body["id"])[k] for k in FIXED} == FIXED
    assert records(caplog, "plan.fixed") and not records(caplog, "plan.unconverged")
    calls = arm_requests(emu)
    after = calls[[r["method"] for r in calls].index("PATCH") + 1 :]
    assert after[-1]["method"] == "GET" and "/labplans/" in after[-1]["path"].lower()  # the proof read
    if operation_status is not None:
        (refused,) = records(caplog, "arm.operation-url-unreadable")
        assert refused["status"] == operation_status
    if patch_reply == "spec" and operation_status is None:
        polled = [r for r in after if "/operationresults/" in r["path"].lower()]
        assert polled and all(r["query"].get("api-version") == "2023-06-07" for r in polled)


@pytest.mark.parametrize("patch_mode", ["merge", "replace"])
async def test_a_dropped_value_is_patched_once_then_backed_off_across_sweeps(
    emu: Any, configure: Any, caplog: Any, patch_mode: str
) -> None:
    # The service silently drops the written idleDelay: merging keeps the old value, replacing loses it.
    emu.configure(drop_written="idleDelay", patch_mode=patch_mode)
    body = plan_body("dropper")
    emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    for _ in range(4):
        await tick()
    assert len(patches(emu)) == 1
    (unconverged,) = records(caplog, "plan.unconverged")
    read_back = "01:00" if patch_mode == "merge" else None
    assert unconverged["difference"] == [
        {"field": "properties.defaultAutoShutdownProfile.idleDelay", "written": "PT30M", "read_back": read_back}
    ]
    assert unconverged["attempts"] == 1
    retry_at = datetime.fromisoformat(unconverged["retry_at"])
    assert timedelta(minutes=29) < retry_at - datetime.now(UTC) <= timedelta(minutes=30)
    held = records(caplog, "plan.write-backoff")
    assert len(held) == 3 and {h["retry_at"] for h in held} == {unconverged["retry_at"]}
    summaries = records(caplog, "sweep.summary")
    assert [s["unconverged"] for s in summaries] == [1, 1, 1, 1]
    assert [s["fixed"] for s in summaries] == [0, 0, 0, 0]
    assert not records(caplog, "plan.fixed")
    assert shutdown_of(emu, body["id"])["noConnectDelay"] == "PT30M"  # what the service did take stays

    # The owner loosens another field: that drift is written (with the dropped one), not held.
    emu.clear_requests()
    plan = emu.get_plan(body["id"])
    plan["properties"]["defaultAutoShutdownProfile"]["disconnectDelay"] = "PT2H"
    emu.put_plan(plan)
    await tick()
    assert len(patches(emu)) == 1


async def test_backoff_grows_exponentially_with_a_cap(emu: Any, configure: Any) -> None:
    """A day of 15-minute sweeps against a service that always drops the value: 6 PATCHes, not 96."""
    emu.configure(drop_written="idleDelay")
    emu.put_plan(plan_body("dropper"))
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    runtime = await build_runtime(load_settings())
    try:
        from shared.runtime.reconcile import Reconciler

        reconciler = Reconciler(runtime.session.plans, runtime.reconciler.policy, clock=lambda: now[0])
        emu.clear_requests()
        retries = []
        for _ in range(96):
            summary = await reconciler.sweep([(load_settings().subscriptions[0], None)])
            assert summary.counts["unconverged"] == 1
            state = await reconciler.backoff.get(PlanId.parse(plan_body("dropper")["id"]))
            assert state is not None
            retries.append(state.retry_at - now[0])
            now[0] += timedelta(minutes=15)
    finally:
        await runtime.close()
    # Written at 0, 0:30, 1:30, 3:30, 7:30, 15:30 (30 min doubling); the next is 31:30, after the day.
    assert len(patches(emu)) == 6
    assert max(retries) <= timedelta(hours=24)


async def test_a_plan_that_turns_failed_during_a_429_wait_is_not_written(emu: Any, configure: Any, caplog: Any) -> None:
    body = plan_body("throttled")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/throttled.*", status=429, retry_after=2, count=1)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    delivery = asyncio.create_task(deliver(write_event(body["id"])))
    for _ in range(200):  # as soon as the 429 went out, the plan fails (its owner's operation)
        if any(r["status"] == 429 for r in patches(emu)):
            break
        await asyncio.sleep(0.05)
    emu.fail_plan(body["id"], {"action": "Update", "code": "SubnetInUse", "message": "in use"})
    await delivery
    assert [r["status"] for r in patches(emu)] == [429]  # not re-sent: the re-read found it Failed
    assert emu.get_plan(body["id"])["properties"]["provisioningState"] == "Failed"
    assert records(caplog, "plan.provisioning-failed")  # and its failure is noticed
    methods = [r["method"] for r in arm_requests(emu)]
    assert methods[methods.index("PATCH") + 1 :] == ["GET"]


async def test_a_write_answered_429_is_read_again_before_it_is_sent_again(emu: Any, configure: Any) -> None:
    body = plan_body("again")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/again.*", status=429, retry_after=0, count=1)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    sequence = [(r["method"], r["status"]) for r in arm_requests(emu) if "/labplans/" in r["path"].lower()]
    first = sequence.index(("PATCH", 429))
    assert sequence[first + 1 : first + 3] == [("GET", 200), ("PATCH", 202)]


async def test_a_plan_that_turns_failed_during_the_pacers_wait_is_not_written(emu: Any, configure: Any) -> None:
    body = plan_body("paced")
    emu.put_plan(body)
    subscription = load_settings().subscriptions[0]
    failed = []

    async def sleep(seconds: float) -> None:
        if not failed:  # while labguard waits for its write budget, the plan's owner breaks it
            emu.fail_plan(body["id"], {"action": "Update", "code": "X", "message": "m"})
            failed.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))

    pacer = Pacer(headroom=0.0, sleep=sleep)
    runtime = await build_runtime(load_settings(), pacer=pacer)
    try:
        for _ in range(200):  # spend the write budget: the next write must wait
            pacer.reserve(subscription, "writes")
        emu.clear_requests()
        outcome = await runtime.reconciler.reconcile_plan(PlanId.parse(body["id"]))
    finally:
        await runtime.close()
    assert failed, "the write waited for the pacer"
    assert patches(emu) == []
    assert outcome.status == "provisioning-failed"


async def test_an_owners_change_to_a_busy_plan_is_delivered_again_within_a_bound(
    emu: Any, configure: Any, caplog: Any
) -> None:
    body = plan_body("busy")
    emu.put_plan(body)
    emu.set_state(body["id"], "Updating")
    caplog.set_level("INFO", logger="labguard")
    fresh = write_event(body["id"])
    fresh["eventTime"] = datetime.now(UTC).isoformat()
    with pytest.raises(BusyRetry, match="Event Grid will deliver it again"):
        await deliver(fresh)
    (retry,) = records(caplog, "plan.busy-retry")
    assert retry["state"] == "updating" and retry["plan_id"] == body["id"].lower()
    assert not [r for r in caplog.records if r.exc_info]  # a record, not a traceback

    stale = write_event(body["id"])
    stale["eventTime"] = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    await deliver(stale)  # locked for hours: acknowledged, the sweep takes it from here
    assert records(caplog, "plan.busy-left-to-sweep")
    assert patches(emu) == []


async def test_the_event_path_answers_within_event_grids_timeout(
    emu: Any, configure: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import shared.runtime.runs

    monkeypatch.setattr(shared.runtime.runs, "EVENT_WRITE_WAIT_S", 1.0, raising=False)  # 20 s in production
    emu.configure(lro_delay_s=30)
    body = plan_body("slow")
    emu.put_plan(body)
    caplog.set_level("INFO", logger="labguard")
    started = time.monotonic()
    await deliver(write_event(body["id"]))
    assert time.monotonic() - started < 5
    (deferred,) = records(caplog, "plan.proof-deferred")
    assert deferred["plan_id"] == body["id"].lower()
    assert len(patches(emu)) == 1


def test_emulator_write_modes_are_process_flags_too() -> None:
    from emulator.__main__ import _parser

    args = _parser().parse_args(
        ["--patch-reply", "spec", "--operation-status", "403", "--drop-written", "idleDelay", "--stale-read-s", "1.5"]
    )
    assert (args.patch_reply, args.operation_status, args.drop_written) == ("spec", 403, "idleDelay")
    assert args.stale_read_s == 1.5


async def test_own_failure_event_is_not_dropped(emu: Any, configure: Any, caplog: Any) -> None:
    body = plan_body("ownfail")
    emu.put_plan(body)
    emu.fail_plan(body["id"], {"code": "InternalServerError", "message": "boom"}, next_write=True)
    emu.clear_events()
    caplog.set_level("INFO", logger="labguard")
    await deliver(write_event(body["id"]))  # labguard writes; the service fails that write
    (failed,) = records(caplog, "plan.write-failed")
    assert failed["why"] == "the write labguard just made"
    failure_events = [e for e in emu.events() if e["eventType"] == "Microsoft.Resources.ResourceWriteFailure"]
    assert failure_events, "the endpoint emits the failure event of labguard's own PATCH"
    caplog.clear()
    emu.clear_requests()
    await deliver(failure_events[0])
    assert not records(caplog, "event.own-write")
    (again,) = records(caplog, "plan.write-failed")
    assert again["why"] == "the failure event names labguard"
    assert not records(caplog, "plan.provisioning-failed")
    caplog.clear()
    await tick()  # the sweep: systemData names labguard, so it is labguard's failure, not the owner's
    (swept,) = records(caplog, "plan.write-failed")
    assert swept["why"] == "systemData names labguard"
    assert not records(caplog, "plan.provisioning-failed")


class _SlowLedgerNotifier:
    """Notice channels whose ledger answers slowly; meanwhile the plan's owner breaks the plan."""

    enabled = True

    def __init__(self, emu: Any, plan_id: str) -> None:
        self._emu, self._plan_id = emu, plan_id

    async def notify_failure(self, plan: Any, *, correlation_id: str | None = None) -> Any:
        return None

    async def notify_admin(self, plan: Any, *, reason: str, correlation_id: str | None = None) -> Any:
        return None

    async def resolve(self, plan: Any) -> None:
        await asyncio.sleep(1.2)
        self._emu.fail_plan(self._plan_id, {"action": "Update", "code": "X", "message": "m"})

    async def open_snapshot(self) -> frozenset[str] | None:
        return None

    def may_have_open(self, snapshot: frozenset[str] | None, plan: Any) -> bool:
        return True


async def test_a_slow_step_between_the_read_and_the_write_means_a_fresh_read(emu: Any, configure: Any) -> None:
    from shared.runtime.reconcile import Reconciler

    body = plan_body("slowledger")
    emu.put_plan(body)
    runtime = await build_runtime(load_settings())
    try:
        notifier = _SlowLedgerNotifier(emu, body["id"])
        reconciler = Reconciler(runtime.session.plans, runtime.reconciler.policy, notifier=notifier)
        emu.clear_requests()
        outcome = await reconciler.reconcile_plan(PlanId.parse(body["id"]))
    finally:
        await runtime.close()
    assert patches(emu) == []
    assert outcome.status == "provisioning-failed"


async def test_the_event_path_does_not_sit_out_a_long_retry_after(emu: Any, configure: Any) -> None:
    import time

    from shared.errors import RunFailed

    body = plan_body("longwait")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/longwait.*", status=429, retry_after=40, count=1)
    emu.clear_requests()
    for _ in range(2):  # the delivery, and a redelivery while ARM's Retry-After still holds writes
        started = time.monotonic()
        with pytest.raises(RunFailed, match="redeliver"):
            await deliver(write_event(body["id"]))
        assert time.monotonic() - started < 10  # Event Grid waits 30 s for an answer
    assert [r["status"] for r in patches(emu)] == [429]  # no write sent into the Retry-After


async def test_a_plan_that_turned_busy_after_the_read_is_read_again_then_written(emu: Any, configure: Any) -> None:
    body = plan_body("raced")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/raced.*", status=409, count=1)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    sequence = [(r["method"], r["status"]) for r in arm_requests(emu) if "/labplans/" in r["path"].lower()]
    first = sequence.index(("PATCH", 409))
    assert sequence[first + 1 : first + 3] == [("GET", 200), ("PATCH", 202)]
    assert shutdown_of(emu, body["id"])["idleDelay"] == "PT30M"


async def test_a_slow_backoff_lookup_comes_before_the_read_not_between_read_and_write(emu: Any, configure: Any) -> None:
    """A backoff table that answers slowly (up to its 3 s timeout) while the owner changes the plan:
    the write is read after the lookup, so the owner's change is sent back, not undone."""
    from shared.runtime.reconcile import Reconciler
    from shared.runtime.write_backoff import MemoryBackoff

    body = plan_body("slowtable")
    emu.put_plan(body)

    owners_values: list[str] = []

    class SlowTable(MemoryBackoff):
        async def get(self, plan_id: PlanId) -> Any:
            await asyncio.sleep(1.2)
            owners_values.append(f"PT{2 + len(owners_values)}M")  # meanwhile the owner tightens, again
            owned = emu.get_plan(body["id"])
            owned["properties"]["defaultAutoShutdownProfile"]["disconnectDelay"] = owners_values[-1]
            emu.put_plan(owned)
            return await super().get(plan_id)

    settings = load_settings()
    runtime = await build_runtime(settings)
    try:
        reconciler = Reconciler(runtime.session.plans, runtime.reconciler.policy, backoff=SlowTable())
        emu.clear_requests()
        summary = await reconciler.sweep([(settings.subscriptions[0], None)])
    finally:
        await runtime.close()
    assert summary.counts["fixed"] == 1
    calls = [r for r in arm_requests(emu) if "/labplans/slowtable" in r["path"].lower()]
    first_patch = [r["method"] for r in calls].index("PATCH")
    assert calls[first_patch - 1]["method"] == "GET"  # the read right before the write
    assert len(patches(emu)) == 1
    assert shutdown_of(emu, body["id"])["disconnectDelay"] == owners_values[-1]  # the owner's last word stands


@pytest.mark.parametrize("retry_after", [float("nan"), float("inf"), -5.0])
async def test_a_hostile_retry_after_does_not_hang_the_write(emu: Any, configure: Any, retry_after: float) -> None:
    """``Retry-After: nan`` once made ``asyncio.sleep(nan)``, which never returns: the write hung for good."""
    from shared.edge.arm import _retry_after

    assert _retry_after({"Retry-After": str(retry_after)}, 1.0) == 1.0
    body = plan_body("hostile")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/hostile.*", status=429, retry_after=retry_after, count=1)
    emu.clear_requests()
    await asyncio.wait_for(deliver(write_event(body["id"])), timeout=15)
    assert [r["status"] for r in patches(emu)] == [429, 202]
    assert shutdown_of(emu, body["id"])["idleDelay"] == "PT30M"


@pytest.mark.parametrize("patch_reply", ["lro", "spec"])
async def test_a_read_that_still_shows_the_plan_before_the_202_is_not_the_proof(
    emu: Any, configure: Any, caplog: Any, patch_reply: str
) -> None:
    """The operation URL cannot be read and the first GET after the 202 still shows the old, Succeeded
    plan: that read once proved "not converged" and held the plan back 30 minutes."""
    emu.configure(patch_reply=patch_reply, operation_status=403, stale_read_s=1.0)
    body = plan_body("lagging")
    emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    await deliver(write_event(body["id"]))
    assert len(patches(emu)) == 1
    assert records(caplog, "plan.fixed") and not records(caplog, "plan.unconverged")
    assert {k: shutdown_of(emu, body["id"])[k] for k in FIXED} == FIXED


async def test_a_hostile_state_found_right_before_the_write_is_logged_capped(
    emu: Any, configure: Any, caplog: Any
) -> None:
    """The read right before the write finds a provisioningState nobody knows, 100 000 characters
    long: the write is dropped and the record names the state in one capped line."""
    from shared.runtime.reconcile import Reconciler
    from shared.runtime.write_backoff import MemoryBackoff

    body = plan_body("hostilestate")
    emu.put_plan(body)

    class TurningTable(MemoryBackoff):
        async def get(self, plan_id: PlanId) -> Any:
            turned = emu.get_plan(body["id"])
            turned["properties"]["provisioningState"] = "Weird" + "\n\x1b" + "W" * 100_000
            emu.put_plan(turned)
            return await super().get(plan_id)

    caplog.set_level("INFO", logger="labguard")
    settings = load_settings()
    runtime = await build_runtime(settings)
    try:
        reconciler = Reconciler(runtime.session.plans, runtime.reconciler.policy, backoff=TurningTable())
        emu.clear_requests()
        await reconciler.sweep([(settings.subscriptions[0], None)])
    finally:
        await runtime.close()
    assert patches(emu) == []
    (dropped,) = records(caplog, "plan.write-dropped")
    assert dropped["state"].startswith("Weird") and len(dropped["state"]) <= 60 and "\n" not in dropped["state"]
