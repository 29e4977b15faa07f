"""The compliance snapshot: one JSON document per run, the source of the HTML page and the daily digest.

The ``labguard report`` command and the timer sweep both build it here from the same outcomes, so the
page an admin opens after a sweep and the one they render on a laptop agree. Pure: no Azure imports,
no I/O. Text that came from ARM (tags, error messages, support info) is kept as data here, cut to one
safe line by :func:`shared.core.text.shown`; the page escapes it again when it renders (never trust twice).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.core.change import Change
from shared.core.drift import Evaluation
from shared.core.failures import failure_digest, failure_key
from shared.core.lab_drift import REPORTED_ONLY, LabEvaluation
from shared.core.labs import LabId
from shared.core.plans import PlanId
from shared.core.report import evaluation_to_dict
from shared.core.rules import Policy
from shared.core.text import shown

__all__ = [
    "ATTENTION_STATUSES",
    "DETAIL_STATUSES",
    "DRIFT_STATUSES",
    "EXPIRING_WITHIN_DAYS",
    "STATUSES",
    "Change",
    "LabEntry",
    "NoticeState",
    "PlanEntry",
    "build_snapshot",
]

SNAPSHOT_VERSION = 1
#: Every outcome a run reports, in the order the page shows them.
STATUSES = (
    "compliant",
    "fixed",
    "drifted",
    "unconverged",
    "proof-deferred",
    "exempt",
    "skipped",
    "provisioning-failed",
    "write-failed",
    "failed",
    "gone",
)
#: Outcomes where the plan is not proven inside the policy: drift left (audit) or a write that did not
#: converge (enforce). One list, so the page, the JUnit report and the exit code cannot disagree.
DRIFT_STATUSES = ("drifted", "unconverged", "proof-deferred", "write-failed")
#: Outcomes that need someone's attention: the page's verdict counts them, and they fail a run.
ATTENTION_STATUSES = (*DRIFT_STATUSES, "provisioning-failed", "failed")
#: Outcomes whose ``detail`` (why a plan was not checked, or what the write did) is shown with the plan.
DETAIL_STATUSES = ("unconverged", "proof-deferred", "write-failed", "failed", "gone")
#: Exemptions ending within this many days are called out (page and digest).
EXPIRING_WITHIN_DAYS = 14
CHANGES_WINDOW_DAYS = 7
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class NoticeState:
    """What the notice ledger (or this run's delivery) says about a Failed plan's current failure."""

    sent: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    problem: str | None = None

    def describe(self) -> str:
        if self.problem:
            return f"notice status unknown ({self.problem})"
        parts = []
        if self.sent:
            parts.append("sent (" + ", ".join(self.sent) + ")")
        if self.pending:
            parts.append("being sent (" + ", ".join(self.pending) + ")")
        if self.failed:
            parts.append("not delivered (" + ", ".join(self.failed) + "); retried next sweep")
        return "; ".join(parts) or "no notice sent yet"

    def as_data(self) -> dict[str, Any]:
        return {
            "sent": list(self.sent),
            "pending": list(self.pending),
            "failed": list(self.failed),
            "problem": self.problem,
            "text": self.describe(),
        }


@dataclass(frozen=True)
class PlanEntry:
    """One plan's outcome in a run. ``plan_id`` is the ARM path (or the raw id of an unreadable plan)."""

    plan_id: str
    status: str
    evaluation: Evaluation | None = None
    detail: str | None = None
    notice: NoticeState | None = None


@dataclass(frozen=True)
class LabEntry:
    """One lab's outcome in a run. ``lab_id`` is the lab's ARM path (or the raw id of an unreadable lab)."""

    lab_id: str
    status: str
    evaluation: LabEvaluation | None = None
    detail: str | None = None
    notice: NoticeState | None = None


def build_snapshot(
    entries: Sequence[PlanEntry],
    policy: Policy,
    *,
    source: str,
    subscriptions: Sequence[str],
    resource_groups: Sequence[str],
    generated_at: datetime,
    changes: Sequence[Change] = (),
    changes_problem: str | None = None,
    list_failures: Sequence[tuple[str, str]] = (),
    labs: Sequence[LabEntry] = (),
) -> dict[str, Any]:
    """The snapshot as plain JSON data (``json.dumps`` it as is).

    Each plan carries the labs whose ``labPlanId`` names it (``plans[].labs``); labs naming no plan of
    this run are in ``labsWithoutPlan``. ``labTotals`` counts labs by status as ``totals`` counts plans.
    """
    today = generated_at.astimezone(UTC).date()
    plans = [_plan(entry, policy, today) for entry in entries]
    plans.sort(
        key=lambda p: (p["subscriptionId"] or "~", (p["resourceGroup"] or "~").lower(), (p["name"] or "").lower())
    )
    lab_rows = sorted((_lab(entry, policy, today) for entry in labs), key=lambda lab: (lab["name"] or "").lower())
    by_plan = {p["id"].lower(): p for p in plans if p["subscriptionId"]}
    for plan in plans:
        plan["labs"] = []
    without_plan = []
    for lab in lab_rows:
        owner = by_plan.get((lab["labPlanId"] or "").lower())
        if owner is not None:
            owner["labs"].append(lab)
        else:
            without_plan.append(lab)
    lab_counts = Counter(lab["status"] for lab in lab_rows)
    counts = Counter(p["status"] for p in plans)
    groups: dict[tuple[str, str], Counter[str]] = {}
    for plan in plans:
        key = (plan["subscriptionId"] or "?", plan["resourceGroup"] or "?")
        groups.setdefault(key, Counter())[plan["status"]] += 1
    exemptions = [
        {"kind": "plan", "id": p["id"], "name": p["name"], "resourceGroup": p["resourceGroup"], **p["exemption"]}
        for p in plans
        if p["exemption"] is not None
    ] + [
        {"kind": "lab", "id": lab["id"], "name": lab["name"], "resourceGroup": lab["resourceGroup"], **lab["exemption"]}
        for lab in lab_rows
        if lab["exemption"] is not None
    ]
    exemptions.sort(key=lambda e: (e["until"] or "9999-99-99", e["name"] or ""))
    since = generated_at - timedelta(days=CHANGES_WINDOW_DAYS)
    recent = sorted((c for c in changes if c.at >= since), key=lambda c: c.at, reverse=True)
    return {
        "version": SNAPSHOT_VERSION,
        "generatedAt": generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": source,
        "mode": policy.mode,
        "policy": policy.source,
        "scope": {"subscriptions": list(subscriptions), "resourceGroups": list(resource_groups)},
        "totals": {"plans": len(plans), **{status: counts[status] for status in STATUSES}},
        "resourceGroups": [
            {
                "subscriptionId": sub,
                "resourceGroup": rg,
                "plans": sum(c.values()),
                "counts": {status: c[status] for status in STATUSES if c[status]},
            }
            for (sub, rg), c in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].lower()))
        ],
        "labTotals": {"labs": len(lab_rows), **{status: lab_counts[status] for status in STATUSES}},
        "plans": plans,
        "labsWithoutPlan": without_plan,
        "exemptions": exemptions,
        "failedPlans": [p for p in plans if p["status"] == "provisioning-failed"],
        "failedLabs": [lab for lab in lab_rows if lab["status"] == "provisioning-failed"],
        "changes": [_change(c) for c in recent],
        "changesWindowDays": CHANGES_WINDOW_DAYS,
        "changesProblem": changes_problem,
        "listFailures": [
            {"scope": scope, "error": shown(error, quote=False, limit=300)} for scope, error in list_failures
        ],
    }


def _plan(entry: PlanEntry, policy: Policy, today: date) -> dict[str, Any]:
    evaluation = entry.evaluation
    try:
        pid: PlanId | None = evaluation.plan.id if evaluation is not None else PlanId.parse(entry.plan_id)
    except ValueError:
        pid = None
    data: dict[str, Any] = {
        "id": pid.path if pid else shown(entry.plan_id, quote=False, limit=300),
        "subscriptionId": pid.subscription_id if pid else None,
        "resourceGroup": pid.resource_group if pid else None,
        "name": pid.name if pid else None,
        "status": entry.status,
        "detail": shown(entry.detail, quote=False, limit=300) if entry.detail else None,
        "reason": None,
        "findings": [],
        "exemption": None,
        "failure": None,
        "notice": entry.notice.as_data() if entry.notice is not None else None,
    }
    if evaluation is None:
        return data
    as_dict = evaluation_to_dict(evaluation)
    data["reason"] = as_dict["reason"]
    data["findings"] = [
        {
            "rule": f["rule"],
            "field": f["field"],
            "observed": None if f["observed"] is None else shown(f["observed"], quote=False, limit=120),
            "allowed": f["allowed"],
            "severity": f["severity"],
            "message": f["message"],
            "patchValue": f["patchValue"],
        }
        for f in as_dict["findings"]
    ]
    data["exemption"] = _exemption(evaluation, policy, today)
    plan = evaluation.plan
    if evaluation.status == "failed":
        error = plan.error
        support = plan.support
        data["failure"] = {
            "code": shown(error.code, quote=False, limit=128) if error and error.code else None,
            "message": shown(error.message, quote=False, limit=400) if error and error.message else None,
            "timestamp": shown(error.timestamp, quote=False, limit=64) if error and error.timestamp else None,
            "contact": shown(support.email, quote=False, limit=120) if support and support.email else None,
            "key": failure_digest(failure_key(plan)),
        }
    return data


def _lab(entry: LabEntry, policy: Policy, today: date) -> dict[str, Any]:
    """One lab as the page and the digest show it, under its plan. Findings say which are reported only
    (``reportedOnly``: the service cannot change it, or would refuse it) and, in ``message``, why."""
    evaluation = entry.evaluation
    try:
        lid: LabId | None = evaluation.lab.id if evaluation is not None else LabId.parse(entry.lab_id)
    except ValueError:
        lid = None
    lab = evaluation.lab if evaluation is not None else None
    data: dict[str, Any] = {
        "id": lid.path if lid else shown(entry.lab_id, quote=False, limit=300),
        "subscriptionId": lid.subscription_id if lid else None,
        "resourceGroup": lid.resource_group if lid else None,
        "name": lid.name if lid else None,
        "labPlanId": lab.lab_plan_id.path if lab is not None and lab.lab_plan_id is not None else None,
        "osType": shown(lab.os_type, quote=False, limit=40) if lab is not None and lab.os_type else None,
        "status": entry.status,
        "detail": shown(entry.detail, quote=False, limit=300) if entry.detail else None,
        "reason": None,
        "findings": [],
        "exemption": None,
        "failure": None,
        "notice": entry.notice.as_data() if entry.notice is not None else None,
    }
    if evaluation is None or lab is None:
        return data
    data["reason"] = shown(evaluation.reason, quote=False, limit=300) if evaluation.reason else None
    data["findings"] = [
        {
            "rule": f.rule,
            "field": f.path,
            "observed": None if f.observed is None else shown(f.observed, quote=False, limit=120),
            "allowed": f.allowed,
            "severity": f.severity,
            "message": f.message,
            "patchValue": f.patch_value,
            "reportedOnly": f.rule in REPORTED_ONLY,
        }
        for f in evaluation.findings
    ]
    data["exemption"] = _exemption_of(lab.tags, policy, today)
    if entry.status == "provisioning-failed":
        error = lab.error
        data["failure"] = {
            "code": shown(error.code, quote=False, limit=128) if error and error.code else None,
            "message": shown(error.message, quote=False, limit=400) if error and error.message else None,
            "timestamp": shown(error.timestamp, quote=False, limit=64) if error and error.timestamp else None,
            "contact": None,  # the support contacts of its plan are told
        }
    return data


def _exemption(evaluation: Evaluation, policy: Policy, today: date) -> dict[str, Any] | None:
    """The plan's exemption tag, its end date and whether it is active, ended or ends soon."""
    return _exemption_of(evaluation.plan.tags, policy, today)


def _exemption_of(raw_tags: Mapping[str, str], policy: Policy, today: date) -> dict[str, Any] | None:
    """A plan's or lab's exemption tag, its end date and whether it is active, ended or ends soon."""
    tags = {k.lower(): v for k, v in raw_tags.items()}
    reason = tags.get(policy.exemption_tag.lower())
    if reason is None:
        return None
    raw_until = tags.get(policy.exemption_until_tag.lower())
    until: date | None = None
    if raw_until is not None and _DATE.match(raw_until.strip()):
        try:
            until = date.fromisoformat(raw_until.strip())
        except ValueError:
            until = None
    if raw_until is not None and until is None:
        state = "invalid-date"
    elif until is not None and until < today:
        state = "ended"
    elif until is not None and (until - today).days <= EXPIRING_WITHIN_DAYS:
        state = "ending-soon"
    else:
        state = "active"
    return {
        "reason": shown(reason.strip(), quote=False, limit=200) if reason.strip() else "no reason given",
        "until": until.isoformat() if until else None,
        "untilRaw": None if raw_until is None or until is not None else shown(raw_until, quote=False, limit=60),
        "daysLeft": (until - today).days if until is not None else None,
        "state": state,
    }


def _change(change: Change) -> dict[str, Any]:
    return {
        "at": change.at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "planId": shown(change.plan_id, quote=False, limit=300),
        "name": change.plan_id.rstrip("/").rsplit("/", 1)[-1],
        "changes": [
            {
                "field": shown(f, quote=False, limit=120),
                "observed": None if o is None else shown(o, quote=False, limit=60),
                "new": None if n is None else shown(n, quote=False, limit=60),
            }
            for f, o, n in change.changes
        ],
        "kind": change.kind,
        "labPlanName": change.lab_plan_id.rstrip("/").rsplit("/", 1)[-1] if change.lab_plan_id else None,
        "trigger": change.trigger,
        "status": change.status,
        "detail": shown(change.detail, quote=False, limit=300) if change.detail else None,
        "correlationId": shown(change.correlation_id, quote=False, limit=100) if change.correlation_id else None,
    }
