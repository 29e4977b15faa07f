"""``labguard audit --from-file`` over the bundled samples: saved plan JSON evaluated with no Azure call and
shown by the command's one renderer (run in-process here; the command itself is tested in tests/cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from unit_support import REPO, body

from labguard import cli, runner

SAMPLES = REPO / "samples" / "lab_plans.json"
POLICY = runner.Flags(policy=str(REPO / "policy.yaml"))
NOW = "2025-06-15T12:00:00+00:00"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABGUARD_MODE", "LABGUARD_POLICY_FILE", "LABGUARD_SUBSCRIPTIONS", "LABGUARD_ARM_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def audit(capsys: pytest.CaptureFixture[str], *paths: Path, as_json: bool = False) -> tuple[int, str]:
    code = cli.audit_files([str(p) for p in paths], POLICY, now=NOW, as_json=as_json)
    return code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict[str, dict[str, Any]]:
    code, out = audit(capsys, *(paths or (SAMPLES,)), as_json=True)
    assert code == 1  # the samples hold drift and a failed plan
    return {str(plan["name"] or plan["id"]): plan for plan in json.loads(out)["plans"]}


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
    "math-301": "provisioning-failed",
    "history-lab": "skipped",  # Locked
    "new-languages": "drifted",  # no auto-shutdown profile
}


@pytest.mark.parametrize(("name", "status"), EXPECTED.items())
def test_each_sample_plan_shows_its_behaviour(capsys: pytest.CaptureFixture[str], name: str, status: str) -> None:
    assert run_json(capsys)[name]["status"] == status


def test_samples_cover_exactly_the_documented_plans(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(run_json(capsys)) == set(EXPECTED)


def test_stricter_sample_gets_no_patch_and_a_drifted_one_the_patch_enforce_would_send(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans = run_json(capsys)
    assert plans["bio-110"]["patch"] == {}
    assert plans["testlabplan-list"]["patch"]["properties"]["defaultConnectionProfile"]["clientSshAccess"] == "Private"


def test_the_text_report_is_the_commands_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = audit(capsys, SAMPLES)
    assert code == 1
    assert out.startswith("labguard audit --from-file: saved plan JSON, no Azure call; nothing is changed")
    assert "14 plans: 3 compliant, 6 drifted, 1 exempt, 3 skipped, 1 failed" in out
    assert "SubnetNotDelegated" in out and "clientSshAccess Public → Private" in out
    assert max(len(line) for line in out.splitlines()) <= 140


def test_bad_policy_stops_the_report_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("autoShutdown: {maxIdleDelay: 15 minutes}\n", encoding="utf-8")
    with pytest.raises(runner.ConfigError) as raised:
        cli.audit_files([str(SAMPLES)], runner.Flags(policy=str(bad)), now=NOW, as_json=False)
    assert str(raised.value) == (
        f"{bad}: autoShutdown.maxIdleDelay: '15 minutes' is not an ISO-8601 duration; write e.g. PT15M"
        " (or pass --policy FILE)"
    )


def test_unreadable_entries_are_named_and_the_rest_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"value": [body(), {"id": "/not/a/plan"}, 7]}), encoding="utf-8")
    found = run_json(capsys, plans)
    assert [p["status"] for p in found.values()] == ["drifted", "failed", "failed"]
    details = [p["detail"] for p in found.values()][1:]
    assert details[0].startswith("not evaluated: not a lab plan resource id: '/not/a/plan'")
    assert details[1] == "not evaluated: expected a JSON object, got int"
    assert list(found)[1:] == [f"{plans} entry 1", f"{plans} entry 2"]


@pytest.mark.parametrize("content", [None, "{not json", '"a string"'])
def test_a_file_that_is_not_plan_json_is_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "plans.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(runner.ConfigError, match=rf"^{path}: cannot read lab plans: [^\n]+$"):
        cli.audit_files([str(path)], POLICY, now=NOW, as_json=False)


def test_nothing_to_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "plans.json"
    empty.write_text("[]", encoding="utf-8")
    code, out = audit(capsys, empty)
    assert code == 0 and "0 plans: none found" in out


def test_hostile_plan_text_stays_on_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps([body(shutdown={"idleDelay": "PT1H\n\x1b[2Jrm -rf /"})]), encoding="utf-8")
    _, out = audit(capsys, path)
    assert "\x1b" not in out and "\nrm -rf" not in out
