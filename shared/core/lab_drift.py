"""Evaluation of one lab: the plan rules of :mod:`shared.core.drift`, applied to the lab's own profiles.

Why through :func:`shared.core.drift.evaluate` rather than a copy of it: a lab is held to exactly the same
bounds, scopes, overrides, exemption tag, absent-leaf defaults, unknown-value handling and whole-profile
patch shape as a plan. The lab is viewed as a plan (its ``connectionProfile`` / ``autoShutdownProfile``
in the plan's ``default*`` slots), evaluated, and the findings and patch are named back in the lab's keys.

On top, what a lab needs and a plan does not (the service refuses, or the lab becomes unusable):

* a Windows lab keeps client RDP, a Linux lab keeps client SSH: a bound of ``None`` on that channel is
  reported (``lab.not-patchable``), never written. With the OS unknown, no client channel is turned off;
* ``LowUsage`` idle detection is supported only on some images (Windows; on Linux it depends on the
  distribution and version), so raising a non-Windows lab to it is reported, never written (nor the
  idle delay of an idle mode that stays off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.core.drift import Finding, _patch, evaluate
from shared.core.durations import describe, format_iso, parse_delay
from shared.core.governed import GOVERNED, PROFILES
from shared.core.labs import LAB_VM_PROFILE, Lab
from shared.core.plans import LabPlan
from shared.core.policy import LabRules, Policy
from shared.core.text import shown

__all__ = ["LabEvaluation", "LabStatus", "evaluate_lab"]

LabStatus = Literal["compliant", "drifted", "skipped", "exempt", "failed"]
NOT_PATCHABLE = "lab.not-patchable"
# Rules reported, never patched: what the service would refuse, and what it cannot change on a lab.
REPORTED_ONLY = frozenset({NOT_PATCHABLE, "lab.vmSize", "lab.templateVm", "lab.nonAdminUser"})
# virtualMachineProfile keys the spec marks read-only: the service computes them, a patch leaves them out.
_VM_READ_ONLY = frozenset({"osType"})

_TO_LAB = {profile.arm_key: profile.lab_arm_key for profile in PROFILES}
_IDLE_MODE = next(s for s in GOVERNED if s.arm_key == "shutdownOnIdle")
# Plan wording in shared.core.drift's messages -> the lab's (fixed phrases only; untrusted text is left alone).
_WORDING = (
    ("is not set on the plan", "is not set on the lab"),
    ("The plan ", "The lab "),
    ("a plan in a terminal state", "a lab in a terminal state"),
    ("the plan is checked as usual", "the lab is checked as usual"),
    ("The plan is checked as usual", "The lab is checked as usual"),
)
# The client channel each OS needs to stay reachable.
_NEEDED_CHANNEL = {"windows": "clientRdpAccess", "linux": "clientSshAccess"}


@dataclass(frozen=True)
class LabEvaluation:
    """The verdict on one lab. ``patch`` is the body for PATCH .../labs/{name} (each drifted profile whole)."""

    lab: Lab
    findings: tuple[Finding, ...]
    patch: Mapping[str, Any]
    status: LabStatus
    reason: str | None = None

    @property
    def violations(self) -> tuple[Finding, ...]:
        """Every setting outside its bound that labguard would fix (exempt and failed labs too)."""
        return tuple(f for f in self.findings if f.is_drift)

    @property
    def drift(self) -> tuple[Finding, ...]:
        """The findings the patch fixes (empty whenever the patch is empty)."""
        return self.violations if self.patch else ()

    @property
    def not_patchable(self) -> tuple[Finding, ...]:
        """Out of bounds, but never written: the service would refuse it or the lab would be unusable."""
        return tuple(f for f in self.findings if f.rule in REPORTED_ONLY)

    @property
    def unknown_values(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.rule == "unknown-value")


def as_plan(lab: Lab) -> LabPlan:
    """The lab seen as a plan for :func:`shared.core.drift.evaluate` (the policy scope is the lab's own)."""
    profiles = {
        plan_key: lab.profiles_as_read[lab_key]
        for plan_key, lab_key in _TO_LAB.items()
        if lab_key in lab.profiles_as_read
    }
    return LabPlan(
        id=lab.id.scope,
        location=lab.location,
        provisioning_state=lab.provisioning_state,
        tags=lab.tags,
        error=lab.error,
        profiles_as_read=profiles,
    )


def evaluate_lab(lab: Lab, policy: Policy, now: datetime) -> LabEvaluation:
    """Evaluate one lab against the policy at time ``now``. Pure and total, as :func:`shared.core.drift.evaluate`."""
    proxy = as_plan(lab)
    base = evaluate(proxy, policy, now)
    findings = _withhold_refused(lab, list(base.findings))
    may_patch = base.status in ("compliant", "drifted")  # not failed, exempt or busy
    patch = _patch(proxy, findings) if base.patch else {}
    patch = _patch_for_lab(patch)
    status: LabStatus = base.status
    reason = base.reason
    rules = policy.lab_rules_for(lab.id.scope)
    lab_findings = _lab_rules(lab, rules)
    quota = next((f for f in lab_findings if f.is_drift), None)
    if quota is not None and may_patch:
        vm = {k: v for k, v in (lab.profiles_as_read.get(LAB_VM_PROFILE) or {}).items() if k not in _VM_READ_ONLY}
        vm[quota.field[-1]] = quota.patch_value
        patch = {"properties": {**patch.get("properties", {}), LAB_VM_PROFILE: vm}}
    findings = [*findings, *lab_findings]
    if base.status == "failed":
        findings = [_failed(lab) if f.rule == "provisioning.failed" else f for f in findings]
    elif may_patch and patch:
        status, reason = "drifted", None
    elif may_patch and any(f.rule in REPORTED_ONLY for f in findings):
        status = "drifted"
        reason = "out of bounds, but nothing labguard may write"
    return LabEvaluation(lab, tuple(_named_for_lab(f) for f in findings), patch, status, reason)


def _lab_rules(lab: Lab, rules: LabRules) -> list[Finding]:
    """The lab-only rules: size, template VM and non-admin user are reported (create-only: the service cannot
    change them on an existing lab); a usage quota above its bound is drift the patch lowers."""
    out: list[Finding] = []
    create_only = (
        "the service cannot change it on an existing lab (create-only), so labguard reports it, never patches it"
    )
    if rules.allowed_vm_sizes is not None and (lab.sku_name or "").lower() not in {
        size.lower() for size in rules.allowed_vm_sizes
    }:
        allowed = ", ".join(rules.allowed_vm_sizes)
        out.append(
            Finding(
                "lab.vmSize",
                ("properties", LAB_VM_PROFILE, "sku", "name"),
                lab.sku_name,
                f"one of {allowed}",
                "medium",
                f"VM size is {shown(lab.sku_name)}, not one the policy allows ({shown(allowed, quote=False)}); "
                f"{create_only}: recreate the lab with an allowed size.",
            )
        )
    if rules.template_vm == "Forbidden" and (lab.create_option or "").lower() == "templatevm":
        out.append(
            Finding(
                "lab.templateVm",
                ("properties", LAB_VM_PROFILE, "createOption"),
                lab.create_option,
                "Image (no template VM)",
                "medium",
                f"The lab uses a template VM, which the policy forbids; {create_only}: recreate it from an image.",
            )
        )
    if rules.require_non_admin_user and not lab.has_non_admin_user:
        out.append(
            Finding(
                "lab.nonAdminUser",
                ("properties", LAB_VM_PROFILE, "nonAdminUser"),
                None,
                "a non-admin user",
                "medium",
                f"The lab has no non-admin user, which the policy requires; {create_only}: recreate it with one.",
            )
        )
    if rules.max_usage_quota is not None:
        out += _quota(lab, rules.max_usage_quota)
    return out


def _quota(lab: Lab, limit: timedelta) -> list[Finding]:
    bound = format_iso(limit)
    allowed = f"at most {bound} ({describe(limit)}) per student"
    field = ("properties", LAB_VM_PROFILE, "usageQuota")
    label = "Usage quota"
    observed = lab.usage_quota
    if observed is None:  # required by the spec; an absent quota is nothing labguard can judge
        return []
    try:
        value = parse_delay(observed)
    except ValueError:
        value = None
    if value is None or value < timedelta(0):
        return [
            Finding(
                "unknown-value",
                field,
                observed,
                allowed,
                "medium",
                f"{label} has the value {shown(observed)}, which is not a duration labguard can read; the policy "
                f"allows {allowed}. labguard leaves it as it is: check it by hand.",
            )
        ]
    if value <= limit:
        return []
    return [
        Finding(
            "lab.usageQuota",
            field,
            observed,
            allowed,
            "medium",
            f"{label} is {shown(observed)} ({describe(value)}) but the policy allows {allowed}; the fix sets it "
            f"to {bound}.",
            patch_value=bound,
        )
    ]


def _withhold_refused(lab: Lab, findings: list[Finding]) -> list[Finding]:
    """Drift whose fix the service would refuse (or that would lock students out) becomes a report."""
    os_type = (lab.os_type or "").lower()
    needed = _NEEDED_CHANNEL.get(os_type)
    out: list[Finding] = []
    idle_withheld = False
    for finding in findings:
        key = finding.field[-1]
        why: str | None = None
        if finding.is_drift and key in ("clientRdpAccess", "clientSshAccess") and finding.patch_value == "None":
            if needed == key:
                channel = "client RDP" if key == "clientRdpAccess" else "client SSH"
                why = (
                    f"this is a {shown(lab.os_type, quote=False)} lab, whose students connect over {channel}; "
                    f"turning {channel} off would leave no way into its VMs, a state the service refuses"
                )
            elif needed is None:
                why = (
                    f"the lab's osType is {shown(lab.os_type)}, so labguard cannot tell which client channel its "
                    "students need; it never turns a client channel off on such a lab"
                )
        elif (
            finding.is_drift and key == "shutdownOnIdle" and finding.patch_value == "LowUsage" and os_type != "windows"
        ):
            why = (
                "LowUsage idle detection needs an image that supports it (Windows; on Linux it depends on the "
                f"distribution and version), and this lab's osType is {shown(lab.os_type)}; the service would "
                "refuse it on an image without support. Choose UserAbsence for this scope, or move the lab to a "
                "supported image"
            )
            idle_withheld = True
        if why is None:
            out.append(finding)
        else:
            out.append(_not_patchable(finding, why))
    if idle_withheld and (lab.observed(_IDLE_MODE) or "None").lower() == "none":
        # The idle mode stays off, so the idle delay the patch would have written with it is not written.
        out = [
            _not_patchable(f, "its idle mode stays off (see the shutdownOnIdle finding)")
            if f.is_drift and f.field[-1] == "idleDelay"
            else f
            for f in out
        ]
    return out


def _not_patchable(finding: Finding, why: str) -> Finding:
    return replace(
        finding,
        rule=NOT_PATCHABLE,
        patch_value=None,
        message=f"{finding.message.removesuffix('.').split('; the fix')[0]}. labguard does not write it: {why}.",
    )


def _named_for_lab(finding: Finding) -> Finding:
    field = finding.field
    if len(field) > 1 and field[0] == "properties" and field[1] in _TO_LAB:
        field = (field[0], _TO_LAB[field[1]], *field[2:])
    message = finding.message
    for old, new in _WORDING:
        message = message.replace(old, new)
    return replace(finding, field=field, message=message)


def _patch_for_lab(patch: Mapping[str, Any]) -> dict[str, Any]:
    props = patch.get("properties")
    if not isinstance(props, Mapping) or not props:
        return {}
    return {"properties": {_TO_LAB.get(key, key): value for key, value in props.items()}}


def _failed(lab: Lab) -> Finding:
    error = lab.error
    if error is None:
        what = "The lab is in the Failed state and reports no error details (no resourceOperationError)."
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
        what = "The last operation on the lab failed: " + ("; ".join(parts) or "no details given") + "."
    plan = f"its lab plan {lab.lab_plan_id.name}" if lab.lab_plan_id else "its lab plan (the lab names none)"
    return Finding(
        rule="provisioning.failed",
        field=("properties", "resourceOperationError" if error is not None else "provisioningState"),
        observed=(error.code if error is not None and error.code else "Failed"),
        allowed="Succeeded",
        severity="high",
        message=(
            f"{what} The support contacts of {plan} are told. labguard does not patch a failed lab: fixing it is "
            "its owner's job, and enforcement resumes once the lab is Succeeded."
        ),
    )
