"""The compliance report and ``python -m shared.report`` over the bundled samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unit_support import NOW, REPO, SUB, body, policy

from shared.drift import evaluate
from shared.lab_plans import LabPlan
from shared.report import main, render_report

SAMPLES = REPO / "samples" / "lab_plans.json"
ARGS = ["--policy", str(REPO / "policy.yaml"), "--now", "2025-06-15T12:00:00+00:00"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABGUARD_MODE", "LABGUARD_POLICY_FILE", "LABGUARD_SUBSCRIPTIONS", "LABGUARD_ARM_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def run_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, dict[str, object]]:
    assert main([*ARGS, "--format", "json", *extra, str(SAMPLES)]) == 0
    out = json.loads(capsys.readouterr().out)
    return {plan["id"].rsplit("/", 1)[-1]: plan for plan in out["plans"]}


# Every sample plan is there for one behaviour; its status says which.
EXPECTED = {
    "testlabplan": "drifted",  # official getLabPlan: hh:mm delays over the bound
    "testlabplan-list": "drifted",  # official listLabPlans: ISO delays within the bound, clientSsh Public
    "testlabplan-rg": "drifted",
    "testlabplan-updating": "skipped",  # official patchLabPlan 202
    "testlabplan-creating": "skipped",  # official putLabPlan 201
    "chem-101": "compliant",
    "cs-201": "drifted",
    "bio-110": "compliant",  # stricter everywhere: untouched
    "research-gpu": "exempt",
    "summer-school": "drifted",  # expired exemption
    "physics-lab": "compliant",  # unreadable exemption date, otherwise compliant
    "math-301": "failed",
    "history-lab": "skipped",  # Locked
    "new-languages": "drifted",  # no auto-shutdown profile
}


@pytest.mark.parametrize(("name", "status"), EXPECTED.items())
def test_each_sample_plan_shows_its_behaviour(capsys: pytest.CaptureFixture[str], name: str, status: str) -> None:
    assert run_json(capsys)[name]["status"] == status


def test_samples_cover_exactly_the_documented_plans(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(run_json(capsys)) == set(EXPECTED)


def test_stricter_sample_gets_no_patch(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys)["bio-110"]["patch"] == {}


def test_demo_prints_a_readable_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, str(SAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "mode: audit (report only" in out
    assert "14 plans: 1 failed, 6 drifted, 1 exempt, 3 skipped, 3 compliant" in out
    assert "SubnetNotDelegated" in out and "PATCH enforce mode would send" in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("  /subscriptions/")) <= 140


def test_mode_setting_reaches_the_report(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABGUARD_MODE", "enforce")
    assert main([*ARGS, str(SAMPLES)]) == 0
    assert "mode: enforce" in capsys.readouterr().out


def test_bad_policy_stops_the_report_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("autoShutdown: {maxIdleDelay: 15 minutes}\n", encoding="utf-8")
    assert main(["--policy", str(bad), str(SAMPLES)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.strip()
        == f"labguard: {bad}: autoShutdown.maxIdleDelay: '15 minutes' is not an ISO-8601 duration; write e.g. PT15M"
    )


def test_unreadable_entries_are_named_and_the_rest_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"value": [body(), {"id": "/not/a/plan"}, 7]}), encoding="utf-8")
    assert main([*ARGS, str(plans)]) == 1
    captured = capsys.readouterr()
    assert "1 plan: 1 drifted" in captured.out
    assert "entry 1: not evaluated" in captured.err and "entry 2: not evaluated" in captured.err


def test_missing_plans_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([*ARGS, str(tmp_path / "none.json")]) == 2
    assert "cannot read lab plans" in capsys.readouterr().err


def test_render_report_orders_worst_first_and_withholds_patches_it_should() -> None:
    pol = policy()
    evs = [
        evaluate(LabPlan.from_arm(body(name="ok", connection={"webSshAccess": "None"}, state="Locked")), pol, NOW),
        evaluate(LabPlan.from_arm(body(name="bad", connection={"webSshAccess": "Public"})), pol, NOW),
    ]
    text = render_report(evs, "audit")
    assert text.index("rg1/bad") < text.index("rg1/ok")
    assert f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.LabServices/labPlans/bad" in text


def test_render_report_of_nothing() -> None:
    assert "0 plans: none" in render_report([], "audit")


def test_hostile_plan_text_stays_on_one_line() -> None:
    data = body(shutdown={"idleDelay": "PT1H\n\x1b[2Jrm -rf /"})
    text = render_report([evaluate(LabPlan.from_arm(data), policy(), NOW)], "audit")
    assert "\x1b" not in text and "\nrm -rf" not in text
