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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from shared.durations import describe, format_iso, parse_delay
from shared.lab_plans import CONNECTION_PROFILE, SHUTDOWN_PROFILE, AutoShutdownProfile, ConnectionProfile, LabPlan
from shared.policy import CONNECTION_RANK, IDLE_RANK, Policy, Rules

__all__ = ["Evaluation", "Finding", "Severity", "Status", "evaluate", "shown"]

Severity = Literal["high", "medium", "low", "info"]
Status = Literal["compliant", "drifted", "skipped", "exempt", "failed"]

_STATES = {s.lower(): s for s in ("Creating", "Updating", "Deleting", "Succeeded", "Failed", "Locked")}
_STATE_MEANING = {
    "Creating": "is still being created",
    "Updating": "is having new settings applied",
    "Deleting": "is being deleted",
    "Locked": "is locked for maintenance or a scheduled operation, so changes are blocked",
}
_ENABLE = {"enabled": "Enabled", "disabled": "Disabled"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Finding:
    """One observation about a plan.

    ``rule`` is a stable id (``connection.clientRdpAccess``, ``shutdown.idleDelay``, ``unknown-value``,
    ``state.not-terminal``, ``provisioning.failed``, ``exemption.active``, ``exemption.expired``,
    ``exemption.invalid-until``);
    ``field`` the ARM path it is about; ``patch_value`` what the bound requires be written (set on drift
    findings only, even when the patch is withheld because the plan is exempt or failed).
    """

    rule: str
    field: str
    observed: str | None
    allowed: str
    severity: Severity
    message: str
    patch_value: str | None = None

    @property
    def is_drift(self) -> bool:
        return self.patch_value is not None


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
    checked, patch = _check(plan, rules)  # drift and unknown-value findings
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

# (ARM key, LabPlan attribute, Rules attribute, label)
_CONNECTION: tuple[tuple[str, str, str, str], ...] = (
    ("webSshAccess", "web_ssh_access", "web_ssh_access", "Web SSH access"),
    ("webRdpAccess", "web_rdp_access", "web_rdp_access", "Web RDP access"),
    ("clientSshAccess", "client_ssh_access", "client_ssh_access", "Client SSH access"),
    ("clientRdpAccess", "client_rdp_access", "client_rdp_access", "Client RDP access"),
)
_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("shutdownOnDisconnect", "shutdown_on_disconnect", "shutdown_on_disconnect", "Shutdown on disconnect"),
    (
        "shutdownWhenNotConnected",
        "shutdown_when_not_connected",
        "shutdown_when_not_connected",
        "Shutdown when not connected",
    ),
)
_DELAYS: tuple[tuple[str, str, str, str], ...] = (
    ("disconnectDelay", "disconnect_delay", "max_disconnect_delay", "Disconnect delay"),
    ("noConnectDelay", "no_connect_delay", "max_no_connect_delay", "No-connect delay"),
    ("idleDelay", "idle_delay", "max_idle_delay", "Idle delay"),
)


# The spec's default of each enum leaf (LabServices.json, 2023-06-07): what the service applies when a
# plan leaves the leaf out, so an absent leaf is judged as this value.
_SPEC_DEFAULT: Mapping[str, str] = {
    "webSshAccess": "None",
    "webRdpAccess": "None",
    "clientSshAccess": "None",
    "clientRdpAccess": "None",
    "shutdownOnDisconnect": "Disabled",
    "shutdownWhenNotConnected": "Disabled",
    "shutdownOnIdle": "None",
}
# delay ARM key -> the ARM key of the feature it belongs to
_DELAY_FEATURE: Mapping[str, str] = {
    "disconnectDelay": "shutdownOnDisconnect",
    "noConnectDelay": "shutdownWhenNotConnected",
    "idleDelay": "shutdownOnIdle",
}
FeatureState = Literal["on", "off", "unknown"]


def _check(plan: LabPlan, rules: Rules) -> tuple[list[Finding], dict[str, Any]]:
    """(drift and unknown-value findings, the patch). Each drifted profile goes into the patch whole."""
    findings: list[Finding] = []
    connection = plan.connection or ConnectionProfile()
    shutdown = plan.shutdown or AutoShutdownProfile()

    for key, attr, rule_attr, label in _CONNECTION:
        bound: str | None = getattr(rules, rule_attr)
        if bound is not None:
            finding = _ranked(CONNECTION_PROFILE, key, label, getattr(connection, attr), bound, CONNECTION_RANK, "most")
            findings += [finding] if finding else []
    for key, attr, rule_attr, label in _FLAGS:
        if getattr(rules, rule_attr) == "Enabled":
            finding = _flag(key, label, getattr(shutdown, attr))
            findings += [finding] if finding else []
    if rules.min_shutdown_on_idle is not None:
        idle = _ranked(
            SHUTDOWN_PROFILE,
            "shutdownOnIdle",
            "Shutdown on idle",
            shutdown.shutdown_on_idle,
            rules.min_shutdown_on_idle,
            IDLE_RANK,
            "least",
        )
        findings += [idle] if idle else []
    features = _features(shutdown, rules)
    for key, attr, rule_attr, label in _DELAYS:
        limit: timedelta | None = getattr(rules, rule_attr)
        observed = getattr(shutdown, attr)
        feature = features[_DELAY_FEATURE[key]]
        # A delay only matters while its feature is on (or the patch turns it on): an absent delay of a
        # feature that is off is not drift. With the feature's state unknown, only a delay that is there
        # is checked (shortening it never loosens anything).
        if limit is not None and (feature == "on" or (feature == "unknown" and observed is not None)):
            finding = _delay(key, label, observed, limit)
            findings += [finding] if finding else []

    return findings, _patch(plan, findings)


def _patch(plan: LabPlan, findings: list[Finding]) -> dict[str, Any]:
    """For each profile with drift: the profile exactly as read, with only the drifted leaves changed.

    Sending the whole profile keeps a service that replaces nested objects (instead of merging them) from
    resetting the leaves the patch does not fix to the spec's defaults (clientRdpAccess Public -> None).
    A key that was absent is added only when it is drifted; profiles without drift are left out."""
    profiles: dict[str, dict[str, Any]] = {}
    for finding in findings:
        if not finding.is_drift:
            continue
        _, profile, key = finding.field.split(".")
        if profile not in profiles:
            profiles[profile] = dict(plan.profiles_as_read.get(profile) or {})  # values as read, unchanged
        profiles[profile][key] = finding.patch_value
    return {"properties": profiles} if profiles else {}


def _features(shutdown: AutoShutdownProfile, rules: Rules) -> dict[str, FeatureState]:
    """Whether each shutdown feature will be on once the patch is applied: on as read, or required."""
    states: dict[str, FeatureState] = {}
    for key, attr, rule_attr, _label in _FLAGS:
        observed = getattr(shutdown, attr)
        value = _ENABLE.get((_SPEC_DEFAULT[key] if observed is None else observed).lower())
        required = getattr(rules, rule_attr) == "Enabled"
        states[key] = "on" if required or value == "Enabled" else ("off" if value else "unknown")
    observed_idle = shutdown.shutdown_on_idle
    idle = {name.lower(): name for name in IDLE_RANK}.get(
        (_SPEC_DEFAULT["shutdownOnIdle"] if observed_idle is None else observed_idle).lower()
    )
    idle_required = rules.min_shutdown_on_idle not in (None, "None")
    states["shutdownOnIdle"] = (
        "on" if idle_required or (idle not in (None, "None")) else ("off" if idle is not None else "unknown")
    )
    return states


def _unknown(profile: str, key: str, label: str, observed: str, allowed: str, what: str) -> Finding:
    """An enum value labguard does not know (a newer api-version may add one), or a delay it cannot read:
    reported for a person to check, never written over (writing the bound could loosen it)."""
    return Finding(
        rule="unknown-value",
        field=f"properties.{profile}.{key}",
        observed=observed,
        allowed=allowed,
        severity="medium",
        message=(
            f"{label} has the value {shown(observed)}, {what}; the policy allows {allowed}. labguard leaves "
            "it as it is (it never writes over a value it cannot judge): check it by hand."
        ),
    )


def _ranked(
    profile: str,
    key: str,
    label: str,
    observed: str | None,
    bound: str,
    rank: Mapping[str, int],
    kind: Literal["most", "least"],
) -> Finding | None:
    """A bound on an ordered enum: ``most`` = observed may not rank above it, ``least`` = not below it.
    An absent value is judged as the spec's default (None for a channel and for the idle mode).
    The finding's text is built only when there is a finding (most plans have none)."""
    effective = _SPEC_DEFAULT[key] if observed is None else observed
    canonical = _canonical_names(tuple(rank)).get(effective.lower())
    if canonical is not None:
        inside = rank[canonical] <= rank[bound] if kind == "most" else rank[canonical] >= rank[bound]
        if inside:
            return None
    order = " < ".join(rank)
    allowed = f"at {kind} {bound} ({order})"
    if canonical is None:
        return _unknown(profile, key, label, effective, allowed, "which labguard does not know")
    verb = "allows" if kind == "most" else "requires"
    if observed is None:
        problem = f"is not set on the plan (Azure's default is {canonical}); the policy {verb} {allowed}"
    else:
        problem = f"is {canonical} but the policy {verb} {allowed}"
    severity: Severity = "high" if profile == CONNECTION_PROFILE and canonical == "Public" else "medium"
    rule = ("connection." if profile == CONNECTION_PROFILE else "shutdown.") + key
    return Finding(
        rule=rule,
        field=f"properties.{profile}.{key}",
        observed=observed,
        allowed=allowed,
        severity=severity,
        message=f"{label} {problem}; the fix sets it to {bound}.",
        patch_value=bound,
    )


@functools.cache
def _canonical_names(names: tuple[str, ...]) -> dict[str, str]:
    """Lower-case name -> the name as the rank spells it (a rank has a handful of names)."""
    return {name.lower(): name for name in names}


def _flag(key: str, label: str, observed: str | None) -> Finding | None:
    """A shutdown flag the policy requires Enabled; absent means the spec's default, Disabled."""
    canonical = _ENABLE.get((_SPEC_DEFAULT[key] if observed is None else observed).lower())
    if canonical == "Enabled":
        return None
    if canonical is None:
        assert observed is not None
        return _unknown(SHUTDOWN_PROFILE, key, label, observed, "Enabled", "which labguard does not know")
    if observed is None:
        problem = "is not set on the plan (Azure's default is Disabled); the policy requires Enabled"
    else:
        problem = f"is {canonical} but the policy requires Enabled"
    return Finding(
        rule=f"shutdown.{key}",
        field=f"properties.{SHUTDOWN_PROFILE}.{key}",
        observed=observed,
        allowed="Enabled",
        severity="medium",
        message=f"{label} {problem}; the fix enables it.",
        patch_value="Enabled",
    )


def _delay(key: str, label: str, observed: str | None, limit: timedelta) -> Finding | None:
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
        return _unknown(SHUTDOWN_PROFILE, key, label, observed, allowed, "which is not a duration labguard can read")
    if value is not None and value < timedelta(0):
        assert observed is not None
        return _unknown(SHUTDOWN_PROFILE, key, label, observed, allowed, "a negative duration")
    if value is None:
        problem = f"is not set on the plan while its feature is on; the policy allows {allowed}"
    else:
        problem = f"is {shown(observed)} ({describe(value)}) but the policy allows {allowed}"
    return Finding(
        rule=f"shutdown.{key}",
        field=f"properties.{SHUTDOWN_PROFILE}.{key}",
        observed=observed,
        allowed=allowed,
        severity="low" if value is not None else "medium",
        message=f"{label} {problem}; the fix sets it to {bound}.",
        patch_value=bound,
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
        field="properties.provisioningState",
        observed=raw,
        allowed="Succeeded or Failed",
        severity="info",
        message=(
            f"The plan {why}; labguard only checks and patches a plan in a terminal state "
            "(Succeeded or Failed) and will look again on the next sweep."
        ),
    )


def _failed(plan: LabPlan) -> Finding:
    error = plan.error
    if error is None:
        what = "The plan is in the Failed state and reports no error details (no resourceOperationError)."
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
        what = "The last operation on the plan failed: " + ("; ".join(parts) or "no details given") + "."
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
    return Finding(
        rule="provisioning.failed",
        field="properties.resourceOperationError" if error is not None else "properties.provisioningState",
        observed=(error.code if error is not None and error.code else "Failed"),
        allowed="Succeeded",
        severity="high",
        message=(
            f"{what} {who} labguard does not patch a failed plan: fixing it is its owner's job, and "
            "enforcement resumes once the plan is Succeeded. Any drift below is listed for information."
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
    tags = {str(k).lower(): (str(k), v) for k, v in plan.tags.items()}
    found = tags.get(policy.exemption_tag.lower())
    if found is None:
        return None, []
    tag, raw_reason = found
    shown_reason = shown(raw_reason.strip(), quote=False) if raw_reason and raw_reason.strip() else ""
    reason = shown_reason or "no reason given"  # a value of control characters only shows as nothing
    until_found = tags.get(policy.exemption_until_tag.lower())
    field = f"tags.{tag}"
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
            f"tags.{until_tag}",
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
            f"tags.{until_tag}",
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


def shown(value: str | None, *, quote: bool = True, limit: int = 200) -> str:
    """Untrusted text (plan owners write supportInfo, tags...) made safe for one line of a report or mail."""
    if value is None:
        return "(none)"
    text = " ".join(_CONTROL.sub(" ", value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text) if quote else text
