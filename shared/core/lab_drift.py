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
from datetime import datetime
from typing import Any, Literal

from shared.core.drift import Finding, check, evaluate, failed_finding, patch_of
from shared.core.governed import GOVERNED, PLAN_PROFILES, feature_of, lab_only_settings
from shared.core.labs import Lab
from shared.core.plans import LabPlan
from shared.core.rules import Policy
from shared.core.text import shown

__all__ = ["LabEvaluation", "LabStatus", "evaluate_lab"]

LabStatus = Literal["compliant", "drifted", "skipped", "exempt", "failed"]
NOT_PATCHABLE = "lab.not-patchable"
# Rules reported, never patched: what the service would refuse, and what it cannot change on a lab.
REPORTED_ONLY = frozenset({NOT_PATCHABLE, *(s.rule for s in GOVERNED if s.reported_only)})

_TO_LAB = {profile.arm_key: profile.lab_arm_key for profile in PLAN_PROFILES if profile.arm_key}
# Plan wording in shared.core.drift's messages -> the lab's (fixed phrases only; untrusted text is left alone).
_WORDING = (
    ("is not set on the plan", "is not set on the lab"),
    ("The plan ", "The lab "),
    ("a plan in a terminal state", "a lab in a terminal state"),
    ("the plan is checked as usual", "the lab is checked as usual"),
    ("The plan is checked as usual", "The lab is checked as usual"),
)
# The client channel each OS needs to stay reachable; the values only some images support, and the delays
# that belong to each such mode's feature.
_NEEDED_CHANNEL = {s.client_os.lower(): s.arm_key for s in GOVERNED if s.client_os}
_CHANNEL_NAME = {s.arm_key: s.label.removesuffix(" access") for s in GOVERNED if s.client_os}
_IMAGE_DEPENDENT = {s.arm_key: s for s in GOVERNED if s.image_dependent}
_DELAY_OF = {s.arm_key: f.arm_key for s in GOVERNED if (f := feature_of(s)) is not None and f.image_dependent}


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
    base = evaluate(as_plan(lab), policy, now)
    may_patch = base.status in ("compliant", "drifted")  # not failed, exempt or busy
    lab_only = check(lab, policy.rules_for(lab.id.scope), lab_only_settings())
    findings = [*(_named_for_lab(f) for f in _withhold_refused(lab, list(base.findings))), *lab_only]
    patch = patch_of(lab.profiles_as_read, findings) if may_patch else {}
    status: LabStatus = base.status
    reason = base.reason
    if base.status == "failed":
        findings = [_failed(lab) if f.rule == "provisioning.failed" else f for f in findings]
    elif may_patch and patch:
        status, reason = "drifted", None
    elif may_patch and any(f.rule in REPORTED_ONLY for f in findings):
        status = "drifted"
        reason = "out of bounds, but nothing labguard may write"
    return LabEvaluation(lab, tuple(findings), patch, status, reason)


def _withhold_refused(lab: Lab, findings: list[Finding]) -> list[Finding]:
    """Drift whose fix the service would refuse (or that would lock students out) becomes a report."""
    os_type = (lab.os_type or "").lower()
    needed = _NEEDED_CHANNEL.get(os_type)
    out: list[Finding] = []
    withheld_modes: set[str] = set()
    for finding in findings:
        key = finding.field[-1]
        why: str | None = None
        if finding.is_drift and key in _CHANNEL_NAME and finding.patch_value == "None":
            if needed == key:
                channel = _CHANNEL_NAME[key][0].lower() + _CHANNEL_NAME[key][1:]  # "client RDP"
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
            finding.is_drift
            and key in _IMAGE_DEPENDENT
            and finding.patch_value == _IMAGE_DEPENDENT[key].image_dependent
            and os_type != "windows"
        ):
            why = (
                f"{finding.patch_value} idle detection needs an image that supports it (Windows; on Linux it "
                f"depends on the distribution and version), and this lab's osType is {shown(lab.os_type)}; the "
                "service would refuse it on an image without support. Choose UserAbsence for this scope, or move "
                "the lab to a supported image"
            )
            withheld_modes.add(key)
        if why is None:
            out.append(finding)
        else:
            out.append(_not_patchable(finding, why))
    for mode in withheld_modes:
        setting = _IMAGE_DEPENDENT[mode]
        if (lab.observed(setting) or setting.scale[0]).lower() == setting.scale[0].lower():
            # The mode stays off, so the delay the patch would have written with it is not written.
            out = [
                _not_patchable(f, f"its mode stays off (see the {mode} finding)")
                if f.is_drift and _DELAY_OF.get(f.field[-1]) == mode
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


def _failed(lab: Lab) -> Finding:
    plan = f"its lab plan {lab.lab_plan_id.name}" if lab.lab_plan_id else "its lab plan (the lab names none)"
    return failed_finding(lab.error, "lab", f"The support contacts of {plan} are told.")
