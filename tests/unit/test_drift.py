"""Evaluation: findings and the minimal merge-patch, one behaviour per test."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from unit_support import (
    COMPLIANT_CONNECTION,
    COMPLIANT_SHUTDOWN,
    FULL,
    NOW,
    SUB,
    body,
    example,
    plan,
    policy,
)

from emulator.store import merge_patch
from shared.drift import Evaluation, evaluate
from shared.lab_plans import LabPlan
from shared.policy import parse_policy

SHUT = "defaultAutoShutdownProfile"
CONN = "defaultConnectionProfile"


def run(data: dict[str, Any] | None = None, pol: dict[str, Any] | None = None, now: datetime = NOW) -> Evaluation:
    return evaluate(LabPlan.from_arm(data if data is not None else compliant()), policy(pol), now)


def compliant(**kw: Any) -> dict[str, Any]:
    return body(connection=dict(COMPLIANT_CONNECTION), shutdown=dict(COMPLIANT_SHUTDOWN), **kw)


def with_shutdown(**fields: Any) -> dict[str, Any]:
    data = compliant()
    data["properties"][SHUT].update(fields)
    return data


def with_connection(**fields: Any) -> dict[str, Any]:
    data = compliant()
    data["properties"][CONN].update(fields)
    return data


def rules_of(ev: Evaluation) -> list[str]:
    return [f.rule for f in ev.findings]


# ---- example documents (tests/fixtures/labservices) ---------------------------------------------


def test_get_example_hh_mm_delays_are_read_and_patched_as_iso() -> None:
    ev = run(example("getLabPlan.json"))  # 00:05 / 01:00 / 01:00, clientSsh Public
    assert ev.status == "drifted"
    assert ev.patch == {
        "properties": {
            CONN: {"clientSshAccess": "Private"},
            SHUT: {"noConnectDelay": "PT30M", "idleDelay": "PT30M"},
        }
    }


def test_list_example_iso_delays_within_bounds_are_left_alone() -> None:
    ev = run(example("listLabPlans.json"))  # PT5M / PT15M / PT15M
    assert ev.patch == {"properties": {CONN: {"clientSshAccess": "Private"}}}


def test_examples_hh_mm_and_iso_forms_compare_equal() -> None:
    hh_mm = run(with_shutdown(disconnectDelay="00:15", noConnectDelay="00:30", idleDelay="00:30"))
    assert hh_mm.status == "compliant"


@pytest.mark.parametrize(
    ("file", "status", "state"), [("patchLabPlan.json", "202", "Updating"), ("putLabPlan.json", "201", "Creating")]
)
def test_examples_in_flight_are_skipped(file: str, status: str, state: str) -> None:
    ev = run(example(file, status))
    assert (ev.status, ev.patch, rules_of(ev)) == ("skipped", {}, ["state.not-terminal"])
    assert ev.findings[0].observed == state


def test_example_is_compliant_under_a_policy_it_meets() -> None:
    pol = {**FULL, "connection": {"clientSshAccess": "Public", "clientRdpAccess": "Public"}}
    ev = run(example("listResourceGroupLabPlans.json"), pol)
    assert (ev.status, ev.findings, ev.patch) == ("compliant", (), {})


# ---- bounds ---------------------------------------------------------------------------------------


def test_compliant_plan_gives_empty_patch_and_no_findings() -> None:
    ev = run()
    assert (ev.status, ev.findings, ev.patch, ev.drift) == ("compliant", (), {}, ())


@pytest.mark.parametrize(
    ("field", "observed", "written", "severity"),
    [
        ("webSshAccess", "Public", "None", "high"),
        ("webSshAccess", "Private", "None", "medium"),
        ("webRdpAccess", "Public", "Private", "high"),
        ("clientSshAccess", "Public", "Private", "high"),
    ],
)
def test_connection_above_bound_is_lowered_to_the_bound(field: str, observed: str, written: str, severity: str) -> None:
    ev = run(with_connection(**{field: observed}))
    assert ev.patch == {"properties": {CONN: {field: written}}}
    (finding,) = ev.findings
    assert (finding.rule, finding.field) == (f"connection.{field}", f"properties.{CONN}.{field}")
    assert (finding.observed, finding.patch_value, finding.severity) == (observed, written, severity)
    assert observed in finding.message and written in finding.message


@pytest.mark.parametrize(
    ("field", "observed"), [("webRdpAccess", "None"), ("clientSshAccess", "None"), ("clientRdpAccess", "Private")]
)
def test_connection_stricter_than_bound_is_never_loosened(field: str, observed: str) -> None:
    assert run(with_connection(**{field: observed})).patch == {}


@pytest.mark.parametrize("flag", ["shutdownOnDisconnect", "shutdownWhenNotConnected"])
def test_disabled_required_flag_is_enabled(flag: str) -> None:
    ev = run(with_shutdown(**{flag: "Disabled"}))
    assert ev.patch == {"properties": {SHUT: {flag: "Enabled"}}}
    assert ev.findings[0].rule == f"shutdown.{flag}"


@pytest.mark.parametrize(
    ("observed", "minimum", "patched"),
    [
        ("None", "LowUsage", "LowUsage"),
        ("LowUsage", "UserAbsence", "UserAbsence"),
        ("None", "UserAbsence", "UserAbsence"),
    ],
)
def test_idle_mode_below_minimum_is_raised(observed: str, minimum: str, patched: str) -> None:
    pol = {**FULL, "autoShutdown": {**FULL["autoShutdown"], "minShutdownOnIdle": minimum}}
    assert run(with_shutdown(shutdownOnIdle=observed), pol).patch == {"properties": {SHUT: {"shutdownOnIdle": patched}}}


def test_user_absence_is_stricter_than_low_usage_and_kept() -> None:
    assert run(with_shutdown(shutdownOnIdle="UserAbsence")).patch == {}


@pytest.mark.parametrize(
    ("field", "observed", "patched"),
    [
        ("disconnectDelay", "PT16M", "PT15M"),
        ("disconnectDelay", "00:16", "PT15M"),
        ("noConnectDelay", "01:00", "PT30M"),
        ("idleDelay", "P0DT1H", "PT30M"),
    ],
)
def test_delay_above_maximum_is_lowered_and_written_iso(field: str, observed: str, patched: str) -> None:
    ev = run(with_shutdown(**{field: observed}))
    assert ev.patch == {"properties": {SHUT: {field: patched}}}
    assert (ev.findings[0].severity, ev.findings[0].rule) == ("low", f"shutdown.{field}")


@pytest.mark.parametrize("observed", ["PT1M", "00:01", "PT0S"])
def test_shorter_delay_is_never_lengthened(observed: str) -> None:
    assert run(with_shutdown(idleDelay=observed)).patch == {}


@pytest.mark.parametrize("observed", ["soon", "PT", "15", "-PT5M", "P1M"])
def test_unreadable_delay_is_drift_patched_to_the_bound(observed: str) -> None:
    ev = run(with_shutdown(idleDelay=observed))
    assert ev.patch == {"properties": {SHUT: {"idleDelay": "PT30M"}}}
    assert ev.findings[0].severity == "medium"


@pytest.mark.parametrize(
    ("field", "value"),
    [("clientRdpAccess", "Everyone"), ("shutdownOnIdle", "Often"), ("shutdownOnDisconnect", "Maybe")],
)
def test_unknown_enum_value_is_drift_patched_to_the_bound(field: str, value: str) -> None:
    data = with_connection(**{field: value}) if field.startswith("client") else with_shutdown(**{field: value})
    ev = run(data)
    assert len(ev.findings) == 1 and "unknown value" in ev.findings[0].message


@pytest.mark.parametrize(
    ("field", "value"),
    [("clientSshAccess", "private"), ("shutdownOnDisconnect", "enabled"), ("shutdownOnIdle", "lowusage")],
)
def test_enum_case_differences_are_not_drift(field: str, value: str) -> None:
    data = with_connection(**{field: value}) if field.startswith("client") else with_shutdown(**{field: value})
    assert run(data).status == "compliant"


def test_ungoverned_fields_are_left_alone() -> None:
    data = body(
        connection={"webSshAccess": "Public", "clientRdpAccess": "Public"},
        shutdown={"idleDelay": "P3D", "shutdownOnIdle": "None"},
    )
    ev = run(data, {"autoShutdown": {"maxDisconnectDelay": "PT15M"}})
    assert ev.patch == {"properties": {SHUT: {"disconnectDelay": "PT15M"}}}


def test_missing_governed_field_is_written() -> None:
    data = compliant()
    del data["properties"][SHUT]["noConnectDelay"]
    ev = run(data)
    assert ev.patch == {"properties": {SHUT: {"noConnectDelay": "PT30M"}}}
    assert ev.findings[0].observed is None and "not set" in ev.findings[0].message


def test_absent_shutdown_profile_gets_the_whole_governed_part() -> None:
    ev = run(body(connection=dict(COMPLIANT_CONNECTION)))
    assert ev.patch == {
        "properties": {
            SHUT: {
                "shutdownOnDisconnect": "Enabled",
                "shutdownWhenNotConnected": "Enabled",
                "shutdownOnIdle": "LowUsage",
                "disconnectDelay": "PT15M",
                "noConnectDelay": "PT30M",
                "idleDelay": "PT30M",
            }
        }
    }


def test_absent_connection_profile_gets_only_the_governed_channels() -> None:
    ev = run(
        body(shutdown=dict(COMPLIANT_SHUTDOWN)), {"connection": {"webRdpAccess": "None", "clientRdpAccess": "Public"}}
    )
    assert ev.patch == {"properties": {CONN: {"webRdpAccess": "None", "clientRdpAccess": "Public"}}}


def test_delay_bound_applies_even_when_its_flag_is_disabled_and_ungoverned() -> None:
    data = with_shutdown(shutdownOnDisconnect="Disabled", disconnectDelay="PT1H")
    ev = run(data, {"autoShutdown": {"maxDisconnectDelay": "PT15M"}})
    assert ev.patch == {"properties": {SHUT: {"disconnectDelay": "PT15M"}}}


def test_disabled_flag_without_a_delay_bound_checks_no_delay() -> None:
    data = with_shutdown(shutdownOnDisconnect="Disabled", disconnectDelay="PT9H")
    assert run(data, {"autoShutdown": {"maxIdleDelay": "PT30M"}}).patch == {}


def test_patch_holds_only_drifted_leaves() -> None:
    ev = run(with_shutdown(idleDelay="PT2H"))
    assert ev.patch == {"properties": {SHUT: {"idleDelay": "PT30M"}}}
    assert [f.field for f in ev.drift] == [f"properties.{SHUT}.idleDelay"]


def test_overrides_are_applied_per_plan() -> None:
    pol = {**FULL, "overrides": {"resourceGroups": {f"{SUB}/rg-course": {"autoShutdown": {"maxIdleDelay": "PT2H"}}}}}
    assert run(with_shutdown(idleDelay="PT1H"), pol).status == "drifted"
    assert (
        run(
            body(connection=COMPLIANT_CONNECTION, shutdown={**COMPLIANT_SHUTDOWN, "idleDelay": "PT1H"}, rg="rg-course"),
            pol,
        ).status
        == "compliant"
    )


def test_patch_applied_to_the_example_gives_a_compliant_plan() -> None:
    original = example("getLabPlan.json")
    ev = run(original)
    fixed = merge_patch(original, ev.patch)
    assert run(fixed).status == "compliant"
    assert fixed["properties"]["supportInfo"] == original["properties"]["supportInfo"]


def test_evaluation_is_deterministic() -> None:
    data = example("getLabPlan.json")
    assert run(data) == run(data)


# ---- provisioning state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("Creating", "being created"),
        ("Updating", "new settings"),
        ("Deleting", "being deleted"),
        ("Locked", "locked"),
        (None, "no provisioning state"),
        ("Sideways", "unknown provisioning state"),
    ],
)
def test_non_terminal_plan_is_skipped_with_a_reason(state: str | None, words: str) -> None:
    data = body(connection={"webSshAccess": "Public"}, state=state)
    ev = run(data)
    assert (ev.status, ev.patch, rules_of(ev)) == ("skipped", {}, ["state.not-terminal"])
    assert words in ev.findings[0].message and ev.reason


def test_failed_plan_reports_error_and_support_and_gets_no_patch() -> None:
    data = with_connection(clientSshAccess="Public")
    data["properties"]["provisioningState"] = "Failed"
    data["properties"]["resourceOperationError"] = {
        "timestamp": "2024-11-04T08:15:30Z",
        "code": "SubnetNotDelegated",
        "message": "The subnet must be delegated.",
        "action": "Update",
    }
    support = example("getLabPlan.json")["properties"]["supportInfo"]
    data["properties"]["supportInfo"] = support
    ev = run(data)
    assert (ev.status, ev.patch, ev.drift) == ("failed", {}, ())
    assert rules_of(ev) == ["provisioning.failed", "connection.clientSshAccess"]
    failed = ev.findings[0]
    assert (failed.field, failed.observed, failed.severity) == (
        "properties.resourceOperationError",
        "SubnetNotDelegated",
        "high",
    )
    for text in (
        "Update",
        "SubnetNotDelegated",
        "The subnet must be delegated.",
        "2024-11-04T08:15:30Z",
        *(support[key] for key in ("email", "phone", "url", "instructions")),
        "owner",
        "Succeeded",
    ):
        assert text in failed.message
    assert ev.plan.error is not None and ev.plan.error.code == "SubnetNotDelegated"
    assert len(ev.violations) == 1


def test_failed_plan_without_error_details_says_so() -> None:
    ev = run(compliant(state="Failed"))
    assert ev.status == "failed" and "no error details" in ev.findings[0].message
    assert "no support contact" in ev.findings[0].message


def test_failure_text_is_one_line_even_with_hostile_input() -> None:
    data = compliant(state="Failed", resourceOperationError={"message": "line1\nline2\r\x1b[31m" + "x" * 500})
    message = run(data).findings[0].message
    assert "\n" not in message and "\x1b" not in message and "…" in message


# ---- exemption ------------------------------------------------------------------------------------


def exempt_plan(until: str | None = None, reason: str = "GPU course", tag: str = "labguard:exempt") -> dict[str, Any]:
    tags = {tag: reason}
    if until is not None:
        tags[f"{tag}-until"] = until
    data = with_connection(clientSshAccess="Public")
    data["tags"] = tags
    return data


@pytest.mark.parametrize("until", [None, "2025-06-15", "2030-01-01"])
def test_active_exemption_lists_drift_without_patch(until: str | None) -> None:
    ev = run(exempt_plan(until))
    assert (ev.status, ev.patch) == ("exempt", {})
    assert rules_of(ev) == ["exemption.active", "connection.clientSshAccess"]
    assert ev.reason is not None and "GPU course" in ev.reason


def test_expired_exemption_no_longer_exempts() -> None:
    ev = run(exempt_plan("2025-06-14"))
    assert ev.status == "drifted" and ev.patch
    assert rules_of(ev)[0] == "exemption.expired"


@pytest.mark.parametrize("until", ["next spring", "2025-13-01", "15/06/2025", "2025-06-15T00:00:00Z", ""])
def test_malformed_until_date_does_not_exempt_and_says_so(until: str) -> None:
    ev = run(exempt_plan(until))
    assert ev.status == "drifted"
    assert ev.findings[0].rule == "exemption.invalid-until" and ev.findings[0].severity == "info"


def test_exemption_tag_name_is_case_insensitive() -> None:
    assert run(exempt_plan(tag="LabGuard:Exempt")).status == "exempt"


def test_exemption_without_reason_still_exempts() -> None:
    ev = run(exempt_plan(reason=" "))
    assert ev.status == "exempt" and ev.reason == "no reason given"


def test_exemption_tag_from_policy_is_used() -> None:
    assert run(exempt_plan(tag="school:skip"), {**FULL, "exemptionTag": "school:skip"}).status == "exempt"
    assert run(exempt_plan(tag="labguard:exempt"), {**FULL, "exemptionTag": "school:skip"}).status == "drifted"


def test_exempt_compliant_plan_is_still_exempt() -> None:
    data = compliant(tags={"labguard:exempt": "pilot"})
    assert run(data).status == "exempt"


def test_failed_beats_exempt() -> None:
    data = exempt_plan()
    data["properties"]["provisioningState"] = "Failed"
    ev = run(data)
    assert ev.status == "failed" and rules_of(ev)[:2] == ["provisioning.failed", "exemption.active"]


def test_skipped_beats_exempt() -> None:
    data = exempt_plan()
    data["properties"]["provisioningState"] = "Locked"
    assert run(data).status == "skipped"


def test_plan_helper_policy_is_consistent() -> None:
    assert parse_policy(FULL, "x").baseline == policy().baseline
    assert plan().provisioning_state == "Succeeded"
