"""``labguard audit --format junit``: a JUnit XML report, so Azure DevOps and GitHub Actions show drift natively.

One test suite per run, one test case per plan (classname ``<subscription>.<resource group>``, name the
plan): a failure per finding (each drifted setting, a Failed provisioning, a write refused), ``skipped``
for exempt and busy plans, an error for a plan that could not be read. A scope with no lab plans is a
test case of its own that fails, as are scopes that could not be listed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from labguard.render import change_text, findings_lines
from labguard.runner import PlanResult, RunResult
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
