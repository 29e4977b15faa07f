"""What the admin sees (issue 17): an interrupted enforce, empty scopes, overrides that match nothing, a
refused write, exit codes that mean one thing each, the mode and where it came from, JUnit for CI.

Every test runs the ``labguard`` command as a subprocess against the local Lab Services endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools import estate

from .conftest import arm_writes, one_line_error

Run = Callable[..., subprocess.CompletedProcess[str]]

DRIFTED = {spec.name for spec in estate.SPECS if spec.kind in ("drifted", "expired-exempt")}


def plan_path(name: str) -> str:
    return estate.plan_id(estate.spec_named(name))


def written(emu: Any) -> set[str]:
    return {r["path"].rsplit("/", 1)[-1] for r in arm_writes(emu) if r["status"] in (200, 201, 202)}


# ------------------------------------------------------------------------------------ 1 interrupted enforce


def start(command: Path, settings: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(command), *args],
        env={**settings, "LABGUARD_CONCURRENCY": "2"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_ctrl_c_during_enforce_finishes_the_writes_in_flight_and_says_what_was_done(
    labguard_command: Path, settings: dict[str, str], emu: Any, tmp_path: Path, as_json: bool
) -> None:
    emu.add_fault("PATCH", "/subscriptions/*", latency_ms=1200, count=None)  # slow writes: some are in flight
    proc = start(labguard_command, settings, tmp_path, "enforce", *(["--json"] if as_json else []))
    try:
        # Wait until the first writes have gone out, then press Ctrl-C.
        started = time.monotonic()
        while time.monotonic() - started < 60 and not [r for r in emu.requests() if r["method"] == "PATCH"]:
            time.sleep(0.05)
        time.sleep(1.5)  # at least one write done, the next ones in flight
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    patched = written(emu)
    assert patched and patched < DRIFTED  # some writes went out, not all
    # Every write that was sent finished: nothing left half-done at the endpoint.
    assert all(r["status"] is not None for r in emu.requests() if r["method"] == "PATCH")
    if as_json:
        report = json.loads(out)
        info = report["interrupted"]
        changed = {p.rsplit("/", 1)[-1] for p in info["changed"]}
        applied = {w["id"].rsplit("/", 1)[-1] for w in info["inFlight"] if w["result"] == "applied"}
        assert changed | applied == patched  # what labguard says it changed is exactly what the endpoint got
        assert info["inFlight"] and info["waitedForInFlight"] is True
        not_reached = {p.rsplit("/", 1)[-1] for p in info["notReached"]}
        assert not_reached and not (not_reached & patched)
        assert report["exitCode"] == 130
    else:
        assert "labguard: interrupted (Ctrl-C): no new change was started" in out
        assert "in flight when interrupted:" in out and ": applied" in out
        assert "not reached:" in out
        for name in patched:
            assert name in out
        assert "exit 130: interrupted" in out


# ------------------------------------------------------------------------------------ 2 empty scopes


def test_a_scope_with_no_lab_plans_is_named_and_is_not_green(run: Run) -> None:
    proc = run("audit", "-s", estate.TEACHING, "-g", "rg-nope")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no lab plans in resource group rg-nope in subscription {estate.TEACHING}: check the name" in proc.stdout
    assert "--allow-empty" in proc.stdout
    assert "exit 1: 1 scope with no lab plans" in proc.stdout
    proc = run("audit", "-s", estate.TEACHING, "-g", "rg-nope", "--allow-empty", "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["emptyScopes"] == [f"/subscriptions/{estate.TEACHING}/resourceGroups/rg-nope"]


def test_a_resource_group_arm_does_not_know_is_an_empty_scope_too(run: Run, emu: Any) -> None:
    emu.add_fault("GET", f"/subscriptions/{estate.TEACHING}/resourceGroups/rg-nope/*", status=404, count=None)
    proc = run("audit", "-s", estate.TEACHING, "-g", "rg-nope,rg-engineering", "--fail-on", "empty-scope")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no lab plans in resource group rg-nope" in proc.stdout


# ------------------------------------------------------------------------------------ 3 overrides matching nothing


TYPO_POLICY = (
    estate.DEMO_POLICY
    + f"""\
    "{estate.TEACHING}/rg-enginering":   # misspelt
      autoShutdown:
        maxIdleDelay: PT1H
"""
)


def test_check_policy_warns_about_overrides_outside_the_scope(run: Run, tmp_path: Path) -> None:
    policy = tmp_path / "typo.yaml"
    policy.write_text(TYPO_POLICY)
    proc = run("check-policy", str(policy), "-s", estate.TEACHING, "-g", "rg-engineering,rg-linux-course")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: override for subscription {estate.RESEARCH}: outside the scope (subscriptions in scope: "
        f"{estate.TEACHING}); it applies to nothing",
        f"warning: override for resource group {estate.TEACHING}/rg-enginering: rg-enginering is not among the "
        "resource groups in scope (rg-engineering, rg-linux-course); it applies to nothing",
    ]
    proc = run("check-policy", "--json", str(policy))  # the whole estate in scope: nothing to say offline
    assert json.loads(proc.stdout)["unusedOverrides"] == []


def test_audit_lists_overrides_that_matched_no_plan_under_the_table(run: Run, tmp_path: Path) -> None:
    policy = tmp_path / "typo.yaml"
    policy.write_text(TYPO_POLICY)
    proc = run("audit", "--policy", str(policy))
    lines = proc.stdout.splitlines()
    table_end = max(i for i, line in enumerate(lines) if "rg-" in line and "…/" in line)
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: "))
    assert warning > table_end
    assert lines[warning] == (
        f"warning: override for resource group {estate.TEACHING}/rg-enginering: matched no lab plan in this run; "
        f"check the name (`az group list --subscription {estate.TEACHING} -o table`)"
    )
    assert sum(line.startswith("warning: ") for line in lines) == 1


# ------------------------------------------------------------------------------------ 4 missing permission


def test_a_refused_write_names_the_identity_the_action_and_the_role(run: Run, emu: Any) -> None:
    emu.deny_writes("school-it-admin", f"/subscriptions/{estate.TEACHING}/resourceGroups/rg-engineering")
    oid = emu.principal_id("school-it-admin")
    proc = run("enforce", "-s", estate.TEACHING, "-g", "rg-engineering,rg-linux-course")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())  # the table wraps long findings
    assert (
        f"checked; not written: labguard's identity (object id {oid}) lacks Microsoft.LabServices/labPlans/write on "
        f"/subscriptions/{estate.TEACHING}/resourceGroups/rg-engineering: assign it the role 'labguard Lab Plan "
        "Operator' (infra/roles/lab-plan-operator.json) on that scope"
    ) in out
    assert "could not be checked" not in out and "HTTP 403" not in out
    assert "3 plans checked but not written (missing permission)" in out
    assert written(emu) == {"linux201-sysadmin"}  # the other scope converged
    report = json.loads(run("enforce", "--json", "-s", estate.TEACHING, "-g", "rg-engineering").stdout)
    denied = {p["name"]: p["writeDenied"] for p in report["plans"] if "writeDenied" in p}
    assert set(denied) == {"eng150-cad", "eng220-matlab", "eng300-simulation"}
    assert {d["principalId"] for d in denied.values()} == {oid}
    assert {d["action"] for d in denied.values()} == {"Microsoft.LabServices/labPlans/write"}


# ------------------------------------------------------------------------------------ 5 exit codes


def test_fail_on_chooses_which_findings_fail_the_run(run: Run) -> None:
    sub = ("-s", estate.TEACHING, "-g", "rg-engineering")  # drift and one Failed plan
    assert run("audit", *sub, "--fail-on", "failed-provisioning").returncode == 1
    proc = run("audit", *sub, "--fail-on", "none")
    assert proc.returncode == 0
    assert "exit 0: every plan in scope is compliant (or exempt / skipped) (not failing the run, --fail-on:" in (
        proc.stdout
    )
    run("enforce", *sub)  # fix the drift; the Failed plan stays
    assert run("audit", *sub, "--fail-on", "drift").returncode == 0
    line = one_line_error(run("audit", *sub, "--fail-on", "drfit"))
    assert "--fail-on 'drfit' is not a finding; write any of drift, failed-provisioning" in line


def test_an_exemption_ending_soon_fails_only_when_asked(run: Run, emu: Any) -> None:
    from datetime import UTC, datetime, timedelta

    sub = ("-s", estate.RESEARCH, "-g", "rg-gpu-lab")
    assert run("audit", *sub, "--fail-on", "exempt-expiring").returncode == 0  # it ends in 90 days
    body = emu.get_plan(plan_path(estate.EXEMPT_PLAN))
    soon = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
    body["tags"]["labguard:exempt-until"] = soon
    emu.put_plan(body)
    proc = run("audit", *sub, "--fail-on", "exempt-expiring", "--json")
    report = json.loads(proc.stdout)
    assert report["exemptionsEnding"] == [{"id": plan_path(estate.EXEMPT_PLAN), "until": soon}]
    assert proc.returncode == 1
    assert run("audit", *sub, "--fail-on", "failed-provisioning").returncode == 0


def test_azure_failing_after_the_retries_exits_3(run: Run, emu: Any) -> None:
    emu.add_fault("GET", f"/subscriptions/{estate.EXTENSION}/*", status=500, count=None)
    proc = run("audit", "-s", estate.EXTENSION, timeout=120)
    line = one_line_error(proc, code=3)
    assert "kept failing (HTTP 500" in line
    proc = run("audit", "-s", f"{estate.EXTENSION},{estate.TEACHING}", "-g", "rg-engineering", timeout=120)
    assert proc.returncode == 3, proc.stdout
    assert "exit 3: Azure could not be reached or kept failing" in proc.stdout


def test_json_is_a_plain_flag_and_version_exists(run: Run) -> None:
    proc = run("audit", "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert "--json " in proc.stdout and "--fail-on FINDINGS" in proc.stdout
    assert "Exit status: 0 compliant; 1 findings" in proc.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("labguard 0.")
    enforce_help = " ".join(run("enforce", "--help").stdout.split())
    assert "when stdin or stdout is not a terminal (a pipe, cron, CI) it never asks and sends them" in enforce_help


def read_pty(master: int) -> str:
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.parametrize("answer", ["n", "y"])
def test_enforce_on_a_terminal_shows_the_patches_and_asks(
    labguard_command: Path, settings: dict[str, str], emu: Any, answer: str
) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(labguard_command), "enforce", "-s", estate.EXTENSION],
            env={**settings, "TERM": "dumb"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        os.write(master, f"{answer}\n".encode())
        proc.wait(timeout=90)
        seen = read_pty(master)
    finally:
        os.close(master)
    assert "would fix" in seen and "Send these patches now?" in seen
    if answer == "n":
        assert "Nothing sent." in seen
        assert arm_writes(emu) == []
    else:
        assert written(emu) == {"lang-french-b2", "lang-japanese-n4", "bus-excel-analytics"}
        assert proc.returncode == 0


def test_enforce_json_on_a_terminal_never_sends_unseen_patches(
    labguard_command: Path, settings: dict[str, str], emu: Any
) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(labguard_command), "enforce", "--json", "-s", estate.EXTENSION],
            env={**settings, "TERM": "dumb"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        proc.wait(timeout=90)
        seen = read_pty(master)
    finally:
        os.close(master)
    assert proc.returncode == 2
    assert "add --yes to send them, or --dry-run to see them" in " ".join(seen.split())
    assert arm_writes(emu) == []


# ------------------------------------------------------------------------------------ 6 the mode


def test_the_run_says_its_mode_and_where_the_functions_mode_comes_from(run: Run, settings: dict[str, str]) -> None:
    proc = run("audit", "-s", estate.EXTENSION)
    assert (
        f"mode     audit (the command decides); with these settings the Functions run in audit "
        f"(policy file {settings['LABGUARD_POLICY_FILE']})"
    ) in proc.stdout
    proc = run("audit", "-s", estate.EXTENSION, "--json", env={**settings, "LABGUARD_MODE": "enforce"})
    assert json.loads(proc.stdout)["mode"] == {
        "run": "audit",
        "functions": "enforce",
        "functionsModeFrom": "app setting LABGUARD_MODE",
    }


def test_a_malformed_storage_setting_is_named(run: Run, settings: dict[str, str]) -> None:
    line = one_line_error(run("audit", env={**settings, "AzureWebJobsStorage": "AccountKey=c2VjcmV0;oops"}))
    assert "AzureWebJobsStorage is not a valid storage connection string" in line
    assert "c2VjcmV0" not in line


# ------------------------------------------------------------------------------------ 9 JUnit


def test_audit_junit_has_a_test_case_per_plan_and_a_failure_per_finding(run: Run) -> None:
    proc = run("audit", "--format", "junit")
    assert proc.returncode == 1
    root = ET.fromstring(proc.stdout)
    suite = root.find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {spec.name for spec in estate.SPECS}
    report = json.loads(run("audit", "--format", "json").stdout)  # --format json: the --json document
    for plan in report["plans"]:
        case = cases[plan["name"]]
        assert case.get("classname") == f"{plan['subscriptionId']}.{plan['resourceGroup']}"
        failures = case.findall("failure")
        if plan["status"] == "drifted":
            drift = [f for f in plan["findings"] if f["patchValue"] is not None]
            assert [f.get("type") for f in failures] == [f["rule"] for f in drift]
            assert [str(f.get("message")).split(": ")[0] for f in failures] == [f["field"] for f in drift]
        elif plan["status"] == "provisioning-failed":
            assert [f.get("type") for f in failures] == ["provisioning.failed"]
        else:
            assert failures == []
        assert (case.find("skipped") is not None) == (plan["status"] in ("exempt", "skipped"))
    assert suite.get("tests") == str(len(cases))
    assert suite.get("failures") == str(len(DRIFTED) + 1)
    assert report["command"] == "audit" and report["exitCode"] == 1
