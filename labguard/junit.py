"""``labguard audit --format junit``: a JUnit XML report, so Azure DevOps and GitHub Actions show drift natively.

One test suite per run, one test case per plan (classname ``<subscription>.<resource group>``, name the
plan): a failure per finding (each drifted setting, a Failed provisioning, a write refused), ``skipped``
for exempt and busy plans, an error for a plan that could not be read. Each lab is a test case under its
plan (classname ``<subscription>.<resource group>.<plan>``, so CI shows it nested in the plan; labs naming
no plan in scope under ``<subscription>.<resource group>.(no plan in scope)``), failing as a plan fails,
and also for each finding labguard only reports (the service cannot change it, or would refuse the fix).
A scope with no lab plans is a test case of its own that fails, as are scopes that could not be listed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from labguard.render import change_text, findings_lines
from labguard.runner import PlanResult, RunResult
from shared.core.lab_drift import REPORTED_ONLY
from shared.core.snapshot import DRIFT_STATUSES


def _case(suite: ET.Element, classname: str, name: str, duration: str = "0") -> ET.Element:
    return ET.SubElement(suite, "testcase", {"classname": classname, "name": name, "time": duration})


def _plan_case(suite: ET.Element, item: PlanResult, result: RunResult) -> ET.Element:
    pid = item.plan_id
    classname = f"{pid.subscription_id}.{pid.resource_group}" if pid else "unknown"
    case = _case(suite, classname, pid.name if pid else item.outcome.plan_id)
    evaluation = item.outcome.evaluation
    status = item.status
    if item.write_denied is not None:
        ET.SubElement(case, "failure", {"type": "write-denied", "message": item.write_denied.describe()})
    if status in ("write-failed", "proof-deferred"):  # a write labguard made that is not proven: no finding to list
        ET.SubElement(case, "failure", {"type": status, "message": item.outcome.detail or status})
    elif status in DRIFT_STATUSES or (item.write_failed and item.write_denied is None):
        for finding in evaluation.violations if evaluation is not None else ():
            observed = "(not set)" if finding.observed is None else str(finding.observed)
            message = f"{finding.path}: {observed} is outside the policy; allowed {finding.allowed}"
            failure = ET.SubElement(case, "failure", {"type": finding.rule, "message": message})
            failure.text = finding.message
        if evaluation is None or not evaluation.violations:
            ET.SubElement(case, "failure", {"type": status, "message": item.outcome.detail or status})
    elif status == "provisioning-failed":
        lines = "; ".join(text for text, _ in findings_lines(item))
        ET.SubElement(case, "failure", {"type": "provisioning.failed", "message": lines})
    elif status in ("exempt", "skipped"):
        reason = evaluation.reason if evaluation is not None and evaluation.reason else status
        message = f"{status}: {reason}"
        if status == "exempt" and evaluation is not None and evaluation.violations:
            message += f" (not enforced: {change_text(item)})"
        ET.SubElement(case, "skipped", {"message": message})
    elif status == "failed" and item.write_denied is None:
        ET.SubElement(case, "error", {"type": "unreadable", "message": item.outcome.detail or "could not be read"})
    ET.SubElement(case, "system-out").text = f"status: {status}" + (
        f"; fixed: {change_text(item)}" if status == "fixed" else ""
    )
    return case


def _lab_case(suite: ET.Element, outcome: Any, plan_name: str | None, result: RunResult) -> ET.Element:
    evaluation = outcome.lab
    lab = evaluation.lab if evaluation is not None else None
    sub, rg, _, name = _lab_parts(outcome)
    case = _case(suite, f"{sub}.{rg}.{plan_name or '(no plan in scope)'}", name)
    status = outcome.status
    denied = result.lab_write_denied.get(outcome.plan_id)
    if denied is not None:
        ET.SubElement(case, "failure", {"type": "write-denied", "message": denied.describe()})
    elif status in ("write-failed", "proof-deferred") or outcome.plan_id in result.lab_write_errors:
        ET.SubElement(case, "failure", {"type": status, "message": outcome.detail or status})
    elif status in DRIFT_STATUSES:
        every = evaluation.findings if evaluation is not None else ()
        findings = [f for f in every if f.is_drift or f.rule in REPORTED_ONLY]
        for finding in findings:
            observed = "(not set)" if finding.observed is None else str(finding.observed)
            verdict = "reported, never patched" if finding.rule in REPORTED_ONLY else f"allowed {finding.allowed}"
            message = f"{finding.path}: {observed} is outside the policy; {verdict}"
            failure = ET.SubElement(case, "failure", {"type": finding.rule, "message": message})
            failure.text = finding.message
        if not findings:
            ET.SubElement(case, "failure", {"type": status, "message": outcome.detail or status})
    elif status == "provisioning-failed":
        error = lab.error if lab is not None else None
        what = f"{error.code}: {error.message}" if error is not None else (outcome.detail or "provisioning Failed")
        ET.SubElement(case, "failure", {"type": "provisioning.failed", "message": what})
    elif status in ("exempt", "skipped"):
        reason = evaluation.reason if evaluation is not None and evaluation.reason else status
        ET.SubElement(case, "skipped", {"message": f"{status}: {reason}"})
    elif status == "failed":
        ET.SubElement(case, "error", {"type": "unreadable", "message": outcome.detail or "could not be read"})
    fixed = ""
    if status == "fixed" and evaluation is not None:
        fixed = "; fixed: " + ", ".join(f"{f.leaf} {f.observed} → {f.patch_value}" for f in evaluation.drift)
    ET.SubElement(case, "system-out").text = f"status: {status}{fixed}"
    return case


def _lab_parts(outcome: Any) -> tuple[str, str, str | None, str]:
    """(subscription, resource group, plan name, lab name) of a lab outcome, from its id when it has no lab."""
    evaluation = outcome.lab
    if evaluation is not None:
        lab = evaluation.lab
        plan = lab.lab_plan_id.name if lab.lab_plan_id else None
        return lab.id.subscription_id, lab.id.resource_group, plan, lab.name
    parts = str(outcome.plan_id).split("/")
    if len(parts) >= 9:
        return parts[2], parts[4], None, parts[-1]
    return "unknown", "unknown", None, str(outcome.plan_id)


def run_junit(result: RunResult) -> str:
    """The run as JUnit XML (one document, UTF-8, ending in a newline)."""
    suites = ET.Element("testsuites", {"name": "labguard"})
    suite = ET.SubElement(
        suites,
        "testsuite",
        {"name": f"labguard {result.command}", "time": f"{result.duration_s:.3f}"},
    )
    for item in result.sorted_results():
        _plan_case(suite, item, result)
        for lab in result.labs_of(item.plan_id):
            _lab_case(suite, lab, item.plan_id.name if item.plan_id else None, result)
    for lab in result.labs_of(None):
        _lab_case(suite, lab, None, result)
    for scope in result.empty_scopes:
        case = _case(suite, "scope", scope)
        ET.SubElement(case, "failure", {"type": "empty-scope", "message": f"no lab plans in {scope}"})
    for scope, error in result.list_failures:
        case = _case(suite, "scope", scope)
        ET.SubElement(case, "error", {"type": "list-failed", "message": error})
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
