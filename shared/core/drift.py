"""Evaluation: one observed lab plan + the policy -> findings and a patch that only tightens.

Pure and total: :func:`evaluate` reads only its arguments, never raises on odd plan data, and
gives the same answer for the same input. The rules it follows:

* a setting outside its bound is a drift finding, and the patch writes the bound (the least change
  that brings it back); a setting at or inside its bound is never touched (never loosened);
* a setting the policy does not govern is never looked at;
* an absent enum leaf is judged as the spec's default (``None`` for a connection channel and for the
  idle mode, ``Disabled`` for a shutdown flag), because that is what the service applies: an absent
  channel is within any bound, an absent required flag is drift;
* a value labguard cannot judge (an enum value it does not know, a delay it cannot read or that is
  negative) is an ``unknown-value`` finding: reported, never written over;
* a delay bound applies only while its feature is on (flag Enabled, idle mode not None) or the policy
  requires the feature (then the patch turns it on and writes the delay as well); an absent delay of a
  feature that is off is not drift;
* the patch sends each profile with drift whole, exactly as read, with only the drifted leaves changed,
  so it is right whether the service merges a PATCH's nested objects or replaces them; profiles without
  drift are left out;
* delays are read as ISO-8601 (``PT5M``) or TimeSpan text (``00:05``); the patch writes ISO-8601;
* only Succeeded plans get a patch. A plan in Creating / Updating / Deleting / Locked (or with no or
  an unknown state) is skipped with a ``state.not-terminal`` finding; a Failed plan gets a
  ``provisioning.failed`` finding and its drift listed, but no patch (its owner must fix it first);
  an exempt plan gets its drift listed, but no patch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from shared.core.durations import describe, format_iso, parse_delay
from shared.core.governed import PROFILES, Bound, Setting, feature_of, plan_settings
from shared.core.plans import LabPlan, OperationError, small_text_content
from shared.core.rules import Policy, Rules
from shared.core.text import shown

__all__ = ["Evaluation", "Finding", "Severity", "Status", "evaluate"]

Severity = Literal["high", "medium", "low", "info"]
Status = Literal["compliant", "drifted", "skipped", "exempt", "failed"]

_STATES = {s.lower(): s for s in ("Creating", "Updating", "Deleting", "Succeeded", "Failed", "Locked")}
_STATE_MEANING = {
    "Creating": "is still being created",
    "Updating": "is having new settings applied",
    "Deleting": "is being deleted",
    "Locked": "is locked for maintenance or a scheduled operation, so changes are blocked",
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Finding:
    """One observation about a plan.

    ``rule`` is a stable id (``connection.clientRdpAccess``, ``shutdown.idleDelay``, ``unknown-value``,
    ``state.not-terminal``, ``provisioning.failed``, ``exemption.active``, ``exemption.expired``,
    ``exemption.invalid-until``);
    ``field`` the path it is about in the plan body (``("properties", "defaultConnectionProfile",
    "clientRdpAccess")``, ``("tags", "labguard:exempt")``); ``patch_value`` what the bound requires be written
    (set on drift findings only, even when the patch is withheld because the plan is exempt or failed).
    """

    rule: str
    field: tuple[str, ...]
    observed: str | None
    allowed: str
    severity: Severity
    message: str
    patch_value: str | None = None

    @property
    def is_drift(self) -> bool:
        return self.patch_value is not None

    @property
    def path(self) -> str:
        """``field`` as one dotted string, as logs, the change log and JSON output carry it."""
        return ".".join(self.field)

    @property
    def leaf(self) -> str:
        """The last part of ``field``: the setting's ARM key, as one-line summaries name it."""
        return self.field[-1]


@dataclass(frozen=True)
class Evaluation:
    """The verdict on one plan. ``patch`` is the body for PATCH .../labPlans/{name}: each profile with drift,
    whole as read, with the drifted leaves set to their bounds (right under merge and replace semantics)."""

    plan: LabPlan
    findings: tuple[Finding, ...]
    patch: Mapping[str, Any]
    status: Status
    reason: str | None = None

    @property
    def drift(self) -> tuple[Finding, ...]:
        """The findings the patch fixes (empty whenever the patch is empty)."""
        return self.violations if self.patch else ()

    @property
    def violations(self) -> tuple[Finding, ...]:
        """Every setting outside its bound, whether or not it will be patched (exempt and failed plans too)."""
        return tuple(f for f in self.findings if f.is_drift)

    @property
    def unknown_values(self) -> tuple[Finding, ...]:
        """Governed values labguard cannot judge (``unknown-value``): reported, never written over."""
        return tuple(f for f in self.findings if f.rule == "unknown-value")


def evaluate(plan: LabPlan, policy: Policy, now: datetime) -> Evaluation:
    """Evaluate one plan against the policy at time ``now`` (only its date matters: exemption expiry)."""
    state = _STATES.get((plan.provisioning_state or "").lower())
    if state not in ("Succeeded", "Failed"):
        finding = _not_terminal(plan.provisioning_state, state)
        return Evaluation(
            plan, (finding,), {}, "skipped", f"provisioning state {shown(plan.provisioning_state, quote=False)}"
        )

    rules = policy.rules_for(plan.id)
    checked = check(plan, rules, plan_settings())  # drift and unknown-value findings
    patch = patch_of(plan.profiles_as_read, checked)
    exempt, exemption = _exemption(plan, policy, now.date())

    if state == "Failed":
        failed = _failed(plan)
        findings = (failed, *exemption, *checked)
        return Evaluation(plan, findings, {}, "failed", _failure_reason(plan))
    if exempt is not None:
        return Evaluation(plan, (*exemption, *checked), {}, "exempt", exempt)
    if patch:
        return Evaluation(plan, (*exemption, *checked), patch, "drifted")
    # Unknown values alone leave nothing to fix: the plan is compliant as far as labguard can judge, and
    # the unknown-value findings say what it could not.
    return Evaluation(plan, (*exemption, *checked), {}, "compliant")


# --------------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------------

FeatureState = Literal["on", "off", "unknown"]


class Governed(Protocol):
    """A plan or a lab: what evaluation reads of it."""

    def observed(self, setting: Setting) -> str | None: ...

    def content_key(self) -> tuple[Any, ...]:
        """A key equal for two resources of one type only if :meth:`observed` answers alike for every setting
        (:func:`shared.core.plans.profiles_content`)."""
        ...


def check(resource: Governed, rules: Rules, settings: tuple[Setting, ...]) -> list[Finding]:
    """Drift, reported-only and unknown-value findings, setting by setting in table order.

    The findings depend only on the rules and the governed values read (a setting's value and its feature's),
    so they are worked out once per distinct set of values: an estate's plans share a few configurations, and a
    sweep evaluates every plan it lists. A resource whose profiles were seen before is answered from its
    content key alone, without reading a value. Only short text is ever kept in a cache (never hostile text)."""
    key = (rules, settings, type(resource), resource.content_key())
    try:
        found = _BY_CONTENT.get(key)
    except TypeError:  # an object or a list where a leaf should be: nothing to look up
        return list(_check_read(resource, rules, settings))
    if found is None:
        found = _check_read(resource, rules, settings)
        if small_text_content(key[3]):
            if len(_BY_CONTENT) >= _BY_CONTENT_MAX:  # a few configurations are the norm: start again when many
                _BY_CONTENT.clear()
            _BY_CONTENT[key] = found
    return list(found)


#: (rules, settings, resource type, content key) -> findings: what :func:`check` has worked out before.
_BY_CONTENT: dict[Hashable, tuple[Finding, ...]] = {}
_BY_CONTENT_MAX = 1024


def _check_read(resource: Governed, rules: Rules, settings: tuple[Setting, ...]) -> tuple[Finding, ...]:
    """:func:`check` by reading each value (the value memo keeps only short values)."""
    reads = _reads(settings)
    values = tuple(resource.observed(setting) for setting in reads)
    for value in values:
        if value is not None and len(value) > _MEMO_VALUE_CHARS:
            return _check_values(rules, settings, values)
    return _check_memo(rules, settings, values)


#: The longest governed value the evaluation cache keeps (the longest real one, a VM size, is about 30 characters).
_MEMO_VALUE_CHARS = 100


@functools.lru_cache(maxsize=64)
def _reads(settings: tuple[Setting, ...]) -> tuple[Setting, ...]:
    """What evaluating ``settings`` reads of a resource: each setting, then the switches their delays depend on."""
    features = tuple(f for s in settings if (f := feature_of(s)) is not None and f not in settings)
    return settings + tuple(dict.fromkeys(features))


def _check_values(rules: Rules, settings: tuple[Setting, ...], values: tuple[str | None, ...]) -> tuple[Finding, ...]:
    """:func:`check` on the values read (in :func:`_reads` order)."""
    observed_by = dict(zip(_reads(settings), values, strict=True))
    findings: list[Finding] = []
    for setting, bound in _governed_by(rules, settings):
        observed = observed_by[setting]
        finding: Finding | None = None
        if setting.kind == "max-delay":
            assert isinstance(bound, timedelta)
            feature = _feature_state(observed_by, rules, feature_of(setting))
            # A delay only matters while its feature is on (or the patch turns it on): an absent delay of a
            # feature that is off is not drift. With the feature's state unknown, only a delay that is there
            # is checked (shortening it never loosens anything).
            if feature == "on" or (feature == "unknown" and observed is not None):
                finding = _delay(setting, observed, bound)
        elif setting.kind == "max-duration":  # no feature; absent is nothing labguard can judge
            assert isinstance(bound, timedelta)
            finding = None if observed is None else _delay(setting, observed, bound)
        elif setting.kind == "enabled":
            finding = _flag(setting, observed)
        elif setting.kind in ("at-most", "at-least"):
            assert isinstance(bound, str)
            finding = _ranked(setting, observed, bound)
        else:
            finding = _reported(setting, observed, bound)
        findings += [finding] if finding else []
    return tuple(findings)


_check_memo = functools.lru_cache(maxsize=1024)(_check_values)


#: Profile key (a plan's or a lab's) -> the keys of it the service computes, which a patch leaves out.
_READ_ONLY = {key: p.read_only for p in PROFILES for key in (p.arm_key, p.lab_arm_key) if key is not None}


@functools.lru_cache(maxsize=256)
def _governed_by(rules: Rules, settings: tuple[Setting, ...]) -> tuple[tuple[Setting, Bound], ...]:
    """The settings ``rules`` govern and their bounds, in table order: worked out once per set of rules
    (a policy has a few), not for every plan a sweep lists."""
    return tuple((setting, bound) for setting in settings if (bound := rules.bound(setting)) is not None)


def patch_of(profiles_as_read: Mapping[str, Mapping[str, Any]], findings: list[Finding]) -> dict[str, Any]:
    """For each profile with drift: the profile exactly as read, with only the drifted leaves changed.

    Sending the whole profile keeps a service that replaces nested objects (instead of merging them) from
    resetting the leaves the patch does not fix to the spec's defaults (clientRdpAccess Public -> None).
    A key that was absent is added only when it is drifted; profiles without drift are left out, and so
    are the keys the spec marks read-only (the service computes them)."""
    profiles: dict[str, dict[str, Any]] = {}
    for finding in findings:
        if not finding.is_drift:
            continue
        _, profile, *leaf = finding.field
        if profile not in profiles:
            read_only = _READ_ONLY.get(profile, ())
            as_read = profiles_as_read.get(profile) or {}
            profiles[profile] = {k: v for k, v in as_read.items() if k not in read_only}  # values as read
        target = profiles[profile]
        for key in leaf[:-1]:  # a nested leaf: its objects copied as read, never changed in place
            target[key] = dict(target[key]) if isinstance(target.get(key), Mapping) else {}
            target = target[key]
        target[leaf[-1]] = finding.patch_value
    return {"properties": profiles} if profiles else {}


def _feature_state(observed_by: Mapping[Setting, str | None], rules: Rules, switch: Setting | None) -> FeatureState:
    """Whether a switch's (or mode's) feature will be on once the patch is applied: on as read, or required.
    The first value of its scale is off; an absent value is the spec's default."""
    if switch is None:
        return "unknown"
    off = switch.scale[0]
    observed = observed_by[switch]
    value = switch.canonical((switch.spec_default or "") if observed is None else observed)
    if rules.bound(switch) not in (None, off) or (value is not None and value != off):
        return "on"
    return "off" if value is not None else "unknown"


def _unknown(setting: Setting, observed: str, allowed: str, what: str) -> Finding:
    """An enum value labguard does not know (a newer api-version may add one), or a delay it cannot read:
    reported for a person to check, never written over (writing the bound could loosen it)."""
    return Finding(
        rule="unknown-value",
        field=setting.path,
        observed=observed,
        allowed=allowed,
        severity="medium",
        message=(
            f"{setting.label} has the value {shown(observed)}, {what}; the policy allows {allowed}. labguard "
            "leaves it as it is (it never writes over a value it cannot judge): check it by hand."
        ),
    )


def _ranked(setting: Setting, observed: str | None, bound: str) -> Finding | None:
    """A bound on an ordered enum: ``at-most`` = observed may not rank above it, ``at-least`` = not below it.
    An absent value is judged as the spec's default (None for a channel and for the idle mode). A value at
    the top of an exposure scale (Public) is high severity. The finding's text is built only when there is
    a finding (most plans have none: a sweep evaluates every plan it lists)."""
    rank = setting.rank
    kind = "most" if setting.kind == "at-most" else "least"
    effective = (setting.spec_default or "") if observed is None else observed
    canonical = setting.canonical(effective)
    if canonical is not None:
        inside = rank[canonical] <= rank[bound] if kind == "most" else rank[canonical] >= rank[bound]
        if inside:
            return None
    allowed = f"at {kind} {bound} ({' < '.join(setting.scale)})"
    verb = "allows" if kind == "most" else "requires"
    if canonical is None:
        return _unknown(setting, effective, allowed, "which labguard does not know")
    if observed is None:
        problem = f"is not set on the plan (Azure's default is {canonical}); the policy {verb} {allowed}"
    else:
        problem = f"is {canonical} but the policy {verb} {allowed}"
    severity: Severity = "high" if kind == "most" and canonical == setting.scale[-1] else "medium"
    return Finding(
        rule=setting.rule,
        field=setting.path,
        observed=observed,
        allowed=allowed,
        severity=severity,
        message=f"{setting.label} {problem}; the fix sets it to {bound}.",
        patch_value=bound,
    )


def _flag(setting: Setting, observed: str | None) -> Finding | None:
    """A switch the policy requires Enabled; absent means the spec's default, Disabled."""
    required = setting.scale[-1]
    canonical = setting.canonical((setting.spec_default or "") if observed is None else observed)
    if canonical == required:
        return None
    if canonical is None:
        assert observed is not None
        return _unknown(setting, observed, required, "which labguard does not know")
    if observed is None:
        problem = f"is not set on the plan (Azure's default is {setting.spec_default}); the policy requires {required}"
    else:
        problem = f"is {canonical} but the policy requires {required}"
    return Finding(
        rule=setting.rule,
        field=setting.path,
        observed=observed,
        allowed=required,
        severity="medium",
        message=f"{setting.label} {problem}; the fix enables it.",
        patch_value=required,
    )


def _delay(setting: Setting, observed: str | None, limit: timedelta) -> Finding | None:
    """A delay of a feature that is (or will be) on: absent or longer than the bound is drift.
    The finding's text is built only when there is a finding (most plans have none)."""
    try:
        value = parse_delay(observed)
    except ValueError:
        value = None
        unreadable = True
    else:
        unreadable = False
        if value is not None and timedelta(0) <= value <= limit:
            return None
    bound = format_iso(limit)
    allowed = f"at most {bound} ({describe(limit)})"
    if unreadable:
        assert observed is not None
        return _unknown(setting, observed, allowed, "which is not a duration labguard can read")
    if value is not None and value < timedelta(0):
        assert observed is not None
        return _unknown(setting, observed, allowed, "a negative duration")
    if value is None:
        problem = f"is not set on the plan while its feature is on; the policy allows {allowed}"
    else:
        problem = f"is {shown(observed)} ({describe(value)}) but the policy allows {allowed}"
    return Finding(
        rule=setting.rule,
        field=setting.path,
        observed=observed,
        allowed=allowed,
        severity="low" if value is not None and setting.kind == "max-delay" else "medium",
        message=f"{setting.label} {problem}; the fix sets it to {bound}.",
        patch_value=bound,
    )


def _reported(setting: Setting, observed: str | None, bound: Bound) -> Finding | None:
    """A rule labguard reports and never writes (``reported_only`` says why): a value that must be one of a
    list, a value the policy forbids, a value it requires."""
    why = setting.reported_only
    if setting.kind == "one-of":
        assert isinstance(bound, tuple)
        if (observed or "").lower() in {value.lower() for value in bound}:
            return None
        allowed = f"one of {', '.join(bound)}"
        problem = f"is {shown(observed)}, not one the policy allows ({shown(', '.join(bound), quote=False)})"
    elif setting.kind == "forbidden":
        if bound != "Forbidden" or (observed or "").lower() != (setting.forbidden or "").lower():
            return None
        allowed = f"not {setting.forbidden}"
        problem = f"is {shown(observed)}, which the policy forbids"
    else:  # required
        if bound is not True or (observed or "").strip():
            return None
        allowed = f"{setting.label} set"
        problem = "is not set, which the policy requires"
    return Finding(
        rule=setting.rule,
        field=setting.path,
        observed=observed,
        allowed=allowed,
        severity="medium",
        message=f"{setting.label} {problem}; {why}.",
    )


# --------------------------------------------------------------------------------------------
# State, failure, exemption
# --------------------------------------------------------------------------------------------


def _not_terminal(raw: str | None, state: str | None) -> Finding:
    if raw is None:
        why = "reports no provisioning state"
    elif state is None:
        why = f"is in the unknown provisioning state {shown(raw)}"
    else:
        why = _STATE_MEANING.get(state, f"is {state}")
    return Finding(
        rule="state.not-terminal",
        field=("properties", "provisioningState"),
        observed=raw,
        allowed="Succeeded or Failed",
        severity="info",
        message=(
            f"The plan {why}; labguard only checks and patches a plan in a terminal state "
            "(Succeeded or Failed) and will look again on the next sweep."
        ),
    )


def _failed(plan: LabPlan) -> Finding:
    support = plan.support
    contacts = [
        f"{name} {shown(value)}"
        for name, value in (
            ("url", support.url if support else None),
            ("email", support.email if support else None),
            ("phone", support.phone if support else None),
            ("instructions", support.instructions if support else None),
        )
        if value
    ]
    who = "Plan support: " + "; ".join(contacts) + "." if contacts else "The plan lists no support contact."
    return failed_finding(plan.error, "plan", who, " Any drift below is listed for information.")


def failed_finding(error: OperationError | None, noun: str, told: str, tail: str = "") -> Finding:
    """A Failed plan or lab (``noun``): what its resourceOperationError says (untrusted values capped) and who
    is ``told``; never patched."""
    if error is None:
        what = f"The {noun} is in the Failed state and reports no error details (no resourceOperationError)."
    else:
        parts = [
            f"{name} {shown(value)}"
            for name, value in (
                ("action", error.action),
                ("code", error.code),
                ("message", error.message),
                ("at", error.timestamp),
            )
            if value
        ]
        what = f"The last operation on the {noun} failed: " + ("; ".join(parts) or "no details given") + "."
    return Finding(
        rule="provisioning.failed",
        field=("properties", "resourceOperationError" if error is not None else "provisioningState"),
        observed=(error.code if error is not None and error.code else "Failed"),
        allowed="Succeeded",
        severity="high",
        message=(
            f"{what} {told} labguard does not patch a failed {noun}: fixing it is its owner's job, and "
            f"enforcement resumes once the {noun} is Succeeded.{tail}"
        ),
    )


def _failure_reason(plan: LabPlan) -> str:
    error = plan.error
    if error is None:
        return "provisioning failed (no error details)"
    head = " ".join(shown(v, quote=False) for v in (error.action, error.code) if v)
    return f"provisioning failed: {head}" if head else "provisioning failed"


def _exemption(plan: LabPlan, policy: Policy, today: date) -> tuple[str | None, list[Finding]]:
    """(reason if the plan is exempt today else None, info findings about the exemption)."""
    if not plan.tags:
        return None, []
    tags = {str(k).lower(): (str(k), v) for k, v in plan.tags.items()}
    found = tags.get(policy.exemption_tag.lower())
    if found is None:
        return None, []
    tag, raw_reason = found
    shown_reason = shown(raw_reason.strip(), quote=False) if raw_reason and raw_reason.strip() else ""
    reason = shown_reason or "no reason given"  # a value of control characters only shows as nothing
    until_found = tags.get(policy.exemption_until_tag.lower())
    field = ("tags", tag)
    if until_found is None:
        finding = Finding(
            "exemption.active",
            field,
            raw_reason,
            "an exemption reason, with an optional end date",
            "info",
            f"Exempt with no end date ({reason}); drift is reported but not fixed.",
        )
        return reason, [finding]
    until_tag, raw_until = until_found
    until = _parse_date(raw_until)
    if until is None:
        finding = Finding(
            "exemption.invalid-until",
            ("tags", until_tag),
            raw_until,
            "a date such as 2025-07-31",
            "info",
            f"The exemption ({reason}) is ignored: {until_tag} is {shown(raw_until)}, not a date such as "
            "2025-07-31. The plan is checked as usual until the date is fixed.",
        )
        return None, [finding]
    if until < today:
        finding = Finding(
            "exemption.expired",
            ("tags", until_tag),
            raw_until,
            f"a date on or after {today.isoformat()}",
            "info",
            f"The exemption ({reason}) ended on {until.isoformat()}; the plan is checked as usual.",
        )
        return None, [finding]
    finding = Finding(
        "exemption.active",
        field,
        raw_reason,
        "an exemption reason, with an optional end date",
        "info",
        f"Exempt until {until.isoformat()} ({reason}); drift is reported but not fixed.",
    )
    return f"{reason} (until {until.isoformat()})", [finding]


def _parse_date(text: str) -> date | None:
    text = text.strip()
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
