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
from shared.core.drift import Evaluation, evaluate
from shared.core.plans import LabPlan
from shared.core.policy import parse_policy

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


def changed(ev: Evaluation, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The leaves the patch changes, per profile, after checking the patch's shape: each profile in it is the
    profile exactly as read (every key, same value, same order) plus the changed leaves."""
    assert set(ev.patch) <= {"properties"}
    out: dict[str, dict[str, Any]] = {}
    for profile, sent in ev.patch.get("properties", {}).items():
        read = data["properties"].get(profile) or {}
        assert list(sent)[: len(read)] == list(read)
        diff = {k: v for k, v in sent.items() if k not in read or read[k] != v}
        assert {k: v for k, v in sent.items() if k not in diff} == {k: v for k, v in read.items() if k not in diff}
        assert diff, f"{profile} is in the patch without a change"
        out[profile] = diff
    return out


# ---- example documents (tests/fixtures/labservices) ---------------------------------------------


def test_get_example_hh_mm_delays_are_read_and_patched_as_iso() -> None:
    data = example("getLabPlan.json")  # 00:05 / 01:00 / 01:00, clientSsh Public
    ev = run(data)
    assert ev.status == "drifted"
    assert changed(ev, data) == {
        CONN: {"clientSshAccess": "Private"},
        SHUT: {"noConnectDelay": "PT30M", "idleDelay": "PT30M"},
    }
    assert ev.patch["properties"][SHUT]["disconnectDelay"] == "00:05"  # sent back as read, not rewritten


def test_list_example_iso_delays_within_bounds_are_left_alone() -> None:
    data = example("listLabPlans.json")  # PT5M / PT15M / PT15M
    ev = run(data)
    assert changed(ev, data) == {CONN: {"clientSshAccess": "Private"}}
    assert SHUT not in ev.patch["properties"]


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
    data = with_connection(**{field: observed})
    ev = run(data)
    assert ev.patch == {"properties": {CONN: {**data["properties"][CONN], field: written}}}
    (finding,) = ev.findings
    assert (finding.rule, finding.field) == (f"connection.{field}", ("properties", CONN, field))
    assert (finding.observed, finding.patch_value, finding.severity) == (observed, written, severity)
    assert observed in finding.message and written in finding.message


@pytest.mark.parametrize(
    ("field", "observed"), [("webRdpAccess", "None"), ("clientSshAccess", "None"), ("clientRdpAccess", "Private")]
)
def test_connection_stricter_than_bound_is_never_loosened(field: str, observed: str) -> None:
    assert run(with_connection(**{field: observed})).patch == {}


@pytest.mark.parametrize("flag", ["shutdownOnDisconnect", "shutdownWhenNotConnected"])
def test_disabled_required_flag_is_enabled(flag: str) -> None:
    data = with_shutdown(**{flag: "Disabled"})
    ev = run(data)
    assert changed(ev, data) == {SHUT: {flag: "Enabled"}}
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
    data = with_shutdown(shutdownOnIdle=observed)
    assert changed(run(data, pol), data) == {SHUT: {"shutdownOnIdle": patched}}


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
    data = with_shutdown(**{field: observed})
    ev = run(data)
    assert changed(ev, data) == {SHUT: {field: patched}}
    assert (ev.findings[0].severity, ev.findings[0].rule) == ("low", f"shutdown.{field}")


@pytest.mark.parametrize("observed", ["PT1M", "00:01", "PT0S"])
def test_shorter_delay_is_never_lengthened(observed: str) -> None:
    assert run(with_shutdown(idleDelay=observed)).patch == {}


@pytest.mark.parametrize("observed", ["soon", "PT", "15", "-PT5M", "P1M", "P9999999999D"])
def test_unreadable_or_negative_delay_is_reported_never_written(observed: str) -> None:
    ev = run(with_shutdown(idleDelay=observed))
    assert (ev.status, ev.patch) == ("compliant", {})
    (finding,) = ev.findings
    assert (finding.rule, finding.field, finding.observed) == (
        "unknown-value",
        ("properties", SHUT, "idleDelay"),
        observed,
    )
    assert finding.patch_value is None and ev.unknown_values == (finding,)
    assert "never writes over" in finding.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clientRdpAccess", "Everyone"),
        ("webSshAccess", "Tunnel"),
        ("shutdownOnIdle", "Often"),
        ("shutdownOnDisconnect", "Maybe"),
        ("shutdownOnDisconnect", ""),  # an empty value is not Disabled: it is one labguard does not know
        ("shutdownOnIdle", ""),
        ("webRdpAccess", ""),
    ],
)
def test_unknown_enum_value_is_reported_and_never_written_over(field: str, value: str) -> None:
    profile = CONN if field.endswith("Access") else SHUT
    data = with_connection(**{field: value}) if profile == CONN else with_shutdown(**{field: value})
    ev = run(data)
    assert (ev.status, ev.patch) == ("compliant", {})
    (finding,) = ev.findings
    assert (finding.rule, finding.field, finding.observed) == ("unknown-value", ("properties", profile, field), value)
    assert ev.violations == () and ev.unknown_values == (finding,)


def test_unknown_value_is_kept_as_read_when_its_profile_is_patched() -> None:
    data = with_connection(clientRdpAccess="Everyone", clientSshAccess="Public")
    ev = run(data)
    assert ev.patch["properties"][CONN]["clientRdpAccess"] == "Everyone"
    assert changed(ev, data) == {CONN: {"clientSshAccess": "Private"}}
    assert sorted(rules_of(ev)) == ["connection.clientSshAccess", "unknown-value"]


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
        shutdown={"shutdownOnDisconnect": "Enabled", "idleDelay": "P3D", "shutdownOnIdle": "None"},
    )
    ev = run(data, {"autoShutdown": {"maxDisconnectDelay": "PT15M"}})
    assert changed(ev, data) == {SHUT: {"disconnectDelay": "PT15M"}}
    assert ev.patch["properties"][SHUT]["idleDelay"] == "P3D"


def test_missing_delay_of_a_feature_that_is_on_is_written() -> None:
    data = compliant()
    del data["properties"][SHUT]["noConnectDelay"]
    ev = run(data)
    assert changed(ev, data) == {SHUT: {"noConnectDelay": "PT30M"}}
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


def test_absent_connection_profile_is_all_none_and_within_any_bound() -> None:
    ev = run(
        body(shutdown=dict(COMPLIANT_SHUTDOWN)), {"connection": {"webRdpAccess": "None", "clientRdpAccess": "Public"}}
    )
    assert (ev.status, ev.patch, ev.findings) == ("compliant", {}, ())


@pytest.mark.parametrize("field", ["webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"])
def test_absent_channel_is_none_so_never_written(field: str) -> None:
    """The spec's default for a channel is None: writing the bound (say Public) would open it."""
    data = compliant()
    del data["properties"][CONN][field]
    ev = run(data, {**FULL, "connection": {**FULL["connection"], field: "Public", "clientRdpAccess": "Public"}})
    assert (ev.status, ev.patch, ev.findings) == ("compliant", {}, ())


def test_absent_idle_mode_is_none_and_raised_to_the_minimum() -> None:
    data = compliant()
    del data["properties"][SHUT]["shutdownOnIdle"]
    ev = run(data)
    assert changed(ev, data) == {SHUT: {"shutdownOnIdle": "LowUsage"}}
    assert "default is None" in ev.findings[0].message


@pytest.mark.parametrize(
    ("flag", "delay"), [("shutdownOnDisconnect", "disconnectDelay"), ("shutdownWhenNotConnected", "noConnectDelay")]
)
@pytest.mark.parametrize("flag_value", ["Disabled", None])
@pytest.mark.parametrize("delay_value", ["PT1H", None])
def test_delay_of_a_feature_that_is_off_is_not_drift(
    flag: str, delay: str, flag_value: str | None, delay_value: str | None
) -> None:
    """Real reads can leave out the delay of a Disabled feature; its bound applies only while the feature is on."""
    data = compliant()
    shutdown = data["properties"][SHUT]
    for key, value in ((flag, flag_value), (delay, delay_value)):
        if value is None:
            del shutdown[key]
        else:
            shutdown[key] = value
    bound = "maxDisconnectDelay" if delay == "disconnectDelay" else "maxNoConnectDelay"
    ev = run(data, {"autoShutdown": {bound: "PT15M"}})
    assert (ev.status, ev.patch) == ("compliant", {})


def test_idle_delay_of_idle_mode_none_is_not_drift() -> None:
    data = with_shutdown(shutdownOnIdle="None")
    del data["properties"][SHUT]["idleDelay"]
    assert run(data, {"autoShutdown": {"maxIdleDelay": "PT30M"}}).patch == {}
    assert (
        run(with_shutdown(shutdownOnIdle="None", idleDelay="P2D"), {"autoShutdown": {"maxIdleDelay": "PT30M"}}).patch
        == {}
    )


@pytest.mark.parametrize(
    ("flag", "delay"), [("shutdownOnDisconnect", "disconnectDelay"), ("shutdownWhenNotConnected", "noConnectDelay")]
)
def test_delay_bound_applies_while_the_feature_is_on(flag: str, delay: str) -> None:
    data = with_shutdown(**{flag: "Enabled"})
    del data["properties"][SHUT][delay]
    bound = "maxDisconnectDelay" if delay == "disconnectDelay" else "maxNoConnectDelay"
    ev = run(data, {"autoShutdown": {bound: "PT15M"}})
    assert changed(ev, data) == {SHUT: {delay: "PT15M"}}


def test_required_feature_that_is_off_is_turned_on_with_its_delay() -> None:
    data = body(
        connection=dict(COMPLIANT_CONNECTION), shutdown={"shutdownOnDisconnect": "Disabled", "shutdownOnIdle": "None"}
    )
    pol = {
        "autoShutdown": {
            "shutdownOnDisconnect": "Enabled",
            "minShutdownOnIdle": "LowUsage",
            "maxDisconnectDelay": "PT15M",
            "maxIdleDelay": "PT30M",
            "maxNoConnectDelay": "PT30M",
        }
    }
    ev = run(data, pol)
    # noConnectDelay: its feature is off (absent flag = Disabled) and not required, so it is not drift
    assert changed(ev, data) == {
        SHUT: {
            "shutdownOnDisconnect": "Enabled",
            "shutdownOnIdle": "LowUsage",
            "disconnectDelay": "PT15M",
            "idleDelay": "PT30M",
        }
    }


def test_delay_of_a_feature_in_an_unknown_state_is_checked_only_when_present() -> None:
    pol = {"autoShutdown": {"maxDisconnectDelay": "PT15M"}}
    present = with_shutdown(shutdownOnDisconnect="Sometimes", disconnectDelay="PT1H")
    assert changed(run(present, pol), present) == {SHUT: {"disconnectDelay": "PT15M"}}
    absent = with_shutdown(shutdownOnDisconnect="Sometimes")
    del absent["properties"][SHUT]["disconnectDelay"]
    assert run(absent, pol).patch == {}


def test_disabled_flag_without_a_delay_bound_checks_no_delay() -> None:
    data = with_shutdown(shutdownOnDisconnect="Disabled", disconnectDelay="PT9H")
    assert run(data, {"autoShutdown": {"maxIdleDelay": "PT30M"}}).patch == {}


def test_patch_sends_the_drifted_profile_whole_as_read() -> None:
    """A service that replaces nested profiles must get every other key back as read, or it resets them."""
    data = compliant()
    data["properties"][SHUT] = {
        "futureSetting": {"nested": [1, 2]},
        "shutdownOnIdle": "lowusage",
        "idleDelay": "02:00",
        "disconnectDelay": "00:10",
        "shutdownOnDisconnect": "Enabled",
        "shutdownWhenNotConnected": "enabled",
        "noConnectDelay": "PT20M",
        "nothing": None,
    }
    ev = run(data)
    assert ev.patch == {"properties": {SHUT: {**data["properties"][SHUT], "idleDelay": "PT30M"}}}
    assert list(ev.patch["properties"][SHUT]) == list(data["properties"][SHUT])
    assert [f.field for f in ev.drift] == [("properties", SHUT, "idleDelay")]


def test_patch_leaves_profiles_without_drift_out() -> None:
    data = with_connection(clientSshAccess="Public")
    assert list(run(data).patch["properties"]) == [CONN]


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
        ("properties", "resourceOperationError"),
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


def test_a_deeply_nested_unknown_key_is_echoed_without_recursion() -> None:
    deep: Any = "leaf"
    for _ in range(50_000):
        deep = {"x": deep}
    data = with_connection(clientSshAccess="Public", futureSetting=deep)
    ev = run(data)
    assert ev.patch["properties"][CONN]["futureSetting"] is deep
    assert ev.patch["properties"][CONN]["clientSshAccess"] == "Private"


def test_evaluation_cache_keys_on_every_value_read_and_never_keeps_hostile_text() -> None:
    """Findings are worked out once per distinct set of governed values (a sweep evaluates every plan it lists):
    the same values give the same findings; any one value read differently (a delay's feature switch included)
    gives its own; a value longer than any real one is evaluated without entering the cache."""
    from shared.core import drift

    drift._check_memo.cache_clear()
    drift._BY_CONTENT.clear()
    first, again = run(with_shutdown(idleDelay="PT5H")), run(with_shutdown(idleDelay="PT5H"))
    assert rules_of(first) == rules_of(again) == ["shutdown.idleDelay"]
    assert len(drift._BY_CONTENT) == 1  # the second plan was answered from its profiles' content
    assert drift._check_memo.cache_info().misses == 1
    # The same governed values in profiles that differ elsewhere (the order of their keys): the value memo answers.
    reordered = with_shutdown(idleDelay="PT5H")
    reordered["properties"][SHUT] = dict(reversed(list(reordered["properties"][SHUT].items())))
    assert rules_of(run(reordered)) == ["shutdown.idleDelay"]
    assert drift._check_memo.cache_info().hits == 1
    assert rules_of(run()) == []  # the same plan but for one value: its own findings, not the cached ones
    # The delay is judged only while its feature is on: the switch is part of what the cache keys on.
    off = run(with_shutdown(idleDelay="PT5H", shutdownOnIdle="None"), pol={"autoShutdown": {"maxIdleDelay": "PT1H"}})
    assert rules_of(off) == []
    on = run(with_shutdown(idleDelay="PT5H", shutdownOnIdle="LowUsage"), pol={"autoShutdown": {"maxIdleDelay": "PT1H"}})
    assert rules_of(on) == ["shutdown.idleDelay"]
    size, kept = drift._check_memo.cache_info().currsize, len(drift._BY_CONTENT)
    hostile = run(with_connection(webSshAccess="x" * 5000))
    assert rules_of(hostile) == ["unknown-value"]
    hostile_key = run(with_connection(**{"k" * 5000: "None"}))  # a key no real profile has, and long
    assert rules_of(hostile_key) == []
    assert drift._check_memo.cache_info().currsize == size
    assert len(drift._BY_CONTENT) == kept  # neither hostile profile is held by a cache


def test_content_cache_never_confuses_values_that_compare_equal_but_read_differently() -> None:
    """``True == 1`` and ``hash(True) == hash(1)``, but a leaf of ``true`` reads "True" and one of ``1`` reads
    "1": neither is text, so neither profile is kept, and each plan gets its own findings. Objects and lists
    where a leaf should be (unhashable) are judged without the cache."""
    from shared.core import drift

    drift._BY_CONTENT.clear()
    as_bool = run(with_shutdown(shutdownOnDisconnect=True))
    as_int = run(with_shutdown(shutdownOnDisconnect=1))
    assert [f.observed for f in as_bool.findings] == ["True"]
    assert [f.observed for f in as_int.findings] == ["1"]
    nested = run(with_shutdown(shutdownOnDisconnect={"value": "Enabled"}))
    listed = run(with_shutdown(shutdownOnDisconnect=["Enabled"]))
    assert rules_of(nested) == rules_of(listed) == ["unknown-value"]
    assert not drift._BY_CONTENT
