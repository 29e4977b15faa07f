"""The snapshot, the page and the digest as pure functions: escaping, exemption dates, what is new."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.core.digest import build_digest, digest_items
from shared.core.drift import evaluate
from shared.core.plans import LabPlan
from shared.core.policy import parse_policy
from shared.core.report_html import render_html
from shared.core.snapshot import Change, NoticeState, PlanEntry, build_snapshot

SUB = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
POLICY = {"mode": "audit", "autoShutdown": {"shutdownOnDisconnect": "Enabled"}}
HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"


def body(
    name: str, *, on_disconnect: str = "Enabled", tags: dict[str, str] | None = None, **props: Any
) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg-labs/providers/Microsoft.LabServices/labPlans/{name}",
        "name": name,
        "tags": tags or {},
        "properties": {
            "provisioningState": "Succeeded",
            "defaultAutoShutdownProfile": {"shutdownOnDisconnect": on_disconnect},
            **props,
        },
    }


def snapshot(*bodies: dict[str, Any], changes: tuple[Change, ...] = (), now: datetime = NOW) -> dict[str, Any]:
    policy = parse_policy(POLICY, "test-policy.yaml")
    entries = []
    for raw in bodies:
        evaluation = evaluate(LabPlan.from_arm(raw), policy, now)
        status = "provisioning-failed" if evaluation.status == "failed" else evaluation.status
        notice = NoticeState(sent=("email",)) if status == "provisioning-failed" else None
        entries.append(PlanEntry(raw["id"], status, evaluation, notice=notice))
    return build_snapshot(
        entries, policy, source="test", subscriptions=[SUB], resource_groups=[], generated_at=now, changes=changes
    )


def test_hostile_text_from_arm_is_text_in_the_page() -> None:
    failed = body("physics", tags={"labguard:exempt": HOSTILE, "labguard:exempt-until": "2027-01-01"})
    failed["properties"].update(
        provisioningState="Failed",
        resourceOperationError={"code": HOSTILE, "message": HOSTILE, "timestamp": HOSTILE},
        supportInfo={"email": HOSTILE},
    )
    change = Change(NOW, failed["id"], (("properties.x", HOSTILE, HOSTILE),), trigger=HOSTILE)
    page = render_html(snapshot(failed, body("chem", tags={"labguard:exempt": HOSTILE}), changes=(change,)))
    tags = re.findall(r"<[a-zA-Z][^<>]*>", page)  # the real elements: hostile "<" is always &lt;
    assert not [t for t in tags if re.match(r"<(script|img|iframe|object|embed|link|a)\b", t)]
    assert not [t for t in tags if re.search(r"\s(src|href|on\w+)=", t)]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src 'none'" in page


def test_exemptions_carry_their_end_date_and_state() -> None:
    soon = (NOW.date() + timedelta(days=3)).isoformat()
    snap = snapshot(
        body("a", on_disconnect="Disabled", tags={"labguard:exempt": "exams", "labguard:exempt-until": soon}),
        body("b", tags={"labguard:exempt": "research", "labguard:exempt-until": "2026-11-01"}),
        body("c", tags={"labguard:exempt": "forever"}),
        body("d", tags={"labguard:exempt": "typo", "labguard:exempt-until": "next week"}),
    )
    states = {e["name"]: (e["state"], e["until"], e["daysLeft"]) for e in snap["exemptions"]}
    assert states == {
        "a": ("ending-soon", soon, 3),
        "b": ("ended", "2026-11-01", -31),
        "c": ("active", None, None),
        "d": ("invalid-date", None, None),
    }
    page = render_html(snap)
    assert f"until {soon} (3 days left)" in page and "ended 2026-11-01" in page and "next week" in page


def test_totals_and_bars_add_up_and_old_changes_are_left_out() -> None:
    old = Change(NOW - timedelta(days=8), body("a")["id"], (("f", "x", "y"),))
    new = Change(NOW - timedelta(days=6), body("a")["id"], (("f", "x", "y"),))
    snap = snapshot(body("a", on_disconnect="Disabled"), body("b"), body("c"), changes=(old, new))
    assert snap["totals"]["plans"] == 3 and snap["totals"]["drifted"] == 1 and snap["totals"]["compliant"] == 2
    assert snap["resourceGroups"] == [
        {"subscriptionId": SUB, "resourceGroup": "rg-labs", "plans": 3, "counts": {"compliant": 2, "drifted": 1}}
    ]
    assert len(snap["changes"]) == 1
    page = render_html(snap)
    assert 'data-total="drifted">1<' in page and 'data-group-total="3"' in page


def test_the_digest_lists_what_matters_and_marks_only_what_is_new() -> None:
    soon = (NOW.date() + timedelta(days=10)).isoformat()
    failed = body("f")
    failed["properties"].update(provisioningState="Failed", resourceOperationError={"code": "SubnetInUse"})
    snap = snapshot(
        body("a", on_disconnect="Disabled"),
        body("b", tags={"labguard:exempt": "exams", "labguard:exempt-until": soon}),
        body("c", tags={"labguard:exempt": "later", "labguard:exempt-until": "2027-06-01"}),
        failed,
        body("ok"),
    )
    kinds = sorted((i.kind, i.plan) for i in digest_items(snap))
    assert kinds == [("drift", "a"), ("exemption-ending", "b"), ("failure", "f")]
    first = build_digest(snap, date(2026, 12, 2), frozenset())
    assert first is not None and len(first.new) == 3
    assert build_digest(snap, date(2026, 12, 3), frozenset(first.keys)) is None
    more = snapshot(body("a", on_disconnect="Disabled"), body("z", on_disconnect="Disabled"))
    second = build_digest(more, date(2026, 12, 3), frozenset(first.keys))
    assert second is not None and [i.plan for i in second.items if i.key in second.new] == ["z"]
    assert "NEW rg-labs/z" in second.text() and "    rg-labs/a" in second.text()
    assert build_digest(snapshot(body("ok")), date(2026, 12, 3), frozenset()) is None


def test_lab_exemptions_are_listed_beside_plan_exemptions() -> None:
    """An exempt lab shows in the Exemptions table (marked a lab), not only on its row under its plan."""
    from shared.core.lab_drift import evaluate_lab
    from shared.core.labs import Lab
    from shared.core.snapshot import LabEntry

    soon = (NOW.date() + timedelta(days=2)).isoformat()
    lab_body = {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg-labs/providers/Microsoft.LabServices/labs/chem-101",
        "tags": {"labguard:exempt": "exam week", "labguard:exempt-until": soon},
        "properties": {"provisioningState": "Succeeded", "labPlanId": body("a")["id"]},
    }
    policy = parse_policy(POLICY, "test-policy.yaml")
    evaluation = evaluate_lab(Lab.from_arm(lab_body), policy, NOW)
    plan = body("a", tags={"labguard:exempt": "research"})
    snap = build_snapshot(
        [PlanEntry(plan["id"], "exempt", evaluate(LabPlan.from_arm(plan), policy, NOW))],
        policy,
        source="test",
        subscriptions=[SUB],
        resource_groups=[],
        generated_at=NOW,
        labs=[LabEntry(lab_body["id"], evaluation.status, evaluation)],
    )
    assert [(e["kind"], e["name"], e["state"]) for e in snap["exemptions"]] == [
        ("lab", "chem-101", "ending-soon"),
        ("plan", "a", "active"),
    ]
    page = render_html(snap)
    assert 'data-lab="chem-101" data-exemption-state="ending-soon"' in page
    assert f"until {soon} (2 days left)" in page and 'data-plan="a" data-exemption-state="active"' in page
