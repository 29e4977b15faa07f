"""The Functions app end to end: real azure.functions objects, real SDK, real HTTPS, the local endpoint.

Assertions are on what the endpoint saw (its request log and stored state), not on internals.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequestConverter

from function_app import app
from shared.errors import RunFailed
from tests.enforcement_support import CONN, PATCH_MODES, SHUT, assert_only_fixed, patch_changes

from .conftest import OTHER_SUB, POLICY, compliant_plan, plan_body

FUNCTIONS = {f.get_function_name(): f for f in app.get_functions()}
FIXES_OF_EXAMPLE = {SHUT: {"noConnectDelay": "PT30M", "idleDelay": "PT30M"}}
# Enforcement runs against an endpoint that merges a PATCH's nested profiles and one that replaces them.
BOTH_PATCH_MODES = pytest.mark.parametrize("emu", PATCH_MODES, indirect=True)


async def deliver(body: dict[str, Any]) -> None:
    """Decode the event exactly as the Python worker does and call the indexed function."""
    event = EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})
    await FUNCTIONS["eventgrid_lab_plan"].get_user_function()(event)


async def tick(past_due: bool = False) -> None:
    timer = TimerRequestConverter.decode(Datum(json.dumps({"IsPastDue": past_due}), "json"), trigger_metadata={})
    await FUNCTIONS["timer_sweep"].get_user_function()(timer)


def write_event(
    plan_id: str, *, caller_oid: str = "0f0f0f0f-0000-0000-0000-000000000001", event_id: str | None = None
) -> dict[str, Any]:
    """A ResourceWriteSuccess as a subscription system topic sends it (Event Grid schema)."""
    sub = plan_id.split("/")[2]
    return {
        "id": event_id or str(uuid.uuid4()),
        "topic": f"/subscriptions/{sub}",
        "subject": plan_id,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-23T10:00:00Z",
        "dataVersion": "2",
        "data": {
            "authorization": {"scope": plan_id, "action": "Microsoft.LabServices/labPlans/write", "evidence": {}},
            "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": caller_oid},
            "correlationId": str(uuid.uuid4()),
            "resourceProvider": "Microsoft.LabServices",
            "resourceUri": plan_id,
            "operationName": "Microsoft.LabServices/labPlans/write",
            "status": "Succeeded",
            "subscriptionId": sub,
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        },
    }


def arm_requests(emu: Any) -> list[dict[str, Any]]:
    """What reached ARM (token requests to the identity endpoint are not ARM calls)."""
    return [r for r in emu.requests() if r["kind"] == "arm"]


def patches(emu: Any) -> list[dict[str, Any]]:
    return [r for r in arm_requests(emu) if r["method"] == "PATCH"]


def shutdown_of(emu: Any, plan_id: str) -> dict[str, Any]:
    return emu.get_plan(plan_id)["properties"]["defaultAutoShutdownProfile"]


def test_indexed_functions_are_what_azure_loads() -> None:
    assert set(FUNCTIONS) == {"eventgrid_lab_plan", "timer_sweep", "sweep_scope", "sweep_scope_poison"}
    grid = FUNCTIONS["eventgrid_lab_plan"].get_bindings()
    timer = FUNCTIONS["timer_sweep"].get_bindings()
    assert [b.type for b in grid] == ["eventGridTrigger"]
    assert [b.type for b in timer] == ["timerTrigger"]
    assert timer[0].schedule == "%LABGUARD_SCHEDULE%"
    raw = json.loads(FUNCTIONS["timer_sweep"].get_raw_bindings()[0])
    assert raw["direction"] == "IN" and raw["useMonitor"] is True


@BOTH_PATCH_MODES
async def test_event_fixes_drift_in_enforce_mode_with_one_patch(emu: Any, configure: Any) -> None:
    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    sent = patches(emu)
    assert len(sent) == 1
    # the drifted profile whole, as read, with only the drifted leaves changed; the connection profile left out
    assert patch_changes(sent[0]["body"], body) == FIXES_OF_EXAMPLE
    shutdown = shutdown_of(emu, body["id"])
    assert shutdown["noConnectDelay"] == "PT30M" and shutdown["idleDelay"] == "PT30M"
    assert shutdown["disconnectDelay"] == "00:05"  # stricter than the bound, written as ARM had it: untouched
    assert_only_fixed(body, emu.get_plan(body["id"]), FIXES_OF_EXAMPLE)


@BOTH_PATCH_MODES
async def test_fixing_one_channel_keeps_the_others_under_merge_and_replace(
    emu: Any, configure: Any, tmp_path: Any
) -> None:
    """clientRdpAccess Public is within its bound; fixing clientSshAccess must not reset it to None (no new lab
    could be reached), whether the service merges the profile or replaces it."""
    strict = tmp_path / "ssh-private.yaml"
    strict.write_text(POLICY.replace("clientSshAccess: Public", "clientSshAccess: Private"))
    configure(LABGUARD_POLICY_FILE=str(strict))
    body = compliant_plan("rdp-public")
    body["properties"][CONN] = {"webSshAccess": "None", "clientSshAccess": "Public", "clientRdpAccess": "Public"}
    emu.put_plan(body)
    await deliver(write_event(body["id"]))
    stored = emu.get_plan(body["id"])
    assert stored["properties"][CONN]["clientSshAccess"] == "Private"
    assert stored["properties"][CONN]["clientRdpAccess"] == "Public"
    assert_only_fixed(body, stored, {CONN: {"clientSshAccess": "Private"}})
    (sent,) = patches(emu)
    assert sent["body"] == {"properties": {CONN: {**body["properties"][CONN], "clientSshAccess": "Private"}}}


async def test_absent_channels_and_unknown_values_are_never_written(emu: Any, configure: Any, caplog: Any) -> None:
    """An absent channel is None (the spec's default), within any bound; an unknown value is reported, kept."""
    absent = compliant_plan("absent-channels")
    absent["properties"][CONN] = {"webSshAccess": "None"}
    unknown = compliant_plan("unknown-channel")
    unknown["properties"][CONN]["clientRdpAccess"] = "Everyone"
    for body in (absent, unknown):
        emu.put_plan(body)
    caplog.set_level("INFO", logger="labguard")
    emu.clear_requests()
    for body in (absent, unknown):
        await deliver(write_event(body["id"]))
    assert patches(emu) == []
    assert emu.get_plan(absent["id"])["properties"][CONN] == {"webSshAccess": "None"}
    records = [
        json.loads(r.getMessage().split(" ", 1)[1])
        for r in caplog.records
        if r.getMessage().startswith("plan.unknown-value ")
    ]
    assert [(r["plan_id"], r["field"], r["observed"]) for r in records] == [
        (unknown["id"].lower(), f"properties.{CONN}.clientRdpAccess", "'Everyone'")
    ]


async def test_absent_delay_of_a_feature_that_is_off_is_not_drift(emu: Any, configure: Any, tmp_path: Any) -> None:
    """Real reads can leave out the delay of a Disabled feature (the endpoint's omit_off_delays mode)."""
    off_allowed = tmp_path / "disconnect-not-required.yaml"
    off_allowed.write_text(POLICY.replace("  shutdownOnDisconnect: Enabled\n", ""))
    configure(LABGUARD_POLICY_FILE=str(off_allowed))
    emu.configure(omit_off_delays=True)
    body = compliant_plan("disconnect-off", shutdownOnDisconnect="Disabled", disconnectDelay="PT2H")
    emu.put_plan(body)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    await tick()
    assert patches(emu) == []
    assert shutdown_of(emu, body["id"])["disconnectDelay"] == "PT2H"


async def test_audit_mode_writes_nothing(emu: Any, configure: Any) -> None:
    configure(LABGUARD_MODE="audit")
    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    assert patches(emu) == []
    assert [r["method"] for r in arm_requests(emu)] == ["GET"]
    assert shutdown_of(emu, body["id"])["idleDelay"] == "01:00"


async def test_a_plan_stricter_than_the_policy_is_left_alone(emu: Any, configure: Any) -> None:
    body = plan_body("strict", disconnectDelay="PT1M", noConnectDelay="PT2M", idleDelay="PT3M")
    body["properties"]["defaultConnectionProfile"] = {
        "webSshAccess": "None",
        "webRdpAccess": "None",
        "clientSshAccess": "None",
        "clientRdpAccess": "Private",
    }
    emu.put_plan(body)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    assert patches(emu) == []


@BOTH_PATCH_MODES
async def test_labguards_own_write_event_causes_no_second_patch(emu: Any, configure: Any) -> None:
    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_events()
    await deliver(write_event(body["id"]))
    own_events = [e for e in emu.events() if e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"]
    assert own_events, "the endpoint emits an event for labguard's own PATCH"
    emu.clear_requests()
    for event in own_events:
        await deliver(event)
    assert arm_requests(emu) == []  # recognised from the claims: not even a GET

    # Even when the claims are not recognised, the re-read finds nothing to do.
    for event in own_events:
        event = json.loads(json.dumps(event))
        event["data"]["claims"] = {}
        event["data"]["authorization"] = {}
        await deliver(event)
    assert patches(emu) == []


@BOTH_PATCH_MODES
async def test_duplicate_and_reordered_events_converge_with_one_patch(emu: Any, configure: Any) -> None:
    first, second = plan_body("one"), plan_body("two")
    emu.put_plan(first)
    emu.put_plan(second)
    emu.clear_requests()
    events = [write_event(first["id"], event_id="a"), write_event(second["id"], event_id="b")]
    for event in [events[1], events[0], events[1], events[0], events[0]]:
        await deliver(event)
    sent = patches(emu)
    assert sorted(r["path"].lower() for r in sent) == sorted(p["id"].lower() for p in (first, second))
    for body in (first, second):
        assert_only_fixed(body, emu.get_plan(body["id"]), FIXES_OF_EXAMPLE)


async def test_event_for_a_deleted_plan_is_acknowledged(emu: Any, configure: Any) -> None:
    plan_id = plan_body("gone")["id"]
    emu.clear_requests()
    await deliver(write_event(plan_id))
    assert [(r["method"], r["status"]) for r in arm_requests(emu)] == [("GET", 404)]


async def test_a_locked_plan_is_never_patched(emu: Any, configure: Any) -> None:
    body = plan_body("locked")
    emu.put_plan(body)
    emu.set_state(body["id"], "Locked")
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    await tick()
    assert patches(emu) == []


async def test_events_outside_the_scope_cause_no_arm_call(emu: Any, configure: Any) -> None:
    configure(LABGUARD_RESOURCE_GROUPS="labs-east")
    body = plan_body("elsewhere", sub=OTHER_SUB)
    emu.put_plan(body)
    other_rg = plan_body("other-rg", rg="labs-west")
    emu.put_plan(other_rg)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    await deliver(write_event(other_rg["id"]))
    assert arm_requests(emu) == []


async def test_throttled_patch_is_retried_after_retry_after_and_succeeds(emu: Any, configure: Any) -> None:
    body = plan_body("busy")
    emu.put_plan(body)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/busy.*", status=429, retry_after=1, count=1)
    emu.clear_requests()
    await deliver(write_event(body["id"]))
    assert [r["status"] for r in patches(emu)] == [429, 202]
    assert shutdown_of(emu, body["id"])["idleDelay"] == "PT30M"


async def test_transient_arm_failure_raises_so_event_grid_redelivers(emu: Any, configure: Any) -> None:
    body = plan_body("flaky")
    emu.put_plan(body)
    emu.add_fault(method="GET", path_pattern=r".*/labPlans/flaky.*", status=500, count=100)
    with pytest.raises(RunFailed, match="redeliver"):
        await deliver(write_event(body["id"]))
    assert patches(emu) == []


async def test_cloudevents_schema_is_handled_too(emu: Any, configure: Any) -> None:
    body = plan_body("cloudy")
    emu.put_plan(body)
    grid = write_event(body["id"])
    cloud = {
        "specversion": "1.0",
        "id": grid["id"],
        "source": grid["topic"],
        "subject": grid["subject"],
        "type": grid["eventType"],
        "time": grid["eventTime"],
        "datacontenttype": "application/json",
        "data": grid["data"],
    }
    emu.clear_requests()
    await deliver(cloud)
    assert len(patches(emu)) == 1
    assert shutdown_of(emu, body["id"])["noConnectDelay"] == "PT30M"


async def test_malformed_and_unrelated_events_are_acknowledged(emu: Any, configure: Any) -> None:
    emu.clear_requests()
    await deliver({"id": "x1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": "", "data": "oops"})
    await deliver({"id": "x2", "eventType": "Microsoft.Storage.BlobCreated", "subject": "/blob", "data": {}})
    assert arm_requests(emu) == []


@BOTH_PATCH_MODES
async def test_sweep_fixes_drifted_plans_and_counts_arm_calls(emu: Any, configure: Any, caplog: Any) -> None:
    drifted = [plan_body(f"d{i}", rg="labs-east") for i in range(3)]
    clean = [compliant_plan(f"c{i}", rg="labs-west") for i in range(5)]
    for body in drifted + clean:
        emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    await tick(past_due=True)
    sent = patches(emu)
    assert sorted(r["path"].lower() for r in sent) == sorted(p["id"].lower() for p in drifted)
    for body in drifted:
        assert_only_fixed(body, emu.get_plan(body["id"]), FIXES_OF_EXAMPLE)
    for body in clean:
        assert_only_fixed(body, emu.get_plan(body["id"]), {})
    lists = [r for r in arm_requests(emu) if r["method"] == "GET" and r["path"].lower().endswith("/labplans")]
    gets = [r for r in arm_requests(emu) if r["method"] == "GET" and "/labplans/" in r["path"].lower()]
    # One fresh read right before each write and one proof read after it; none for compliant plans.
    assert len(gets) == 2 * len(drifted)
    summary = next(
        json.loads(r.getMessage().split(" ", 1)[1])
        for r in caplog.records
        if r.getMessage().startswith("sweep.summary")
    )
    assert (summary["fixed"], summary["compliant"], summary["failed"]) == (3, 5, 0)
    assert summary["arm_calls_by_kind"]["list"] == len(lists)
    assert summary["arm_calls_by_kind"]["patch"] == 3
    assert any(r.getMessage().startswith("sweep.past-due") for r in caplog.records)


async def test_a_listed_plan_with_an_unknown_value_is_reported_by_the_sweep(
    emu: Any, configure: Any, caplog: Any
) -> None:
    """A plan compliant but for a value labguard cannot judge: the sweep writes nothing and says so once."""
    unknown = compliant_plan("unknown-in-sweep")
    unknown["properties"][CONN]["clientRdpAccess"] = "Everyone"
    emu.put_plan(unknown)
    emu.put_plan(compliant_plan("plain-compliant"))
    caplog.set_level("INFO", logger="labguard")
    emu.clear_requests()
    await tick()
    assert patches(emu) == []
    records = [
        json.loads(r.getMessage().split(" ", 1)[1])
        for r in caplog.records
        if r.getMessage().startswith("plan.unknown-value ")
    ]
    assert [(r["plan_id"], r["field"]) for r in records] == [
        (unknown["id"].lower(), f"properties.{CONN}.clientRdpAccess")
    ]


async def test_one_failing_plan_never_stops_the_sweep_but_fails_the_run(emu: Any, configure: Any) -> None:
    bad, good = plan_body("bad"), plan_body("good")
    emu.put_plan(bad)
    emu.put_plan(good)
    emu.add_fault(method="PATCH", path_pattern=r".*/labPlans/bad.*", status=400, count=100)
    with pytest.raises(RunFailed, match="1 plan"):
        await tick()
    assert shutdown_of(emu, good["id"])["idleDelay"] == "PT30M"
    assert shutdown_of(emu, bad["id"])["idleDelay"] == "01:00"


async def test_every_change_leaves_a_structured_record(emu: Any, configure: Any, caplog: Any) -> None:
    body = plan_body("logged")
    emu.put_plan(body)
    caplog.set_level("INFO", logger="labguard")
    event = write_event(body["id"])
    await deliver(event)
    changes = [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith("plan.change ")
    ]
    assert {c["rule"] for c in changes} >= {"shutdown.noConnectDelay", "shutdown.idleDelay"}
    for change in changes:
        assert change["plan_id"] == body["id"].lower()
        assert change["mode"] == "enforce"
        assert change["correlation_id"] == event["data"]["correlationId"]
        assert change["observed"] == "01:00" and change["new"] == "PT30M"
