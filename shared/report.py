"""The compliance report an admin reads: one table row per plan, then the details that need action.

``python -m shared.report --policy policy.yaml samples/lab_plans.json`` evaluates lab plan bodies
(ARM JSON: a list, a list response ``{"value": [...]}``, or one body) against the policy and prints
the report. Pure: no Azure calls, nothing is changed; in enforce mode it shows what would be sent.
Exit status: 0 = report printed; 1 = some entries could not be read as lab plans; 2 = bad policy,
settings or input file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.drift import Evaluation, evaluate, shown
from shared.lab_plans import LabPlan
from shared.policy import Mode, PolicyError, load_policy
from shared.settings import Settings, SettingsError

__all__ = ["evaluation_to_dict", "main", "render_report"]

_ORDER = {"failed": 0, "drifted": 1, "exempt": 2, "skipped": 3, "compliant": 4}
_WIDTH = 100


def render_report(
    evaluations: Sequence[Evaluation],
    mode: str,
    *,
    policy_source: str | None = None,
    now: datetime | None = None,
) -> str:
    """Plain-text report: header, counts, one row per plan (worst first), then details per plan."""
    lines = ["labguard compliance report", "=" * 26]
    if policy_source:
        lines.append(f"policy: {policy_source}")
    if now is not None:
        lines.append(f"evaluated at: {now.isoformat(timespec='seconds')}")
    if mode == "enforce":
        lines.append("mode: enforce (drifted plans get the patches shown below)")
    else:
        lines.append("mode: audit (report only; nothing is changed; patches show what enforce mode would send)")
    ordered = sorted(evaluations, key=lambda e: _ORDER.get(e.status, 9))
    counts = {status: sum(1 for e in evaluations if e.status == status) for status in _ORDER}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    lines += ["", f"{len(evaluations)} plan{'s' if len(evaluations) != 1 else ''}: {summary or 'none'}", ""]
    if not evaluations:
        return "\n".join(lines) + "\n"

    rows = [("STATUS", "PLAN (resource group/name)", "DRIFT", "WHY")]
    for ev in ordered:
        rows.append((ev.status, _plan_label(ev), str(len(ev.violations)) if ev.violations else "-", _why(ev)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for status, plan, drift, why in rows:
        head = f"{status:<{widths[0]}}  {plan:<{widths[1]}}  {drift:>{widths[2]}}  "
        room = max(20, _WIDTH + 20 - len(head))
        lines.append((head + _cut(why, room)).rstrip())

    details = [ev for ev in ordered if ev.findings]
    if details:
        lines += ["", "Details", "-------"]
    for ev in details:
        lines += ["", f"{_plan_label(ev)}  [{ev.status}]", f"  {ev.plan.id.path}"]
        if ev.reason:
            lines.append(f"  reason: {ev.reason}")
        for finding in ev.findings:
            change = ""
            if finding.patch_value is not None:
                observed = "(not set)" if finding.observed is None else shown(finding.observed, quote=False, limit=40)
                change = f"  {observed} -> {finding.patch_value}"
            lines.append(f"  {finding.severity.upper():<6} {finding.rule}{_cut(change, 80)}")
            lines += textwrap.wrap(
                finding.message, _WIDTH, initial_indent=" " * 9, subsequent_indent=" " * 9, break_on_hyphens=False
            )
        if ev.patch:
            verb = "PATCH sent in enforce mode" if mode == "enforce" else "PATCH enforce mode would send"
            lines.append(f"  {verb} (merge-patch body for {ev.plan.name}):")
            lines += ["    " + line for line in json.dumps(ev.patch, indent=2).splitlines()]
        elif ev.violations:
            lines.append(f"  no patch: the plan is {ev.status}")
    return "\n".join(lines) + "\n"


def evaluation_to_dict(ev: Evaluation) -> dict[str, Any]:
    """One evaluation as plain JSON data (``--format json``)."""
    return {
        "id": ev.plan.id.path,
        "status": ev.status,
        "reason": ev.reason,
        "findings": [
            {
                "rule": f.rule,
                "field": f.path,
                "observed": f.observed,
                "allowed": f.allowed,
                "severity": f.severity,
                "message": f.message,
                "patchValue": f.patch_value,
            }
            for f in ev.findings
        ],
        "patch": ev.patch,
    }


def _plan_label(ev: Evaluation) -> str:
    return f"{ev.plan.id.resource_group}/{ev.plan.name}"


def _why(ev: Evaluation) -> str:
    if ev.status in ("skipped", "exempt", "failed") and ev.reason:
        return ev.reason
    if ev.violations:
        return ", ".join(f.leaf for f in ev.violations)
    return "-"


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 1] + "…"


def _read_plans(path: str) -> tuple[list[LabPlan], list[str]]:
    """Plans from a JSON file, plus one problem line per entry that is not a lab plan."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, dict):
        data = data["value"] if isinstance(data.get("value"), list) else [data]
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of lab plan bodies")
    plans: list[LabPlan] = []
    problems: list[str] = []
    for index, body in enumerate(data):
        try:
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
            plans.append(LabPlan.from_arm(body))
        except ValueError as exc:
            problems.append(f"{path}: entry {index}: not evaluated: {exc}")
    return plans, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.report", description="Evaluate lab plan JSON against the policy and print a report."
    )
    parser.add_argument("plans", nargs="+", help="JSON file(s) of ARM lab plan bodies")
    parser.add_argument("--policy", help="policy file (default: LABGUARD_POLICY_FILE, else policy.yaml)")
    parser.add_argument("--mode", choices=["audit", "enforce"], help="override the mode (default: LABGUARD_MODE)")
    parser.add_argument("--now", help="evaluate as of this ISO date/time (default: now, UTC)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"labguard: bad setting: {exc}", file=sys.stderr)
        return 2
    mode: Mode | None = args.mode or settings.mode_override
    try:
        policy = load_policy(args.policy or settings.policy_file, mode)
    except PolicyError as exc:
        print(f"labguard: {exc}", file=sys.stderr)
        return 2
    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    except ValueError:
        print(f"labguard: --now {args.now!r} is not an ISO date/time such as 2025-07-31T12:00:00Z", file=sys.stderr)
        return 2

    plans: list[LabPlan] = []
    problems: list[str] = []
    for path in args.plans:
        try:
            found, bad = _read_plans(path)
        except (OSError, ValueError) as exc:
            print(f"labguard: {path}: cannot read lab plans: {exc}", file=sys.stderr)
            return 2
        plans += found
        problems += bad

    evaluations = [evaluate(plan, policy, now) for plan in plans]
    if args.format == "json":
        body = {"mode": policy.mode, "policy": policy.source, "plans": [evaluation_to_dict(e) for e in evaluations]}
        print(json.dumps(body, indent=2))
    else:
        print(render_report(evaluations, policy.mode, policy_source=policy.source, now=now), end="")
    for problem in problems:
        print(f"labguard: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
