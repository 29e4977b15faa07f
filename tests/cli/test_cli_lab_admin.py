"""Labs in what the admin's command says (issue 16, item 7): JUnit cases under their plan, the exit code and
``--fail-on`` counting lab statuses as plan statuses, the interactive enforce sending only the lab patches it
showed, a refused lab write named with its action, and Ctrl-C reporting lab writes (changed, in flight, not
reached). Every test runs the ``labguard`` command (or its core) against the local Lab Services endpoint."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools import estate

from .conftest import ADMIN_CLIENT, arm_writes

Run = Callable[..., subprocess.CompletedProcess[str]]
PLAN = estate.spec_named(estate.LAB_PLAN)
LAB_PREFIX = f"/subscriptions/{PLAN.sub}/resourceGroups/{PLAN.rg}/providers/Microsoft.LabServices/labs/"


def lab_writes(emu: Any) -> set[str]:
    return {r["path"].split("?")[0].rsplit("/", 1)[-1] for r in arm_writes(emu) if "/labs/" in r["path"].lower()}


def put_lab(emu: Any, name: str, kind: str = "drifted", **tags: str) -> dict[str, Any]:
    body = estate.lab_body(name, "Windows", kind)
    body["tags"].update(tags)
    emu.put_lab(body)
    return body


def test_junit_has_a_case_per_lab_under_its_plan_failing_as_plans_fail(run: Run) -> None:
    proc = run("audit", "--format", "junit", "-s", PLAN.sub)
    assert proc.returncode == 1
    suite = ET.fromstring(proc.stdout).find("testsuite")
    assert suite is not None
    under_plan = f"{PLAN.sub}.{PLAN.rg}.{PLAN.name}"
    labs = {case.get("name"): case for case in suite.iter("testcase") if case.get("classname") == under_plan}
    assert set(labs) == {name for name, _, _ in estate.LAB_SPECS}
    report = json.loads(run("audit", "--json", "-s", PLAN.sub).stdout)
    (plan,) = [p for p in report["plans"] if p["name"] == PLAN.name]
    for lab in plan["labs"]:
        case = labs[lab["id"].rsplit("/", 1)[-1]]
        types = [f.get("type") for f in case.findall("failure")]
        if lab["status"] == "drifted":
            reported = ("lab.templateVm", "lab.not-patchable")  # reported only: fail too, saying why
            expected = [f["rule"] for f in lab["findings"] if f["patchValue"] is not None or f["rule"] in reported]
            assert sorted(types) == sorted(expected) and types
        else:
            assert types == []
        assert (case.find("skipped") is not None) == (lab["status"] == "exempt")
    template = labs["db-lab-template"].find("failure")
    assert template is not None and "reported, never patched" in str(template.get("message"))
    assert "create-only" in str(template.text)
    cases = suite.findall("testcase")
    assert suite.get("failures") == str(sum(1 for c in cases if c.find("failure") is not None))


def test_the_exit_code_and_fail_on_count_lab_statuses_as_plan_statuses(run: Run, emu: Any) -> None:
    # One compliant plan; then labs under it, one finding at a time.
    ext = next(s for s in estate.SPECS if s.sub == estate.EXTENSION and s.kind == "compliant")
    prefix = f"/subscriptions/{ext.sub}/resourceGroups/{ext.rg}/providers/Microsoft.LabServices/labs/"
    soon = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()

    def lab(name: str, kind: str, **tags: str) -> dict[str, Any]:
        body = copy.deepcopy(estate.lab_body(name, "Windows", kind))
        body["id"] = prefix + name
        body["properties"]["labPlanId"] = estate.plan_id(ext)
        body["tags"] = dict(tags)
        return body

    scope = ("-s", ext.sub, "-g", ext.rg)
    emu.seed({"labPlans": [estate.plan_body(ext, datetime.now(UTC).date())], "labs": []}, reset=True)
    assert run("audit", *scope).returncode == 0  # one compliant plan, no lab yet

    emu.put_lab(lab("lab-ending", "stricter", **{"labguard:exempt": "exams", "labguard:exempt-until": soon}))
    proc = run("audit", *scope)
    assert proc.returncode == 0 and "1 lab exemption ending within 14 days" in proc.stdout
    proc = run("audit", *scope, "--fail-on", "exempt-expiring")
    assert proc.returncode == 1 and "exit 1: 1 lab exemption ending within 14 days" in proc.stdout

    failed = lab("lab-failed", "stricter")
    failed["properties"]["provisioningState"] = "Failed"
    failed["properties"]["resourceOperationError"] = {"code": "QuotaExceeded", "message": "no cores"}
    emu.put_lab(failed)
    assert run("audit", *scope, "--fail-on", "drift").returncode == 0
    proc = run("audit", *scope, "--fail-on", "failed-provisioning")
    assert proc.returncode == 1 and "1 lab failed to provision" in proc.stdout

    emu.put_lab(lab("lab-drifted", "drifted"))
    assert run("audit", *scope, "--fail-on", "exempt-expiring").returncode == 1  # still: the expiring lab
    proc = run("audit", *scope, "--fail-on", "drift")
    assert proc.returncode == 1 and "1 lab drifted" in proc.stdout
    report = json.loads(run("audit", "--json", *scope, "--fail-on", "none").stdout)
    assert report["exitCode"] == 0 and report["labSummary"] == {"drifted": 1, "exempt": 1, "provisioning-failed": 1}


async def test_enforce_after_a_preview_sends_only_the_lab_patches_shown(
    emu: Any, settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from labguard import runner

    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    run_settings = runner.resolve_settings(settings, runner.Flags(subscriptions=[PLAN.sub]), mode="enforce")
    policy = runner.read_policy(run_settings.policy_file, "enforce")
    preview = await runner.run(run_settings, policy, command="enforce", dry_run=True, read_ledger=False)
    approved = {r.outcome.plan_id: r.outcome.evaluation.patch for r in preview.results if r.status == "drifted"}
    lab_patches = {lab.plan_id: lab.lab.patch for lab in preview.labs if lab.status == "drifted" and lab.lab.patch}
    assert {key.rsplit("/", 1)[-1] for key in lab_patches} == {"db-lab-drifted", "db-lab-over-quota"}
    approved.update(lab_patches)
    changed = (LAB_PREFIX + "db-lab-over-quota").lower()  # its approved patch: the VM profile only
    body = emu.get_lab(changed)
    body["properties"]["connectionProfile"]["webRdpAccess"] = "Public"  # the lab's creator, after the preview
    emu.put_lab(body)
    emu.clear_requests()
    result = await runner.run(run_settings, policy, command="enforce", approved_patches=approved, read_ledger=False)
    by_key = {lab.plan_id: lab for lab in result.labs}
    assert by_key[changed].status == "drifted"
    assert by_key[changed].detail == "changed since the preview; not written"
    assert lab_writes(emu) == {"db-lab-drifted"}  # the approved lab patch went out, the changed one did not
    assert result.exit_code == 1


def test_interactive_enforce_shows_lab_patches_before_asking(
    labguard_command: Path, settings: dict[str, str], emu: Any
) -> None:
    import os
    import pty

    from .test_admin import read_pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(labguard_command), "enforce", "-s", PLAN.sub, "-g", PLAN.rg],
            env={**settings, "TERM": "dumb"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        os.write(master, b"y\n")
        proc.wait(timeout=90)
        seen = " ".join(read_pty(master).split())
    finally:
        os.close(master)
    preview, _, after = seen.partition("Send these patches now?")
    assert "would fix lab db-lab-drifted" in preview and "would fix lab db-lab-over-quota" in preview
    assert "fixed lab db-lab-drifted" in after and "fixed lab db-lab-over-quota" in after
    assert lab_writes(emu) == {"db-lab-drifted", "db-lab-over-quota"}


def test_a_refused_lab_write_names_the_labs_write_action(run: Run, emu: Any) -> None:
    emu.deny_writes(ADMIN_CLIENT, LAB_PREFIX)
    report = json.loads(run("enforce", "--json", "-s", PLAN.sub, "-g", PLAN.rg).stdout)
    (plan,) = [p for p in report["plans"] if p["name"] == PLAN.name]
    denied = {lab["id"].rsplit("/", 1)[-1]: lab.get("writeDenied") for lab in plan["labs"]}
    assert denied["db-lab-drifted"]["action"] == "Microsoft.LabServices/labs/write"
    assert denied["db-lab-drifted"]["scope"].endswith(f"/resourceGroups/{PLAN.rg}")
    assert report["exitCode"] == 1  # not converged: drift, not "could not be read"
    table = run("enforce", "-s", PLAN.sub, "-g", PLAN.rg)
    text = " ".join(table.stdout.split())
    assert "lacks Microsoft.LabServices/labs/write" in text and "still drifted; not written: usageQuota PT40H" in text
    assert "2 labs checked but not written (missing permission)" in text


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_ctrl_c_reports_lab_writes_changed_in_flight_and_not_reached(
    labguard_command: Path, settings: dict[str, str], emu: Any, tmp_path: Path, as_json: bool
) -> None:
    # One compliant plan and twelve drifted labs under it: every write of this run is a lab's, and slow.
    today = datetime.now(UTC).date()
    compliant = next(s for s in estate.SPECS if s.sub == PLAN.sub and s.rg == PLAN.rg and s.kind == "compliant")
    labs = []
    for index in range(12):
        body = copy.deepcopy(estate.lab_body(f"lab-{index}", "Windows", "drifted"))
        body["properties"]["labPlanId"] = estate.plan_id(compliant)
        labs.append(body | {"id": LAB_PREFIX + f"lab-{index}", "name": f"lab-{index}"})
    emu.seed({"labPlans": [estate.plan_body(compliant, today)], "labs": labs}, reset=True)
    emu.clear_requests()
    emu.add_fault("PATCH", ".*/labs/.*", latency_ms=1200, count=None)
    proc = subprocess.Popen(
        [str(labguard_command), "enforce", "--yes", "-s", PLAN.sub, "-g", PLAN.rg, *(["--json"] if as_json else [])],
        env={**settings, "LABGUARD_CONCURRENCY": "2"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.monotonic()
        while time.monotonic() - started < 60 and not [r for r in emu.requests() if r["method"] == "PATCH"]:
            time.sleep(0.05)
        time.sleep(1.5)  # at least one lab write done, the next ones in flight
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    patched = lab_writes(emu)
    assert patched and len(patched) < len(labs), out
    assert all(r["status"] is not None for r in emu.requests() if r["method"] == "PATCH")  # none left half-done
    if as_json:
        info = json.loads(out)["interrupted"]
        changed = {p.rsplit("/", 1)[-1] for p in info["changed"]}
        applied = {w["id"].rsplit("/", 1)[-1] for w in info["inFlight"] if w["result"] == "applied"}
        assert changed | applied == patched  # what labguard says it changed is exactly what the endpoint got
        assert info["inFlight"] and all("/labs/" in w["id"] for w in info["inFlight"])
        not_reached = {p.rsplit("/", 1)[-1] for p in info["notReached"]}
        assert not_reached and not_reached | patched == {f"lab-{i}" for i in range(12)}
        assert not (not_reached & patched)
    else:
        assert "in flight when interrupted:" in out and ": applied" in out
        assert "  lab lab-" in out and " labs, nothing written to them" in out.split("not reached:")[1]
        for name in patched:
            assert f"lab {name}" in out
