"""Labs under the plan policy: the same bounds, scopes, exemption tag and whole-profile patch, tighten-only,
and never a patch the service would refuse (client RDP on Windows, client SSH on Linux, LowUsage images)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from shared.core.governed import lab_only_settings
from shared.core.lab_drift import LabEvaluation, evaluate_lab
from shared.core.labs import Lab, LabId
from shared.core.policy import parse_policy
from tests.labs.lab_fixtures import PLAN_ID, RG, SUB, compliant_lab, lab_body, lab_id

NOW = datetime(2025, 6, 15, 12, 0, 0)
BASE: dict[str, Any] = {
    "mode": "enforce",
    "connection": {
        "webSshAccess": "None",
        "webRdpAccess": "None",
        "clientSshAccess": "Private",
        "clientRdpAccess": "Public",
    },
    "autoShutdown": {
        "shutdownOnDisconnect": "Enabled",
        "shutdownWhenNotConnected": "Enabled",
        "minShutdownOnIdle": "UserAbsence",
        "maxDisconnectDelay": "PT15M",
        "maxNoConnectDelay": "PT30M",
        "maxIdleDelay": "PT30M",
    },
}


def run(body: dict[str, Any], policy: dict[str, Any] | None = None) -> LabEvaluation:
    return evaluate_lab(Lab.from_arm(body), parse_policy(policy or BASE, "policy.yaml"), NOW)


def test_lab_model_reads_the_spec_fields_and_keeps_no_secret() -> None:
    body = lab_body(nonAdminUser={"username": "student", "password": "S3cret!"})
    body["properties"]["virtualMachineProfile"]["adminUser"]["password"] = "Adm1nS3cret"
    body["properties"]["resourceOperationError"] = {"code": "QuotaExceeded", "message": "no cores", "action": "publish"}
    lab = Lab.from_arm(body)
    assert lab.id == LabId.parse(lab_id("lab-win").upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"))
    rows = {s.policy_key: lab.observed(s) for s in lab_only_settings()}
    assert (lab.os_type, rows["templateVm"], rows["allowedVmSizes"], rows["maxUsageQuota"]) == (
        "Windows",
        "TemplateVM",
        "Classic_Fsv2_2_4GB_128_S_SSD",
        "PT40H",
    )
    assert lab.admin_username == "labadmin" and rows["requireNonAdminUser"] == "student"
    assert lab.lab_plan_id is not None and lab.lab_plan_id.key == PLAN_ID.lower()
    assert lab.error is not None and lab.error.code == "QuotaExceeded"
    assert "S3cret" not in repr(lab) and "Adm1n" not in repr(lab)


@pytest.mark.parametrize(
    "bad",
    [
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labPlans/p",
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labs/..",
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labs/l/users/u",
        "x" * 5000,
    ],
)
def test_lab_id_grammar_is_strict(bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        LabId.parse(bad)
    assert len(str(exc.value)) < 500


def test_a_lab_plan_id_that_is_not_a_plan_is_kept_raw_not_trusted() -> None:
    lab = Lab.from_arm(lab_body(plan_id=lab_id("x")))
    assert lab.lab_plan_id is None and lab.lab_plan_id_raw == lab_id("x")


def test_drifted_lab_gets_each_drifted_profile_whole_with_only_drifted_leaves_changed() -> None:
    body = lab_body()
    ev = run(body)
    assert ev.status == "drifted"
    conn = body["properties"]["connectionProfile"]
    shut = body["properties"]["autoShutdownProfile"]
    assert ev.patch == {
        "properties": {
            "connectionProfile": {**conn, "webRdpAccess": "None", "clientSshAccess": "Private"},
            "autoShutdownProfile": {
                **shut,
                "shutdownOnDisconnect": "Enabled",
                "shutdownOnIdle": "UserAbsence",
                "disconnectDelay": "PT15M",
                "noConnectDelay": "PT30M",
                "idleDelay": "PT30M",
            },
        }
    }
    assert list(ev.patch["properties"]["connectionProfile"]) == list(conn)  # keys as read, in order
    assert {f.field[1] for f in ev.drift} == {"connectionProfile", "autoShutdownProfile"}
    assert all("plan" not in f.message for f in ev.drift)


def test_a_stricter_lab_is_left_alone() -> None:
    body = compliant_lab(
        connection={
            "webSshAccess": "None",
            "webRdpAccess": "None",
            "clientSshAccess": "None",
            "clientRdpAccess": "Private",
        }
    )
    ev = run(body)
    assert ev.status == "compliant" and ev.patch == {} and ev.findings == ()


def test_exemption_tag_and_overrides_apply_to_labs_by_their_own_resource_group() -> None:
    exempt = run(lab_body(tags={"labguard:exempt": "GPU course (ticket 4711)"}))
    assert exempt.status == "exempt" and exempt.patch == {} and exempt.violations
    loose = {
        **BASE,
        "overrides": {
            "resourceGroups": {f"{SUB}/{RG}": {"connection": {"webRdpAccess": "Public", "clientSshAccess": "Public"}}}
        },
    }
    ev = run(lab_body(), loose)
    assert "connectionProfile" not in ev.patch["properties"]


def test_a_windows_lab_keeps_client_rdp_and_the_finding_says_why() -> None:
    policy = {**BASE, "connection": {**BASE["connection"], "clientRdpAccess": "None", "clientSshAccess": "Public"}}
    ev = run(lab_body(os_type="Windows"), policy)
    assert "clientRdpAccess" not in ev.patch["properties"]["connectionProfile"] or (
        ev.patch["properties"]["connectionProfile"]["clientRdpAccess"] == "Public"
    )
    (refused,) = ev.not_patchable
    assert refused.path == "properties.connectionProfile.clientRdpAccess"
    assert "Windows lab" in refused.message and "client RDP" in refused.message and refused.patch_value is None
    # the same policy turns RDP off on a Linux lab (its students use SSH)
    linux = run(lab_body("lab-linux", os_type="Linux"), policy)
    assert linux.patch["properties"]["connectionProfile"]["clientRdpAccess"] == "None"
    assert not linux.not_patchable


def test_a_linux_lab_keeps_client_ssh() -> None:
    policy = {**BASE, "connection": {**BASE["connection"], "clientSshAccess": "None", "clientRdpAccess": "Public"}}
    ev = run(lab_body("lab-linux", os_type="Linux"), policy)
    (refused,) = ev.not_patchable
    assert refused.field[-1] == "clientSshAccess" and "client SSH" in refused.message
    assert ev.patch["properties"]["connectionProfile"]["clientSshAccess"] == "Public"


def test_unknown_os_never_turns_a_client_channel_off() -> None:
    policy = {**BASE, "connection": {**BASE["connection"], "clientSshAccess": "None", "clientRdpAccess": "Public"}}
    body = lab_body()
    del body["properties"]["virtualMachineProfile"]["osType"]
    ev = run(body, policy)
    assert [f.path for f in ev.not_patchable] == ["properties.connectionProfile.clientSshAccess"]


def test_lowusage_on_a_linux_lab_is_reported_with_the_image_reason_not_written() -> None:
    policy = {**BASE, "autoShutdown": {**BASE["autoShutdown"], "minShutdownOnIdle": "LowUsage"}}
    linux = run(lab_body("lab-linux", os_type="Linux"), policy)
    shut = linux.patch["properties"]["autoShutdownProfile"]
    assert shut["shutdownOnIdle"] == "None" and "idleDelay" not in shut  # idle stays off, no idle delay
    fields = {f.leaf: f for f in linux.not_patchable}
    assert set(fields) == {"shutdownOnIdle", "idleDelay"}
    assert "image that supports it" in fields["shutdownOnIdle"].message
    windows = run(lab_body(), policy)
    assert windows.patch["properties"]["autoShutdownProfile"]["shutdownOnIdle"] == "LowUsage"


def test_only_unpatchable_drift_is_drifted_without_a_patch() -> None:
    policy = {"connection": {"clientRdpAccess": "None", "clientSshAccess": "Public"}}
    ev = run(lab_body(connection={"clientRdpAccess": "Public", "clientSshAccess": "None"}), policy)
    assert ev.status == "drifted" and ev.patch == {} and ev.not_patchable


def test_failed_lab_names_its_plan_and_gets_no_patch() -> None:
    body = lab_body(state="Failed")
    body["properties"]["resourceOperationError"] = {"code": "OutOfCapacity", "message": "no\nVMs", "action": "publish"}
    ev = run(body)
    assert ev.status == "failed" and ev.patch == {}
    failed = ev.findings[0]
    assert failed.rule == "provisioning.failed" and "plan-labs" in failed.message and "\n" not in failed.message


def test_busy_lab_is_skipped() -> None:
    ev = run(lab_body(state="Updating"))
    assert ev.status == "skipped" and ev.patch == {} and "lab" in ev.findings[0].message


LAB_RULES = {
    **BASE,
    "labs": {
        "allowedVmSizes": ["Classic_Dsv4_4_16GB_128_P_SSD"],
        "templateVm": "Forbidden",
        "requireNonAdminUser": True,
        "maxUsageQuota": "PT20H",
    },
}


def test_lab_rules_report_what_cannot_change_and_lower_the_quota() -> None:
    body = compliant_lab()
    ev = run(body, LAB_RULES)
    rules = {f.rule: f for f in ev.findings}
    assert set(rules) == {"lab.vmSize", "lab.templateVm", "lab.nonAdminUser", "lab.usageQuota"}
    for rule in ("lab.vmSize", "lab.templateVm", "lab.nonAdminUser"):
        assert rules[rule].patch_value is None and "create-only" in rules[rule].message
    assert rules["lab.usageQuota"].patch_value == "PT20H"
    vm = dict(body["properties"]["virtualMachineProfile"])
    del vm["osType"]  # read-only: the service's
    assert ev.status == "drifted"
    assert ev.patch == {"properties": {"virtualMachineProfile": {**vm, "usageQuota": "PT20H"}}}


def test_quota_within_bound_in_timespan_form_is_left_alone_and_overrides_apply() -> None:
    within = compliant_lab(usageQuota="10:00")  # ten hours, as the spec's example writes it
    assert run(within, {**BASE, "labs": {"maxUsageQuota": "PT20H"}}).patch == {}
    unreadable = run(compliant_lab(usageQuota="lots"), {**BASE, "labs": {"maxUsageQuota": "PT20H"}})
    assert [f.rule for f in unreadable.findings] == ["unknown-value"] and unreadable.patch == {}
    loose = {**LAB_RULES, "overrides": {"resourceGroups": {f"{SUB}/{RG}": {"labs": None}}}}
    assert run(compliant_lab(), loose).findings == ()


def test_an_exempt_lab_over_quota_is_reported_not_patched() -> None:
    ev = run(compliant_lab(tags={"labguard:exempt": "pilot"}), {**BASE, "labs": {"maxUsageQuota": "PT20H"}})
    assert ev.status == "exempt" and ev.patch == {} and [f.rule for f in ev.violations] == ["lab.usageQuota"]


def test_the_lab_rules_are_in_the_policy_schema() -> None:
    from shared.core.policy import PolicyError, policy_json_schema

    assert "LabBounds" in policy_json_schema()["$defs"]
    with pytest.raises(PolicyError, match=r"labs\.maxUsageQuota"):
        parse_policy({**BASE, "labs": {"maxUsageQuota": "20 hours"}}, "policy.yaml")


def test_the_proof_of_a_lab_write_compares_every_lab_row_not_only_the_plan_profiles() -> None:
    """One proof for plans and labs: a lab read back with its VM size or quota moved (a service that replaced
    the VM profile, say) is caught, and the written leaves are not counted as moved."""
    from shared.core.proof import unexpected_changes

    before = Lab.from_arm(lab_body())
    moved = lab_body(usageQuota="PT10H")
    moved["properties"]["virtualMachineProfile"]["sku"]["name"] = "Classic_Dsv4_4_16GB_128_P_SSD"
    moved["properties"]["connectionProfile"]["webRdpAccess"] = "None"
    after = Lab.from_arm(moved)
    written = frozenset({("properties", "connectionProfile", "webRdpAccess")})
    changes = {c.path: (c.before, c.after) for c in unexpected_changes(before, after, written)}
    assert changes == {
        "properties.virtualMachineProfile.sku.name": ("Classic_Fsv2_2_4GB_128_S_SSD", "Classic_Dsv4_4_16GB_128_P_SSD"),
        "properties.virtualMachineProfile.usageQuota": ("PT40H", "PT10H"),
    }
    assert unexpected_changes(before, Lab.from_arm(lab_body(usageQuota="1.16:00:00")), frozenset()) == ()  # 40 h


def test_plan_and_lab_ids_share_one_grammar_and_never_equal_each_other() -> None:
    """One ARM id type for both kinds: case-insensitive equality within a kind, never across kinds."""
    from shared.core.labs import LabId
    from shared.core.plans import PlanId

    sub, rg = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345", "RG-Teaching"
    plan = PlanId.parse(f"/subscriptions/{sub.upper()}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/p1")
    lab = LabId.parse(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labs/p1")
    assert plan == PlanId.parse(plan.path.lower()) and hash(plan) == hash(PlanId.parse(plan.path.lower()))
    assert lab.path.endswith("/labs/p1") and plan.path.endswith("/labPlans/p1") and str(lab) == lab.path
    assert lab != plan and plan != lab and lab.scope == PlanId(sub, rg, "p1")
    for wrong, parse in ((lab.path, PlanId.parse), (plan.path, LabId.parse), (plan.path + "/labs/x", PlanId.parse)):
        with pytest.raises(ValueError):
            parse(wrong)
