"""Every outcome the reconcile core can report is counted on the compliance page and the snapshot."""

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import get_args

import pytest
from unit_support import REPO

from labguard.junit import run_junit
from labguard.render import run_json
from labguard.runner import PlanResult, RunResult
from shared.core.policy import load_policy
from shared.core.report_html import _STATES, render_html
from shared.core.snapshot import STATUSES, PlanEntry, build_snapshot
from shared.runtime.reconcile import PlanOutcome, Status
from shared.runtime.settings import Settings


def test_the_snapshot_counts_every_outcome_status():
    assert set(STATUSES) == set(get_args(Status))


def test_the_page_has_a_label_and_colour_for_every_outcome_status():
    assert set(_STATES) == set(get_args(Status))


PLAN_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/p1"
)
WRITE_STATUSES = ("unconverged", "write-failed", "proof-deferred")
DETAIL = "written, but clientRdpAccess read back 'Public'"


@pytest.mark.parametrize("status", WRITE_STATUSES)
def test_a_write_that_is_not_proven_needs_attention_on_the_page_and_shows_why(status: str) -> None:
    snap = build_snapshot(
        [PlanEntry(PLAN_ID, status, None, DETAIL)],
        load_policy(REPO / "policy.yaml"),
        source="test",
        subscriptions=[],
        resource_groups=[],
        generated_at=datetime(2026, 12, 2, tzinfo=UTC),
    )
    page = render_html(snap)
    verdict = re.search(r'<p class="verdict[^"]*">(.*?)</p>', page)
    assert verdict is not None
    assert "compliant" not in verdict.group(1)
    assert 'data-attention="1"' in verdict.group(1)
    row = re.search(r'<tr data-plan="p1".*?</tr>', page)
    assert row is not None and "read back" in row.group(0)


@pytest.mark.parametrize("status", WRITE_STATUSES)
def test_the_json_run_report_keeps_the_detail_of_a_write_that_is_not_proven(status: str) -> None:
    settings = Settings.from_env({"LABGUARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-000000000001"})
    result = RunResult("enforce", False, settings, load_policy(REPO / "policy.yaml"))
    result.results.append(PlanResult(PlanOutcome(PLAN_ID, status, None, DETAIL)))
    (plan,) = run_json(result)["plans"]
    assert plan["status"] == status and plan["detail"] == DETAIL


@pytest.mark.parametrize("status", STATUSES)
def test_junit_fails_a_plan_exactly_when_its_status_fails_the_run(status: str) -> None:
    settings = Settings.from_env({"LABGUARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-000000000001"})
    result = RunResult("enforce", False, settings, load_policy(REPO / "policy.yaml"))
    result.results.append(PlanResult(PlanOutcome(PLAN_ID, status, None, DETAIL)))  # type: ignore[arg-type]
    case = ET.fromstring(run_junit(result)).find("testsuite/testcase")
    assert case is not None
    failed_in_ci = case.find("failure") is not None or case.find("error") is not None
    assert failed_in_ci == (result.exit_code == 1), f"{status}: exit {result.exit_code}, junit failed {failed_in_ci}"
