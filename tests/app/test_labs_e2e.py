"""Labs through the real Functions against the local endpoint, under both PATCH modes: the sweep lists labs
beside plans and fixes a drifted lab with the whole-profile patch, proved by a read; a lab write event is
handled like a plan's; a plan change re-evaluates the labs naming it; a Windows lab keeps client RDP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.enforcement_support import PATCH_MODES
from tests.labs.lab_fixtures import compliant_lab, lab_body

from .conftest import SUB, compliant_plan, plan_body
from .test_functions_e2e import arm_requests, deliver, patches, tick, write_event

BOTH_PATCH_MODES = pytest.mark.parametrize("emu", PATCH_MODES, indirect=True)
PLAN_ID = f"/subscriptions/{SUB}/resourceGroups/rg-labs/providers/Microsoft.LabServices/labPlans/plan-labs"
CONN, SHUT = "connectionProfile", "autoShutdownProfile"
CONN_DEFAULTS = dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"), "None")
SHUT_DEFAULTS = {"shutdownOnDisconnect": "Disabled", "shutdownWhenNotConnected": "Disabled", "shutdownOnIdle": "None"}


def lab(name: str, builder: Any = lab_body, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = builder(name, plan_id=PLAN_ID, **kw)
    body["id"] = body["id"].replace(body["id"].split("/")[2], SUB)
    return body


def stored(emu: Any, body: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = emu.get_lab(body["id"])
    return got


def applied(profile: dict[str, Any], defaults: dict[str, str]) -> dict[str, Any]:
    """A profile as the service means it: absent enum leaves are the spec's defaults."""
    return {**defaults, **profile}


def records(caplog: Any, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith(event + " ")
    ]


@BOTH_PATCH_MODES
async def test_sweep_fixes_a_drifted_lab_with_the_whole_profile_and_leaves_the_rest(
    emu: Any, configure: Any, caplog: Any
) -> None:
    configure(LABGUARD_LABS="on")
    drifted = lab("lab-drifted")
    stricter = lab("lab-stricter", compliant_lab)
    exempt = lab("lab-exempt", tags={"labguard:exempt": "exam week"})
    for body in (drifted, stricter, exempt):
        emu.put_lab(body)
    caplog.set_level("INFO", logger="labguard")
    emu.clear_requests()
    await tick()
    (sent,) = patches(emu)
    assert sent["path"].lower() == drifted["id"].lower()
    conn, shut = drifted["properties"][CONN], drifted["properties"][SHUT]
    # each drifted profile whole as read (every key, in order), only the drifted leaves changed
    fixed_conn = {"webRdpAccess": "Private"}
    fixed_shut = {"shutdownOnDisconnect": "Enabled", "shutdownOnIdle": "UserAbsence", "disconnectDelay": "PT15M"}
    fixed_shut |= {"noConnectDelay": "PT30M", "idleDelay": "PT30M"}
    assert sent["body"] == {"properties": {CONN: {**conn, **fixed_conn}, SHUT: {**shut, **fixed_shut}}}
    after = stored(emu, drifted)["properties"]
    assert applied(after[CONN], CONN_DEFAULTS) == applied({**conn, **fixed_conn}, CONN_DEFAULTS)
    assert applied(after[SHUT], SHUT_DEFAULTS) == applied({**shut, **fixed_shut}, SHUT_DEFAULTS)
    # nothing outside the two profiles moved (the VM profile, title, plan link, security profile)
    for key in ("virtualMachineProfile", "labPlanId", "title", "description"):
        assert after[key] == drifted["properties"][key]
    assert stored(emu, stricter)["properties"][CONN] == stricter["properties"][CONN]
    assert stored(emu, exempt)["properties"][SHUT] == exempt["properties"][SHUT]
    (fixed,) = records(caplog, "lab.fixed")
    assert fixed["lab_id"] == drifted["id"].lower()
    changes = records(caplog, "lab.change")
    assert {c["changed_by"] for c in changes} == {"teacher@contoso.edu (User)"}
    # the proof: the last ARM request after the PATCH is a read of the lab
    calls = arm_requests(emu)
    tail = calls[[r["method"] for r in calls].index("PATCH") + 1 :]
    assert tail and tail[-1]["method"] == "GET" and "/labs/lab-drifted" in tail[-1]["path"].lower()
    (summary,) = records(caplog, "sweep.summary")
    assert summary["labs_by_status"] == {"compliant": 1, "exempt": 1, "fixed": 1}


@BOTH_PATCH_MODES
async def test_a_windows_lab_keeps_client_rdp_a_linux_lab_loses_it(emu: Any, configure: Any, tmp_path: Any) -> None:
    policy = tmp_path / "no-rdp.yaml"
    policy.write_text("mode: enforce\nconnection:\n  clientRdpAccess: None\n  clientSshAccess: Public\n")
    configure(LABGUARD_LABS="on", LABGUARD_POLICY_FILE=str(policy))
    windows, linux = lab("lab-win"), lab("lab-linux", os_type="Linux")
    for body in (windows, linux):
        emu.put_lab(body)
    emu.clear_requests()
    await tick()
    assert [p["path"].lower() for p in patches(emu)] == [linux["id"].lower()]
    assert stored(emu, windows)["properties"][CONN]["clientRdpAccess"] == "Public"
    assert stored(emu, linux)["properties"][CONN]["clientRdpAccess"] == "None"
    assert stored(emu, linux)["properties"][CONN]["clientSshAccess"] == "Public"


async def test_a_lab_write_event_is_reconciled_like_a_plan_write(emu: Any, configure: Any, caplog: Any) -> None:
    configure(LABGUARD_LABS="on")
    body = lab("lab-event")
    emu.put_lab(body)
    caplog.set_level("INFO", logger="labguard")
    event = write_event(body["id"])
    event["data"]["operationName"] = event["data"]["authorization"]["action"] = "Microsoft.LabServices/labs/write"
    emu.clear_requests()
    await deliver(event)
    (sent,) = patches(emu)
    assert sent["path"].lower() == body["id"].lower()
    assert stored(emu, body)["properties"][SHUT]["idleDelay"] == "PT30M"
    assert [r["status"] for r in records(caplog, "event.done")] == ["fixed"]
    emu.clear_requests()
    await deliver(event)  # a redelivery finds nothing left to do
    assert patches(emu) == []


async def test_a_change_to_a_busy_lab_is_delivered_again_within_a_bound(emu: Any, configure: Any, caplog: Any) -> None:
    """As for plans: a lab being updated is asked again of Event Grid; an event hours old is left to the sweep."""
    from datetime import UTC, datetime, timedelta

    from shared.errors import BusyRetry

    configure(LABGUARD_LABS="on")
    body = lab("lab-busy")
    emu.put_lab(body)
    emu.set_state(body["id"], "Updating")
    caplog.set_level("INFO", logger="labguard")
    fresh = write_event(body["id"])
    fresh["data"]["operationName"] = fresh["data"]["authorization"]["action"] = "Microsoft.LabServices/labs/write"
    fresh["eventTime"] = datetime.now(UTC).isoformat()
    with pytest.raises(BusyRetry, match=r"lab .* is updating; Event Grid will deliver it again"):
        await deliver(fresh)
    (retry,) = records(caplog, "lab.busy-retry")
    assert retry["state"] == "updating" and retry["lab_id"] == body["id"].lower()
    stale = {**fresh, "eventTime": (datetime.now(UTC) - timedelta(hours=2)).isoformat()}
    await deliver(stale)
    assert records(caplog, "lab.busy-left-to-sweep")
    assert patches(emu) == []


async def test_a_plan_change_re_evaluates_the_labs_naming_it(emu: Any, configure: Any, caplog: Any) -> None:
    configure(LABGUARD_LABS="on")
    plan = compliant_plan("plan-labs", rg="rg-labs")
    emu.put_plan(plan)
    mine = lab("lab-of-plan")
    other = lab("lab-of-another-plan")
    other["properties"]["labPlanId"] = PLAN_ID.replace("plan-labs", "plan-other")
    for body in (mine, other):
        emu.put_lab(body)
    caplog.set_level("INFO", logger="labguard")
    emu.clear_requests()
    await deliver(write_event(plan["id"]))
    assert [p["path"].lower() for p in patches(emu)] == [mine["id"].lower()]
    (checked,) = records(caplog, "plan.labs-checked")
    assert checked["labs"] == 1


async def test_labs_off_lists_no_labs(emu: Any, configure: Any) -> None:
    configure(LABGUARD_LABS="off")
    emu.put_lab(lab("lab-ignored"))
    emu.clear_requests()
    await tick()
    assert not [r for r in arm_requests(emu) if "/labs" in r["path"].lower().replace("/labplans", "")]


@BOTH_PATCH_MODES
async def test_an_over_quota_lab_is_lowered_and_a_template_vm_lab_only_reported(
    emu: Any, configure: Any, tmp_path: Any, caplog: Any
) -> None:
    policy = tmp_path / "labs.yaml"
    policy.write_text("mode: enforce\nlabs:\n  templateVm: Forbidden\n  maxUsageQuota: PT20H\n")
    configure(LABGUARD_LABS="on", LABGUARD_POLICY_FILE=str(policy))
    over = lab("lab-over-quota", createOption="Image")
    template = lab("lab-template", usageQuota="PT10H")
    for body in (over, template):
        emu.put_lab(body)
    caplog.set_level("INFO", logger="labguard")
    emu.clear_requests()
    await tick()
    (sent,) = patches(emu)
    assert sent["path"].lower() == over["id"].lower()
    vm = {k: v for k, v in over["properties"]["virtualMachineProfile"].items() if k != "osType"}
    assert sent["body"] == {"properties": {"virtualMachineProfile": {**vm, "usageQuota": "PT20H"}}}
    after = stored(emu, over)["properties"]["virtualMachineProfile"]
    assert after == {**over["properties"]["virtualMachineProfile"], "usageQuota": "PT20H"}  # nothing else moved
    reported = [r for r in records(caplog, "lab.not-patchable") if r["lab_id"] == template["id"].lower()]
    assert [r["field"] for r in reported] == ["properties.virtualMachineProfile.createOption"]
    assert stored(emu, template)["properties"]["virtualMachineProfile"]["createOption"] == "TemplateVM"


async def test_sweep_arm_calls_with_labs_are_list_pages_plus_three_per_drifted_lab(emu: Any, configure: Any) -> None:
    """Measured on the endpoint's request log: plan pages + lab pages, then for each drifted lab a read right
    before the write, the PATCH and the proof read (the same three calls as a drifted plan)."""
    from shared.runtime.runs import build_runtime, load_settings

    configure(LABGUARD_LABS="on")
    emu.configure(page_size=4)
    drifted = [lab(f"drift-{i}") for i in range(3)]
    clean = [lab(f"ok-{i}", compliant_lab) for i in range(7)]
    plans = [compliant_plan(f"p-{i}") for i in range(5)]
    for body in drifted + clean:
        emu.put_lab(body)
    for body in plans:
        emu.put_plan(body)
    emu.clear_requests()
    runtime = await build_runtime(load_settings())
    try:
        summary = await runtime.reconciler.sweep([(SUB, None)])
    finally:
        await runtime.close()
    calls = summary.arm_calls
    plan_pages, lab_pages = -(-len(plans) // 4), -(-(len(drifted) + len(clean)) // 4)
    assert calls["list"] == plan_pages + lab_pages
    assert calls["get"] == 2 * len(drifted) and calls["patch"] == len(drifted)
    assert summary.lab_counts == {"fixed": 3, "compliant": 7} and summary.counts["compliant"] == 5
    logged = [r for r in emu.requests() if r["kind"] == "arm"]
    assert len(logged) == sum(calls.values())  # the counter agrees with the endpoint's log


async def test_plan_change_records_name_who_made_the_change_undone(emu: Any, configure: Any, caplog: Any) -> None:
    body = plan_body("changed-by-a-person")
    body["systemData"] = {"lastModifiedBy": "dr.who@contoso.edu\nforged: line", "lastModifiedByType": "User"}
    emu.put_plan(body)
    caplog.set_level("INFO", logger="labguard")
    await deliver(write_event(body["id"]))
    changes = records(caplog, "plan.change")
    assert changes and {c["changed_by"] for c in changes} == {"dr.who@contoso.edu forged: line (User)"}


@BOTH_PATCH_MODES
@pytest.mark.parametrize("patch_reply", ["lro", "200", "spec"])
async def test_every_write_answer_ends_in_a_proved_lab_fix(
    emu: Any, configure: Any, caplog: Any, patch_reply: str
) -> None:
    """A lab event goes through the plans' write loop: one PATCH whatever the service answers (200 at once,
    202 with the usual headers, the spec's bare 202), proved by a read of the lab, recorded as lab.fixed."""
    configure(LABGUARD_LABS="on")
    emu.configure(patch_reply=patch_reply)
    drifted = lab("lab-answers")
    emu.put_lab(drifted)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    event = write_event(drifted["id"])
    event["data"]["operationName"] = event["data"]["authorization"]["action"] = "Microsoft.LabServices/labs/write"
    await deliver(event)
    assert [p["status"] for p in patches(emu)] == [200 if patch_reply == "200" else 202]
    (fixed,) = records(caplog, "lab.fixed")
    assert fixed["lab_id"] == drifted["id"].lower() and fixed["plan_id"] == PLAN_ID.lower()
    assert not records(caplog, "lab.unconverged")
    assert stored(emu, drifted)["properties"][CONN]["webRdpAccess"] == "Private"
    calls = arm_requests(emu)
    after = calls[[r["method"] for r in calls].index("PATCH") + 1 :]
    assert after and all(r["method"] == "GET" for r in after)
    assert "/labs/lab-answers" in after[-1]["path"].lower()  # the proof read is of the lab
    assert not [r for r in after if "/operationresults/" in r["path"].lower()]  # labs are waited for by reading
