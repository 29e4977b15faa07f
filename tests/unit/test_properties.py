"""Hypothesis properties of the evaluation over plans the spec allows and policies the loader accepts.

(a) applying the patch and evaluating again gives no drift (convergence in one step), whether the service
    merges the PATCH's nested profiles (RFC 7386) or replaces them (omitted leaves taking the spec's defaults);
(b) no patch raises a channel's exposure or relaxes a shutdown setting compared with what the service would
    apply for the plan as read, absent fields included, under either semantics; and the patch sends each
    drifted profile whole, every key it does not fix exactly as read;
(c) evaluation is total and deterministic, including missing optional profiles and unknown extra fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from unit_support import OTHER_SUB, SUB, plan_id

from emulator.store import merge_patch, replace_patch
from shared.core.drift import Evaluation, evaluate
from shared.core.durations import format_iso, parse_delay
from shared.core.plans import LabPlan
from shared.core.policy import CONNECTION_RANK, IDLE_RANK, Policy, parse_policy
from shared.errors import PolicyError

CONN, SHUT = "defaultConnectionProfile", "defaultAutoShutdownProfile"
CONNECTION_KEYS = ("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess")
FLAG_KEYS = ("shutdownOnDisconnect", "shutdownWhenNotConnected")
DELAY_KEYS = ("disconnectDelay", "noConnectDelay", "idleDelay")
STATES = ("Creating", "Updating", "Deleting", "Succeeded", "Failed", "Locked")
# policy key -> the ARM key it bounds (the others are spelled the same)
ARM_KEY = {
    "minShutdownOnIdle": "shutdownOnIdle",
    "maxDisconnectDelay": "disconnectDelay",
    "maxNoConnectDelay": "noConnectDelay",
    "maxIdleDelay": "idleDelay",
}
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- plan bodies ----------------------------------------------------------------------------------

delays = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)).map(
    lambda d: d - timedelta(microseconds=d.microseconds)
)
iso_delay = delays.map(format_iso)
clock_delay = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda hm: f"{hm[0]:02d}:{hm[1]:02d}")
odd_text = st.text(max_size=12)
spec_delay = st.one_of(iso_delay, clock_delay)
any_delay = st.one_of(spec_delay, odd_text)
connection_value = st.sampled_from(("None", "Private", "Public"))
enable_value = st.sampled_from(("Enabled", "Disabled"))
idle_value = st.sampled_from(("None", "UserAbsence", "LowUsage"))
extra = st.dictionaries(
    st.sampled_from(("newSetting", "x-ms-extra", "futureFlag")),
    st.one_of(st.integers(), st.text(max_size=5), st.none()),
    max_size=2,
)


def profile(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any] | None]:
    filled = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(st.none(), st.tuples(filled, extra).map(lambda pair: {**pair[1], **pair[0]}))


def plan_bodies(
    *, spec_only: bool, states: st.SearchStrategy[str | None], tags: st.SearchStrategy[dict[str, str]]
) -> st.SearchStrategy[dict[str, Any]]:
    conn_v = connection_value if spec_only else st.one_of(connection_value, odd_text)
    enable_v = enable_value if spec_only else st.one_of(enable_value, odd_text)
    idle_v = idle_value if spec_only else st.one_of(idle_value, odd_text)
    delay_v = spec_delay if spec_only else any_delay
    connection = profile(dict.fromkeys(CONNECTION_KEYS, conn_v))
    shutdown = profile(
        {**dict.fromkeys(FLAG_KEYS, enable_v), "shutdownOnIdle": idle_v, **dict.fromkeys(DELAY_KEYS, delay_v)}
    )
    error = st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional=dict.fromkeys(("action", "code", "message", "timestamp"), odd_text)),
    )
    support = st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional=dict.fromkeys(("url", "email", "phone", "instructions"), odd_text)),
    )

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        props: dict[str, Any] = dict(draw(extra))
        for key, value in (
            ("provisioningState", draw(states)),
            (CONN, draw(connection)),
            (SHUT, draw(shutdown)),
            ("resourceOperationError", draw(error)),
            ("supportInfo", draw(support)),
        ):
            if value is not None:
                props[key] = value
        name = draw(st.sampled_from(("plan-a", "plan-b")))
        rg = draw(st.sampled_from(("rg1", "rg-course")))
        sub = draw(st.sampled_from((SUB, OTHER_SUB)))
        return {
            "id": plan_id(name, rg, sub),
            "name": name,
            "location": "westus",
            "tags": draw(tags),
            "properties": props,
            **draw(extra),
        }

    return build()


no_tags = st.just({})
exemption_tags = st.one_of(
    no_tags,
    st.fixed_dictionaries(
        {"labguard:exempt": st.text(max_size=10)},
        optional={"labguard:exempt-until": st.one_of(st.dates().map(str), odd_text)},
    ),
)
any_state = st.one_of(st.sampled_from(STATES), st.none(), odd_text)

# ---- policies -------------------------------------------------------------------------------------

positive = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=2)).map(
    lambda d: format_iso(timedelta(minutes=int(d.total_seconds() // 60)))
)


def scope_bounds() -> st.SearchStrategy[dict[str, Any]]:
    connection = st.fixed_dictionaries(
        {}, optional=dict.fromkeys(CONNECTION_KEYS, st.one_of(connection_value, st.none()))
    )
    shutdown = st.fixed_dictionaries(
        {},
        optional={
            "shutdownOnDisconnect": st.sampled_from(("Enabled", None)),
            "shutdownWhenNotConnected": st.sampled_from(("Enabled", None)),
            "minShutdownOnIdle": st.one_of(idle_value, st.none()),
            "maxDisconnectDelay": positive,
            "maxNoConnectDelay": positive,
            "maxIdleDelay": positive,
        },
    )
    return st.fixed_dictionaries({}, optional={"connection": connection, "autoShutdown": shutdown})


SCOPE_BOUNDS = scope_bounds()
SUBSCRIPTION_OVERRIDES = st.dictionaries(st.just(SUB), SCOPE_BOUNDS, max_size=1)
GROUP_OVERRIDES = st.dictionaries(st.sampled_from((f"{SUB}/rg-course", f"{OTHER_SUB}/rg1")), SCOPE_BOUNDS, max_size=2)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    data: dict[str, Any] = draw(SCOPE_BOUNDS)
    data["overrides"] = {
        "subscriptions": draw(SUBSCRIPTION_OVERRIDES),
        "resourceGroups": draw(GROUP_OVERRIDES),
    }
    try:
        return parse_policy(data, "generated.yaml")
    except PolicyError as exc:  # only the both-client-channels rule may refuse a generated policy
        assert "both forbid Public" in str(exc)
        reject()


NOW = datetime(2025, 6, 15, 12, 0)


# The two ways a service may apply a PATCH: merge (RFC 7386) or replace each nested profile it names.
APPLY = {"merge": merge_patch, "replace": replace_patch}
SPEC_DEFAULT = {
    **dict.fromkeys(CONNECTION_KEYS, "None"),
    **dict.fromkeys(FLAG_KEYS, "Disabled"),
    "shutdownOnIdle": "None",
}


def leaves(patch: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (profile, key, value)
        for profile, fields in patch.get("properties", {}).items()
        for key, value in fields.items()
    ]


# ---- (a) convergence ------------------------------------------------------------------------------


@PROPERTIES
@given(plan_bodies(spec_only=False, states=st.just("Succeeded"), tags=no_tags), policies())
def test_a_patch_converges_in_one_step(body: dict[str, Any], policy: Policy) -> None:
    first = evaluate(LabPlan.from_arm(body), policy, NOW)
    for apply in APPLY.values():
        second = evaluate(LabPlan.from_arm(apply(body, first.patch)), policy, NOW)
        assert second.violations == ()
        assert second.drift == ()
        assert (second.status, second.patch) == ("compliant", {})
        assert second.unknown_values == first.unknown_values  # never written over, so still reported
    assert (first.status == "drifted") == bool(first.patch)


# ---- (b) never loosens ----------------------------------------------------------------------------


def applied(body: dict[str, Any]) -> dict[str, Any]:
    """What the service applies for a plan body: each enum leaf as written, or the spec's default when absent;
    each delay as written (absent: None, the spec gives delays no default)."""
    props = body.get("properties") or {}
    view: dict[str, Any] = {}
    for profile, keys in ((CONN, CONNECTION_KEYS), (SHUT, (*FLAG_KEYS, "shutdownOnIdle", *DELAY_KEYS))):
        read = props.get(profile)
        read = read if isinstance(read, dict) else {}
        for key in keys:
            value = read.get(key)
            view[key] = SPEC_DEFAULT.get(key) if value is None else value
    return view


def _rank(rank: Mapping[str, int], value: object) -> int | None:
    return {k.lower(): v for k, v in rank.items()}.get(value.lower()) if isinstance(value, str) else None


def not_looser(key: str, before: Any, after: Any) -> bool:
    """Is ``after`` at least as strict as ``before`` for this leaf? A value labguard cannot judge must stay."""
    if key in CONNECTION_KEYS or key == "shutdownOnIdle":
        rank = CONNECTION_RANK if key in CONNECTION_KEYS else IDLE_RANK
        old, new = _rank(rank, before), _rank(rank, after)
        if old is None:
            return after == before
        return new is not None and (new <= old if key in CONNECTION_KEYS else new >= old)
    if key in FLAG_KEYS:
        if str(before).lower() not in ("enabled", "disabled"):
            return after == before
        return str(before).lower() == "disabled" or str(after).lower() == "enabled"
    if before is None:  # a delay that was absent: any bound written is a limit where there was none
        return True
    try:
        old = parse_delay(before)
    except ValueError:
        return after == before
    assert old is not None
    if old < timedelta(0):
        return after == before
    try:
        new = parse_delay(after)
    except ValueError:
        return False
    return new is not None and timedelta(0) <= new <= old


@PROPERTIES
@given(plan_bodies(spec_only=False, states=st.just("Succeeded"), tags=exemption_tags), policies())
def test_b_patch_never_loosens_what_the_service_applies(body: dict[str, Any], policy: Policy) -> None:
    ev = evaluate(LabPlan.from_arm(body), policy, NOW)
    before = applied(body)
    for mode, apply in APPLY.items():
        after = applied(apply(body, ev.patch))
        for key in before:
            assert not_looser(key, before[key], after[key]), (mode, key, before[key], after[key], dict(ev.patch))


@PROPERTIES
@given(plan_bodies(spec_only=False, states=st.just("Succeeded"), tags=no_tags), policies())
def test_b_patch_sends_each_drifted_profile_whole_as_read(body: dict[str, Any], policy: Policy) -> None:
    ev = evaluate(LabPlan.from_arm(body), policy, NOW)
    assert set(ev.patch) <= {"properties"}
    sent_profiles = ev.patch.get("properties", {})
    drifted = {f.field for f in ev.drift}
    assert set(sent_profiles) == {field[1] for field in drifted}
    for profile, sent in sent_profiles.items():
        read = body["properties"].get(profile) or {}
        for key, value in read.items():  # every key as read, unless the patch fixes it
            assert key in sent
            assert ("properties", profile, key) in drifted or sent[key] == value, (profile, key)
        for key in sent:  # no key added unless it is drifted
            assert key in read or ("properties", profile, key) in drifted, (profile, key)
    fixed = {
        ("properties", p, k)
        for p, k, v in leaves(dict(ev.patch))
        if (body["properties"].get(p) or {}).get(k, object()) != v
    }
    assert fixed == drifted


@PROPERTIES
@given(plan_bodies(spec_only=True, states=st.just("Succeeded"), tags=no_tags), policies())
def test_b_patch_fixes_only_governed_fields(body: dict[str, Any], policy: Policy) -> None:
    ev = evaluate(LabPlan.from_arm(body), policy, NOW)
    governed = policy.rules_for(LabPlan.from_arm(body).id).to_policy_dict()
    governed_arm = {ARM_KEY.get(k, k) for section in governed.values() for k, v in section.items() if v is not None}
    assert {f.field[2] for f in ev.drift} <= governed_arm


# ---- (c) total and deterministic ------------------------------------------------------------------


def assert_well_formed(ev: Evaluation) -> None:
    assert ev.status in ("compliant", "drifted", "skipped", "exempt", "failed")
    assert (ev.status == "drifted") == bool(ev.patch)
    assert ev.status != "compliant" or not ev.violations
    assert ev.status not in ("skipped", "exempt", "failed") or ev.reason
    for finding in ev.findings:
        assert finding.severity in ("high", "medium", "low", "info")
        assert finding.rule and finding.field and finding.message
        assert "\n" not in finding.message


@PROPERTIES
@given(
    plan_bodies(spec_only=True, states=st.one_of(st.sampled_from(STATES), st.none()), tags=exemption_tags),
    policies(),
    st.datetimes(),
)
def test_c_evaluation_is_total_and_deterministic_for_spec_plans(
    body: dict[str, Any], policy: Policy, now: datetime
) -> None:
    plan = LabPlan.from_arm(body)
    first = evaluate(plan, policy, now)
    assert first == evaluate(LabPlan.from_arm(body), policy, now)
    assert_well_formed(first)


@PROPERTIES
@given(plan_bodies(spec_only=False, states=any_state, tags=exemption_tags), policies(), st.datetimes())
def test_c_evaluation_never_raises_on_odd_plan_data(body: dict[str, Any], policy: Policy, now: datetime) -> None:
    assert_well_formed(evaluate(LabPlan.from_arm(body), policy, now))
