"""The ``labguard`` command as an admin runs it: a subprocess against the local Lab Services endpoint.

Assertions are on what the admin sees (stdout, stderr, exit status) and on what the endpoint saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools import estate
from shared.core.policy import load_policy, schema_text
from tests.enforcement_support import CONN, PATCH_MODES, SHUT, assert_only_fixed, patch_changes

from .conftest import arm_writes, clean_env, one_line_error

Run = Callable[..., subprocess.CompletedProcess[str]]

DRIFTED = {spec.name for spec in estate.SPECS if spec.kind in ("drifted", "expired-exempt")}
COMPLIANT = {spec.name for spec in estate.SPECS if spec.kind in ("compliant", "stricter", "owner")}


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {plan["name"]: plan for plan in report["plans"]}


def test_audit_prints_every_plan_changes_nothing_and_exits_1_on_drift(run: Run, emu: Any) -> None:
    proc = run("audit")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    for header in ("PLAN", "SUBSCRIPTION / RESOURCE GROUP", "STATE", "FINDINGS"):
        assert header in out
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split() and line.split()[0] in {s.name for s in estate.SPECS}
    }
    assert set(rows) == {spec.name for spec in estate.SPECS}
    assert "drifted" in rows["cs310-web-development"] and "webSshAccess Public → None" in rows["cs310-web-development"]
    assert "5b1d7d3e…/rg-computer-science" in rows["cs310-web-development"]
    assert "compliant" in rows["cs410-capstone"]  # stricter than the baseline: fine
    assert "FAILED" in rows[estate.FAILED_PLAN] and "InvalidSubnetDelegation" in rows[estate.FAILED_PLAN]
    assert "skipped" in rows[estate.LOCKED_PLAN] and "Locked" in rows[estate.LOCKED_PLAN]
    assert "exempt" in rows[estate.EXEMPT_PLAN] and "RES-4711" in rows[estate.EXEMPT_PLAN]
    assert "36 plans: 20 compliant, 13 drifted, 1 exempt, 1 skipped, 1 failed" in out
    assert "exit 1: 13 plans drifted; 1 plan failed to provision" in out
    assert arm_writes(emu) == []
    assert {r["principal"] for r in emu.requests() if r["kind"] == "arm"} == {"school-it-admin"}  # the appid ARM saw


def test_audit_json_for_scripts(run: Run, emu: Any) -> None:
    proc = run("audit", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    plans = by_name(report)
    assert set(plans) == {spec.name for spec in estate.SPECS}
    assert {name for name, plan in plans.items() if plan["status"] == "drifted"} == DRIFTED
    assert {name for name, plan in plans.items() if plan["status"] == "compliant"} == COMPLIANT
    assert plans[estate.FAILED_PLAN]["status"] == "provisioning-failed"
    assert plans[estate.LOCKED_PLAN]["status"] == "skipped"
    assert plans[estate.EXEMPT_PLAN]["status"] == "exempt"
    french = plans["lang-french-b2"]
    as_read = emu.get_plan(estate.plan_id(estate.spec_named("lang-french-b2")))
    assert patch_changes(french["patch"], as_read) == {SHUT: {"idleDelay": "PT30M"}}
    assert french["subscriptionId"] == estate.EXTENSION and french["resourceGroup"] == "rg-languages"
    assert [f["rule"] for f in french["findings"]] == ["shutdown.idleDelay"]
    assert report["summary"] == {"compliant": 20, "drifted": 13, "exempt": 1, "skipped": 1, "provisioning-failed": 1}
    assert report["exitCode"] == 1 and report["command"] == "audit"
    assert report["scope"]["subscriptions"] == list(estate.SUBSCRIPTIONS)


def test_flags_beat_the_app_settings(run: Run, settings: dict[str, str], tmp_path: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text("connection:\n  clientSshAccess: None\n  clientRdpAccess: Public\n")
    env = {**settings, "LABGUARD_SUBSCRIPTIONS": estate.TEACHING, "LABGUARD_RESOURCE_GROUPS": "rg-engineering"}
    proc = run(
        "audit",
        "--json",
        "-s",
        estate.RESEARCH,
        "--resource-group",
        "rg-data-science",
        "--policy",
        str(strict),
        env=env,
    )
    report = json.loads(proc.stdout)
    assert set(by_name(report)) == {s.name for s in estate.SPECS if s.rg == "rg-data-science"}
    assert report["policy"] == str(strict)
    # Under the strict policy only clientSshAccess is governed: every Private plan drifts to None.
    assert {p["status"] for p in report["plans"]} == {"drifted"}
    assert proc.returncode == 1


def test_audit_exits_0_when_everything_in_scope_is_compliant(run: Run) -> None:
    proc = run("enforce", "-s", estate.EXTENSION)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("audit", "-s", estate.EXTENSION)
    assert proc.returncode == 0, proc.stdout
    assert "exit 0: every plan in scope is compliant" in proc.stdout


def test_enforce_dry_run_shows_each_patch_and_sends_none(run: Run, emu: Any) -> None:
    proc = run("enforce", "--dry-run")
    assert proc.returncode == 1
    lines = [line for line in proc.stdout.splitlines() if line.startswith("would fix") and " lab " not in line[:14]]
    assert {line.split()[2] for line in lines} == DRIFTED
    assert any("lang-japanese-n4 (c4f2e8a9…/rg-languages): webRdpAccess Public → None" in line for line in lines)
    assert "36 plans: 20 compliant, 13 to fix, 1 exempt, 1 skipped, 1 failed" in proc.stdout
    assert arm_writes(emu) == []


@pytest.mark.parametrize("emu", PATCH_MODES, indirect=True)
def test_enforce_sends_tighten_only_patches_and_shows_each_change(run: Run, emu: Any) -> None:
    before = {plan["name"]: plan for plan in estate.estate()["labPlans"]}
    proc = run("enforce", "-s", estate.TEACHING, "-g", "rg-engineering", "-g", "rg-linux-course")
    out = proc.stdout
    fixed = [line for line in out.splitlines() if line.startswith("fixed")]
    assert sorted(line.split()[1] for line in fixed) == [
        "eng150-cad",
        "eng220-matlab",
        "eng300-simulation",
        "linux201-sysadmin",
    ]
    assert any("eng300-simulation (5b1d7d3e…/rg-engineering): shutdownOnIdle None → LowUsage" in line for line in fixed)
    # One PATCH per plan: each drifted profile whole as read, only the drifted leaves changed.
    patches = {r["path"].rsplit("/", 1)[-1]: r["body"] for r in arm_writes(emu)}
    fixes = {
        "eng150-cad": {SHUT: {"shutdownOnDisconnect": "Enabled"}},
        "eng220-matlab": {SHUT: {"shutdownWhenNotConnected": "Enabled"}},
        "eng300-simulation": {SHUT: {"shutdownOnIdle": "LowUsage"}},
        "linux201-sysadmin": {CONN: {"clientRdpAccess": "Private"}},
    }
    assert {name: patch_changes(body, before[name]) for name, body in patches.items()} == fixes
    # Whether the endpoint merged or replaced the profiles: converged, and nothing else changed anywhere.
    for name, plan in before.items():
        assert_only_fixed(plan, emu.get_plan(plan["id"]), fixes.get(name, {}))
    # Failed and Locked plans are never written; the Failed one keeps the exit status at 1.
    assert "Plans labguard did not change:" in out
    assert estate.FAILED_PLAN in out and estate.LOCKED_PLAN in out
    assert "exit 1: 1 plan failed to provision" in out
    assert proc.returncode == 1
    stored = emu.get_plan(estate.plan_id(estate.spec_named("eng300-simulation")))
    assert stored["properties"]["defaultAutoShutdownProfile"]["shutdownOnIdle"] == "LowUsage"
    assert (
        emu.get_plan(estate.plan_id(estate.spec_named(estate.LOCKED_PLAN)))["properties"]["provisioningState"]
        == "Locked"
    )


def test_enforce_json(run: Run) -> None:
    proc = run("enforce", "--json", "-s", estate.EXTENSION)
    report = json.loads(proc.stdout)
    statuses = {p["name"]: p["status"] for p in report["plans"]}
    assert {n for n, s in statuses.items() if s == "fixed"} == {
        "lang-french-b2",
        "lang-japanese-n4",
        "bus-excel-analytics",
    }
    assert report["exitCode"] == proc.returncode == 0


def test_check_policy_prints_effective_rules_per_scope(run: Run, policy_file: Path) -> None:
    proc = run("check-policy", str(policy_file))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{policy_file}: valid. mode audit" in out
    assert "1 subscription override, 1 resource group override" in out
    header = next(line for line in out.splitlines() if line.startswith("SETTING"))
    assert header.split()[:2] == ["SETTING", "baseline"]
    assert "subscription 9e3c0a71…" in header and "5b1d7d3e…/rg-linux-course" in header
    idle = next(line for line in out.splitlines() if line.startswith("maxIdleDelay"))
    assert idle.split() == ["maxIdleDelay", "at", "most", "PT30M", "at", "most", "PT2H", "*", "at", "most", "PT30M"]
    rdp = next(line for line in out.splitlines() if line.startswith("clientRdpAccess"))
    assert rdp.split() == [
        "clientRdpAccess",
        "at",
        "most",
        "Public",
        "at",
        "most",
        "Public",
        "at",
        "most",
        "Private",
        "*",
    ]


def test_check_policy_json_is_the_core_rules(run: Run, policy_file: Path) -> None:
    proc = run("check-policy", "--json", str(policy_file))
    assert proc.returncode == 0
    ours = json.loads(proc.stdout)
    policy = load_policy(policy_file)
    assert ours["scopes"] == {scope: rules.to_policy_dict() for scope, rules in policy.describe().items()}
    assert ours["mode"] == policy.mode


def test_check_policy_writes_the_schema(run: Run, tmp_path: Path) -> None:
    proc = run("check-policy", "--write-schema", str(tmp_path / "schema.json"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (tmp_path / "schema.json").read_text(encoding="utf-8") == schema_text()
    unwritable = run("check-policy", "--write-schema", str(tmp_path / "no" / "such" / "dir" / "s.json"))
    assert unwritable.returncode == 2 and len(unwritable.stderr.strip().splitlines()) == 1


def test_check_policy_writes_the_checked_copy_of_a_valid_policy_only(run: Run, tmp_path: Path) -> None:
    from shared.core.policy_check import load_checked_policy

    good = tmp_path / "policy.yaml"
    good.write_text("mode: enforce\nautoShutdown:\n  maxIdleDelay: PT20M\n", encoding="utf-8")
    proc = run("check-policy", str(good), "--write-checked")
    assert proc.returncode == 0 and f"wrote {good}.checked.json" in proc.stdout
    loaded = load_checked_policy(good)
    assert loaded.load_note == "checked copy policy.yaml.checked.json" and loaded == load_policy(good)
    as_json = run("check-policy", "--json", str(good), "--write-checked")  # stdout stays the JSON document
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["mode"] == "enforce"
    assert "wrote" in as_json.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: bogus\n", encoding="utf-8")
    refused = run("check-policy", str(bad), "--write-checked")
    assert refused.returncode == 2 and not (tmp_path / "bad.yaml.checked.json").exists()


def test_check_policy_defaults_to_the_setting(run: Run, settings: dict[str, str]) -> None:
    proc = run("check-policy")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"{settings['LABGUARD_POLICY_FILE']}: valid.")


def test_check_policy_refuses_a_bad_file_in_one_line(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("autoShutdown:\n  maxIdleDelay: 15 minutes\n")
    line = one_line_error(run("check-policy", str(bad)))
    assert (
        line
        == f"labguard: {bad}: autoShutdown.maxIdleDelay: '15 minutes' is not an ISO-8601 duration; write e.g. PT15M"
    )


@pytest.mark.parametrize(
    ("args", "changes", "expected"),
    [
        (("audit", "-s", "1234"), {}, "--subscription '1234' is not a subscription id"),
        (
            ("audit",),
            {"LABGUARD_SUBSCRIPTIONS": "my-subscription"},
            "bad setting: LABGUARD_SUBSCRIPTIONS: entry 1 is not a subscription id",
        ),
        (("audit",), {"LABGUARD_SUBSCRIPTIONS": ""}, "no subscription in scope: pass --subscription"),
        (("audit", "-g", "rg/../x"), {}, "--resource-group 'rg/../x' is not a resource group name"),
        (("audit", "-p", "missing.yaml"), {}, "missing.yaml: cannot read the policy file: No such file or directory"),
        (
            ("audit",),
            {"LABGUARD_CA_BUNDLE": "/nonexistent/ca.pem"},
            "bad setting: LABGUARD_CA_BUNDLE='/nonexistent/ca.pem'",
        ),
        (
            ("audit",),
            {"LABGUARD_ARM_ENDPOINT": "http://127.0.0.1:1"},
            "bad setting: LABGUARD_ARM_ENDPOINT is not an https:// URL",
        ),
    ],
)
def test_configuration_mistakes_end_in_one_line(
    run: Run, settings: dict[str, str], args: tuple[str, ...], changes: dict[str, str], expected: str | None
) -> None:
    assert expected in one_line_error(run(*args, env={**settings, **changes}))


def test_the_command_decides_the_mode_not_labguard_mode(run: Run, settings: dict[str, str], emu: Any) -> None:
    proc = run("audit", "--json", env={**settings, "LABGUARD_MODE": "enforce"})
    assert proc.returncode == 1 and arm_writes(emu) == []  # audit never writes, whatever the app setting says


def test_an_unreadable_policy_names_the_field(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("connection:\n  webSshAccess: Sometimes\n")
    line = one_line_error(run("audit", "--policy", str(bad)))
    assert line == (
        f"labguard: {bad}: connection.webSshAccess: 'Sometimes' is not allowed; write None, Private or Public "
        "(or pass --policy FILE)"
    )


def test_no_credentials_says_az_login(run: Run, settings: dict[str, str]) -> None:
    env = {k: v for k, v in settings.items() if not k.startswith("AZURE_")}
    env["PATH"] = str(Path(settings.get("PATH", "/usr/bin").split(":")[0]))  # no az, azd or pwsh to ask
    line = one_line_error(run("audit", env=env))
    assert line.startswith("labguard: no Azure credentials found: run `az login`")


def test_wrong_tenant_is_a_sign_in_failure(run: Run, settings: dict[str, str]) -> None:
    line = one_line_error(run("audit", env={**settings, "AZURE_TENANT_ID": "not-our-tenant"}))
    assert line.startswith("labguard: Azure sign-in failed (") and "AADSTS90002" in line


def test_untrusted_endpoint_says_which_setting(run: Run, settings: dict[str, str]) -> None:
    env = {k: v for k, v in settings.items() if k != "LABGUARD_CA_BUNDLE"}
    line = one_line_error(run("audit", env=env))
    assert "TLS certificate is not trusted: point LABGUARD_CA_BUNDLE" in line


def test_unreachable_endpoint_says_what_to_check(run: Run, settings: dict[str, str]) -> None:
    from devtools.services import free_port

    endpoint = f"https://127.0.0.1:{free_port()}"
    proc = run("audit", "-s", estate.TEACHING, env={**settings, "LABGUARD_ARM_ENDPOINT": endpoint})
    line = one_line_error(proc, code=3)  # Azure could not be reached: 3, not a usage mistake
    assert line.startswith(f"labguard: cannot reach the ARM endpoint {endpoint} (")
    assert line.endswith("check LABGUARD_ARM_ENDPOINT and your network")


def test_an_unknown_subscription_is_reported_not_crashed(run: Run, emu: Any) -> None:
    emu.add_fault("GET", f"/subscriptions/{estate.RESEARCH}/*", status=403, count=None)
    proc = run("audit", "-s", estate.RESEARCH)
    line = one_line_error(proc)
    assert f"ARM refused to list lab plans in /subscriptions/{estate.RESEARCH} (HTTP 403" in line
    # With another subscription that lists fine, the report goes on and the failed scope is named.
    proc = run("audit", "-s", f"{estate.RESEARCH},{estate.EXTENSION}")
    assert proc.returncode == 1
    assert f"could not list /subscriptions/{estate.RESEARCH}" in proc.stdout
    assert "lang-french-b2" in proc.stdout


def test_usage_errors_exit_2(run: Run) -> None:
    proc = run("audit", "--no-such-flag")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr
    assert run("--help").returncode == 0


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "labguard", "check-policy", str(Path(__file__).resolve().parents[2] / "policy.yaml")],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "policy.yaml: valid." in proc.stdout


def test_a_terminal_gets_a_progress_bar_and_a_pipe_does_not(labguard_command: Path, settings: dict[str, str]) -> None:
    import os
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(labguard_command), "enforce", "--dry-run"],
            env={**settings, "TERM": "xterm-256color"},
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        # Read the terminal while the command runs: a slow run draws more frames than a pty buffers.
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    terminal = seen.decode(errors="replace")
    assert "enforce: sweeping" in terminal and "plans" in terminal
    assert proc.returncode == 1
    assert "would fix" in stdout and "sweeping" not in stdout  # the pipe gets the changes, not the bar


def test_audit_from_file_needs_no_azure(labguard_command: Path, tmp_path: Path) -> None:
    """Saved plan JSON, no endpoint, no credentials, no subscription: the same report, from the installed command."""
    from .conftest import ROOT

    proc = subprocess.run(
        [str(labguard_command), "audit", "--json", "--from-file", str(ROOT / "samples" / "lab_plans.json")],
        env=clean_env(LABGUARD_POLICY_FILE=str(ROOT / "policy.yaml")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (1, "")
    report = json.loads(proc.stdout)
    assert len(report["plans"]) == 14 and report["files"] == [str(ROOT / "samples" / "lab_plans.json")]
    assert report["summary"]["drifted"] == 6


async def test_enforce_after_a_preview_sends_only_the_patches_shown(
    emu: Any, settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interactive enforce asks after a dry-run preview; a plan whose patch changed since then is not
    written (nobody saw that patch), it stays drifted and the run exits 1."""
    from labguard import runner

    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # the credential reads the environment, as on the admin's laptop

    run_settings = runner.resolve_settings(settings, runner.Flags(), mode="enforce")
    policy = runner.read_policy(run_settings.policy_file, "enforce")
    preview = await runner.run(run_settings, policy, command="enforce", dry_run=True, read_ledger=False)
    approved = {
        r.outcome.plan_id: r.outcome.evaluation.patch
        for r in preview.results
        if r.status == "drifted" and r.outcome.evaluation is not None
    }
    changed = next(key for key, patch in approved.items() if "defaultConnectionProfile" not in patch["properties"])
    body = emu.get_plan(changed)
    body["properties"]["defaultConnectionProfile"]["webSshAccess"] = "Public"  # the owner, after the preview
    emu.put_plan(body)
    emu.clear_requests()
    result = await runner.run(run_settings, policy, command="enforce", approved_patches=approved, read_ledger=False)
    by_key = {r.outcome.plan_id: r for r in result.results}
    assert by_key[changed].status == "drifted"
    assert by_key[changed].outcome.detail == "changed since the preview; not written"
    written = {r["path"].lower() for r in arm_writes(emu)}
    assert changed.lower() not in {p.split("?")[0] for p in written}
    assert result.counts["fixed"] == len(approved) - 1
    assert result.exit_code == 1
