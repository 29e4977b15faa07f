"""Labs where admins look, as pure functions: the snapshot and the page (labs under their plan, the lab rules'
findings, reported-only ones with why, counts in the verdict), the digest and the change log's rows."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.core.drift import evaluate
from shared.core.lab_drift import evaluate_lab
from shared.core.labs import Lab
from shared.core.plans import LabPlan
from shared.core.policy import parse_policy
from shared.core.report_html import render_html
from shared.core.snapshot import LabEntry, PlanEntry, build_snapshot
from tests.labs.lab_fixtures import PLAN_ID, compliant_lab, lab_body

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "mode": "audit",
        "connection": {"webRdpAccess": "None", "clientRdpAccess": "Public", "clientSshAccess": "Private"},
        "autoShutdown": {"shutdownOnDisconnect": "Enabled", "maxDisconnectDelay": "PT15M"},
        "labs": {"templateVm": "Forbidden", "maxUsageQuota": "PT20H"},
    },
    "policy.yaml",
)
HOSTILE = '<img src=x onerror="window.__pwned=1">exam</td><script>1</script>'


def plan_entry() -> PlanEntry:
    plan = LabPlan.from_arm(
        {
            "id": PLAN_ID,
            "properties": {
                "provisioningState": "Succeeded",
                "defaultAutoShutdownProfile": {"shutdownOnDisconnect": "Enabled", "disconnectDelay": "PT10M"},
            },
        }
    )
    evaluation = evaluate(plan, POLICY, NOW)
    return PlanEntry(PLAN_ID, evaluation.status, evaluation)


def lab_entry(body: dict[str, Any], status: str | None = None, detail: str | None = None) -> LabEntry:
    evaluation = evaluate_lab(Lab.from_arm(body), POLICY, NOW)
    return LabEntry(body["id"], status or evaluation.status, evaluation, detail)


def estate_snapshot(**kwargs: Any) -> dict[str, Any]:
    drifted = lab_body("lab-drifted", createOption="Image", usageQuota="PT10H")  # profiles only
    template = lab_body("lab-template", connection=compliant_lab()["properties"]["connectionProfile"])
    template["properties"]["autoShutdownProfile"] = compliant_lab()["properties"]["autoShutdownProfile"]
    template["properties"]["virtualMachineProfile"]["usageQuota"] = "PT10H"  # only the template VM is wrong
    exempt = lab_body("lab-exempt", tags={"labguard:exempt": HOSTILE})
    loose = lab_body("lab-orphan", plan_id=None)
    labs = [lab_entry(b) for b in (drifted, template, exempt, loose)]
    return build_snapshot(
        [plan_entry()],
        POLICY,
        source="test",
        subscriptions=[PLAN_ID.split("/")[2]],
        resource_groups=[],
        generated_at=NOW,
        labs=labs,
        **kwargs,
    )


def test_the_snapshot_puts_labs_under_their_plan_and_counts_them() -> None:
    snap = estate_snapshot()
    (plan,) = snap["plans"]
    assert [lab["name"] for lab in plan["labs"]] == ["lab-drifted", "lab-exempt", "lab-template"]
    assert [lab["name"] for lab in snap["labsWithoutPlan"]] == ["lab-orphan"]
    assert snap["totals"]["plans"] == 1 and snap["totals"]["compliant"] == 1  # labs are not plans
    assert snap["labTotals"]["labs"] == 4
    assert snap["labTotals"]["drifted"] == 3 and snap["labTotals"]["exempt"] == 1
    template = next(lab for lab in plan["labs"] if lab["name"] == "lab-template")
    (reported,) = [f for f in template["findings"] if f["reportedOnly"]]
    assert reported["rule"] == "lab.templateVm" and "create-only" in reported["message"]
    assert template["exemption"] is None
    exempt = next(lab for lab in plan["labs"] if lab["name"] == "lab-exempt")
    assert exempt["exemption"]["state"] == "active"


def test_the_page_shows_labs_under_their_plan_with_why_reported_ones_are_never_patched() -> None:
    page = render_html(estate_snapshot())
    rows = re.findall(r'<tr (?:class="lab" )?data-(plan|lab)="([^"]+)"', page)
    plans_section = page[page.index('id="plans"') :]
    order = re.findall(r'<tr (?:class="lab" )?data-(plan|lab)="([^"]+)"', plans_section)
    assert order[0] == ("plan", "plan-labs")
    assert order[1:4] == [("lab", "lab-drifted"), ("lab", "lab-exempt"), ("lab", "lab-template")]
    assert ("lab", "lab-orphan") in rows and "Labs naming no plan in scope" in page
    template_row = re.search(r'<tr class="lab" data-lab="lab-template".*?</tr>', page, re.S)
    assert template_row is not None
    assert 'data-reported-only="1"' in template_row.group(0)
    assert "reported, never patched" in template_row.group(0) and "create-only" in template_row.group(0)
    drifted_row = re.search(r'<tr class="lab" data-lab="lab-drifted".*?</tr>', page, re.S)
    assert drifted_row is not None and "would be" in drifted_row.group(0)
    assert 'data-lab-total="labs">4<' in page and 'data-lab-total="drifted">3<' in page
    assert 'data-attention="0"' in page and 'data-lab-attention="3"' in page  # the verdict counts labs
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page  # a lab's tag is text


def test_a_page_without_labs_keeps_the_plan_verdict() -> None:
    snap = build_snapshot(
        [plan_entry()], POLICY, source="t", subscriptions=[], resource_groups=[], generated_at=NOW, labs=()
    )
    page = render_html(snap)
    assert "data-lab-total" not in page and "Every plan in scope is compliant" in page


def test_the_digest_counts_and_lists_labs_like_plans_in_text_and_html() -> None:
    from shared.core.digest import build_digest

    snap = estate_snapshot()
    digest = build_digest(snap, NOW.date(), previous=())
    assert digest is not None
    text = digest.text()
    assert "Labs: 3 drifted" in text  # lab-drifted, lab-template (reported only) and the orphan
    assert "rg-labs/plan-labs > lab lab-drifted: webRdpAccess Public -> None" in text
    assert "rg-labs/plan-labs > lab lab-template: createOption TemplateVM: reported, never patched" in text
    assert "rg-labs/(no plan in scope) > lab lab-orphan:" in text
    assert "lab-exempt" not in text  # exempt: not drift to hear about
    html = digest.html()
    assert "<p data-counts>Labs: 3 drifted</p>" in html and "&gt; lab lab-drifted" in html
    assert "on labs)" in digest.subject
    again = build_digest(snap, NOW.date(), previous=digest.keys)
    assert again is None  # the same lab drift is not new the next day


def test_a_fixed_and_a_failed_lab_are_counted_as_fixed_and_failed() -> None:
    from shared.core.digest import build_digest

    fixed = lab_entry(lab_body("lab-a", createOption="Image", usageQuota="PT10H"), status="fixed")
    failed_body = lab_body("lab-b", state="Failed")
    failed_body["properties"]["resourceOperationError"] = {"code": "QuotaExceeded", "message": "no cores left"}
    failed = lab_entry(failed_body, status="provisioning-failed")
    snap = build_snapshot(
        [plan_entry()], POLICY, source="t", subscriptions=[], resource_groups=[], generated_at=NOW, labs=[fixed, failed]
    )
    assert [lab["name"] for lab in snap["failedLabs"]] == ["lab-b"]
    digest = build_digest(snap, NOW.date(), previous=())
    assert digest is not None
    assert "Labs: 1 fixed, 1 failed to provision" in digest.text()
    assert "> lab lab-b: QuotaExceeded: no cores left" in digest.text()
    page = render_html(snap)
    assert '<tr data-lab="lab-b">' in page and "those of its plan plan-labs" in page


def test_a_lab_write_is_a_change_log_row_shown_under_its_plan_with_its_outcome() -> None:
    from shared.runtime.changes import change_of
    from shared.runtime.reconcile import PlanOutcome

    entry = lab_entry(lab_body("lab-a", createOption="Image", usageQuota="PT10H"))
    assert entry.evaluation is not None
    unconverged = PlanOutcome(
        entry.lab_id.lower(), "unconverged", detail="written, but webRdpAccess read back", lab=entry.evaluation
    )
    assert change_of(unconverged, trigger="sweep", correlation_id=None) is None  # not written in this run: no row
    change = change_of(replace(unconverged, written=True), trigger="sweep", correlation_id="c1", at=NOW)
    assert change is not None
    assert (change.kind, change.plan_id, change.lab_plan_id) == ("lab", entry.lab_id, PLAN_ID)
    assert change.status == "unconverged" and change.detail and "read back" in change.detail
    assert ("properties.connectionProfile.webRdpAccess", "Public", "None") in change.changes
    page = render_html(estate_snapshot(changes=[change]))
    row = re.search(r'<tr data-change="lab-a".*?</tr>', page, re.S)
    assert row is not None
    assert 'data-change-kind="lab"' in row.group(0) and 'data-change-status="unconverged"' in row.group(0)
    assert "of plan plan-labs" in row.group(0) and "read back" in row.group(0)
