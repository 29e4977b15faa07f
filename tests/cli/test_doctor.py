"""``labguard doctor`` as an admin runs it: a subprocess against the local endpoint, in each PATCH mode.

The endpoint plays each way real Lab Services may behave (a PATCH that merges or replaces nested
profiles, an operation URL this identity may not read, an unregistered provider, a role without write);
doctor must report each correctly, write only its own throwaway plan, and always delete it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import estate
from labguard.doctor import allowed, identity_text, token_claims, url_shape

from .conftest import ADMIN_CLIENT, arm_writes, one_line_error

Run = Callable[..., subprocess.CompletedProcess[str]]
LIVE_GROUP = "rg-computer-science"


@pytest.fixture(autouse=True)
def _default_modes(emu: Any) -> Iterator[None]:
    """The endpoint is shared by the module: every test starts and ends with its default behaviour."""
    defaults = {"patch_mode": "merge", "omit_off_delays": False, "patch_reply": "lro", "operation_status": None}
    emu.configure(**defaults)
    emu.set_permissions(None)
    yield
    emu.configure(**defaults)
    emu.set_permissions(None)


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def doctor_plans(emu: Any) -> list[str]:
    return [key for key in emu.server.store.resources["labPlans"] if "/labplans/labguard-doctor-" in key]


def assert_only_the_throwaway_plan_was_written(emu: Any) -> str:
    writes = arm_writes(emu)
    paths = {w["path"] for w in writes}
    assert len(paths) == 1, paths
    path = paths.pop()
    assert f"/resourceGroups/{LIVE_GROUP}/providers/Microsoft.LabServices/labPlans/labguard-doctor-" in path
    assert [w["method"] for w in writes] == ["PUT", "PATCH", "DELETE"]
    assert doctor_plans(emu) == []  # deleted
    return path


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_live_reports_how_the_service_patches_nested_profiles(run: Run, emu: Any, mode: str) -> None:
    emu.configure(patch_mode=mode)
    proc = run("doctor", "--live", LIVE_GROUP, "--json")
    assert proc.stderr == ""
    report = json.loads(proc.stdout)
    lines = checks(report)
    assert report["live"]["nestedProfiles"] == mode
    nested = lines["live: nested profiles"]
    assert nested["verdict"] == "ok"
    if mode == "merge":
        assert "merges: clientRdpAccess stayed Public" in nested["detail"]
        assert report["live"]["after"]["defaultConnectionProfile"]["clientRdpAccess"] == "Public"
    else:
        assert "replaces the profile: clientRdpAccess Public became None" in nested["detail"]
        assert "a leaf-only patch would have reset the other leaves" in nested["labguard"]
    assert lines["live: profile not sent"]["verdict"] == "ok"
    assert report["live"]["patchStatus"] == 202
    assert report["live"]["patchHeaders"] == ["Location", "Azure-AsyncOperation", "Retry-After"]
    shapes = {u["header"]: u for u in report["live"]["operationUrls"]}
    assert shapes["Azure-AsyncOperation"]["shape"] == (
        "/subscriptions/{subscriptionId}/providers/Microsoft.LabServices/operationResults/{operationId}?api-version=…"
    )
    assert shapes["Azure-AsyncOperation"]["readable"] is True
    assert report["live"]["delays"] == {
        "keptWhileOff": ["disconnectDelay"],
        "droppedWhileOff": [],
        "filledInWhileOff": {},
    }
    assert lines["live: cleanup"]["verdict"] == "ok" and report["live"]["deleted"] is True
    assert {c["verdict"] for c in report["checks"]} == {"ok"}
    assert proc.returncode == report["exitCode"] == 0
    assert_only_the_throwaway_plan_was_written(emu)


def test_the_table_says_what_each_answer_means_for_labguard(run: Run, emu: Any) -> None:
    mode = "replace"  # (both modes' facts: the --json test above)
    emu.configure(patch_mode=mode)
    proc = run("doctor", "-s", estate.TEACHING, "-s", estate.RESEARCH, "--live", LIVE_GROUP)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "ok" in rows["live: nested profiles"]
    expected = "merges: clientRdpAccess stayed Public" if mode == "merge" else "replaces the profile"
    assert expected in rows["live: nested profiles"]
    assert "HTTP 202; Location, Azure-AsyncOperation, Retry-After" in rows["live: PATCH answer"]
    assert "deleted the throwaway plan labguard-doctor-" in rows["live: cleanup"]
    assert "→ labguard sends each drifted profile whole" in out
    assert f"application {ADMIN_CLIENT} (oid {emu.principal_id(ADMIN_CLIENT)}" in rows["credential"]
    assert "exit 0: " in out and "0 warning(s), 0 failure(s)" in out


def test_an_operation_url_this_identity_may_not_read_is_reported_not_fatal(run: Run, emu: Any) -> None:
    emu.configure(operation_status=403)
    proc = run("doctor", "--live", LIVE_GROUP, "--json")
    report = json.loads(proc.stdout)
    op = checks(report)["live: Azure-AsyncOperation"]
    assert op["verdict"] == "ok"
    assert "not readable: 403" in op["detail"]
    assert "never fails a fix on a 403/400" in op["labguard"]
    assert {u["readable"] for u in report["live"]["operationUrls"]} == {False}
    assert report["live"]["nestedProfiles"] == "merge" and report["live"]["deleted"] is True
    assert proc.returncode == 0


def test_a_patch_answered_at_once_is_reported(run: Run, emu: Any) -> None:
    emu.configure(patch_reply="200", patch_mode="replace")
    report = json.loads(run("doctor", "--live", LIVE_GROUP, "--json").stdout)
    answer = checks(report)["live: PATCH answer"]
    assert answer["detail"] == "HTTP 200; no operation headers"
    assert "answered at once" in answer["labguard"]
    assert checks(report)["live: operation URL"]["detail"] == "none given"
    assert report["live"]["nestedProfiles"] == "replace" and report["live"]["deleted"] is True


def test_the_spec_examples_operation_url_is_shown_with_its_missing_api_version(run: Run, emu: Any) -> None:
    emu.configure(patch_reply="spec")
    report = json.loads(run("doctor", "--live", LIVE_GROUP, "--json").stdout)
    assert report["live"]["patchStatus"] == 202 and report["live"]["patchHeaders"] == ["Location"]
    (location,) = report["live"]["operationUrls"]
    assert location["shape"] == (
        "/subscriptions/{subscriptionId}/providers/Microsoft.LabServices/operationresults/{operationId}"
        " (no query: no api-version)"
    )
    assert report["live"]["nestedProfiles"] == "merge" and report["live"]["deleted"] is True


def test_delays_the_service_drops_while_their_feature_is_off_are_reported(run: Run, emu: Any) -> None:
    emu.configure(omit_off_delays=True)
    report = json.loads(run("doctor", "--live", LIVE_GROUP, "--json").stdout)
    assert report["live"]["delays"]["droppedWhileOff"] == ["disconnectDelay"]
    assert "dropped on read" in checks(report)["live: delays, features off"]["detail"]


def test_without_live_doctor_writes_nothing_and_warns_on_what_enforce_needs(
    run: Run, emu: Any, settings: dict[str, str]
) -> None:
    emu.set_registered(estate.EXTENSION, False)
    emu.set_permissions(
        [{"actions": ["*/read"], "notActions": []}, {"actions": ["Microsoft.LabServices/*"], "notActions": ["*/write"]}]
    )
    proc = run("doctor", "--json")
    report = json.loads(proc.stdout)
    lines = checks(report)
    ext = estate.EXTENSION[:8]
    assert lines[f"provider {ext}…"]["verdict"] == "warn"
    assert "NotRegistered" in lines[f"provider {ext}…"]["detail"]
    assert "not registered, no plans here" in lines[f"read plans {ext}…"]["detail"]
    write = lines[f"write access {estate.TEACHING[:8]}…"]
    assert write["verdict"] == "warn" and write["detail"] == "not allowed: Microsoft.LabServices/labPlans/write"
    assert lines[f"read plans {estate.TEACHING[:8]}…"]["detail"] == "18 lab plans found"
    assert report["live"] is None
    assert proc.returncode == report["exitCode"] == 1
    assert arm_writes(emu) == []
    token = emu.token(ADMIN_CLIENT)
    assert token.split(".")[0] not in proc.stdout  # the token itself is never printed


def test_a_bad_policy_and_overrides_that_match_nothing_are_lines_not_crashes(
    run: Run, emu: Any, tmp_path: Path
) -> None:
    proc = run("doctor", "-s", estate.TEACHING, "--json")
    lines = checks(json.loads(proc.stdout))
    overrides = lines["policy overrides"]
    assert overrides["verdict"] == "warn" and f"subscription {estate.RESEARCH}: not in scope" in overrides["detail"]
    assert proc.returncode == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("connection:\n  webSshAccess: Sometimes\n")
    proc = run("doctor", "-s", estate.TEACHING, "--policy", str(bad), "--json")
    policy = checks(json.loads(proc.stdout))["policy"]
    assert policy["verdict"] == "fail" and "webSshAccess" in policy["detail"]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_a_credential_that_fails_is_one_line_and_nothing_else_runs(run: Run, settings: dict[str, str]) -> None:
    proc = run("doctor", "--json", env={**settings, "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000000"})
    report = json.loads(proc.stdout)
    assert [c["name"] for c in report["checks"]] == ["policy", "credential", "everything else"]
    assert checks(report)["credential"]["verdict"] == "fail"
    assert proc.returncode == 1


def test_usage_mistakes_exit_2(run: Run, settings: dict[str, str]) -> None:
    env = {k: v for k, v in settings.items() if k != "LABGUARD_SUBSCRIPTIONS"}
    assert "no subscription in scope" in one_line_error(run("doctor", env=env))
    assert "is not a resource group name" in one_line_error(run("doctor", "--live", "rg/../x"))
    assert "is not a subscription id" in one_line_error(run("doctor", "-s", "teaching"))


def test_ctrl_c_during_the_live_test_still_deletes_the_plan(
    labguard_command: Path, settings: dict[str, str], emu: Any, tmp_path: Path
) -> None:
    emu.add_fault(method="PATCH", path_pattern="/subscriptions/*/labPlans/labguard-doctor-*", latency_ms=6_000, count=1)
    proc = subprocess.Popen(
        [str(labguard_command), "doctor", "--live", LIVE_GROUP],
        env=settings,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not any(r["method"] == "PUT" and r["status"] for r in emu.requests()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the PATCH is now waiting on the endpoint
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "exit 130: interrupted" in out
    assert "deleted the throwaway plan labguard-doctor-" in out
    assert doctor_plans(emu) == []
    assert "Traceback" not in err


def test_ctrl_c_during_the_put_still_cleans_up_or_says_what_to_delete(
    labguard_command: Path, settings: dict[str, str], emu: Any, tmp_path: Path
) -> None:
    emu.add_fault(method="PUT", path_pattern="/subscriptions/*/labPlans/labguard-doctor-*", latency_ms=5_000, count=1)
    proc = subprocess.Popen(
        [str(labguard_command), "doctor", "--live", LIVE_GROUP],
        env=settings,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The endpoint logs a request once answered: quiet for a second while doctor runs = the PUT is waiting.
    deadline, seen, quiet_since = time.monotonic() + 30, -1, time.monotonic()
    while time.monotonic() - quiet_since < 1.0 or seen < 1:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        count = len(emu.requests())
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        time.sleep(0.05)
    assert not any(r["method"] == "PUT" for r in emu.requests())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "DELETE" in [r["method"] for r in emu.requests()]  # cleanup ran although the PUT never answered
    assert "az resource delete --ids /subscriptions/" in out or "deleted the throwaway plan labguard-doctor-" in out
    assert "Traceback" not in err
    time.sleep(5)  # the endpoint finishes the PUT the client gave up on: remove what it made
    for key in doctor_plans(emu):
        emu.server.store.resources["labPlans"].pop(key, None)


# ------------------------------------------------------------------------------------ the rules doctor applies


def test_write_access_follows_arms_actions_and_not_actions() -> None:
    contributor = [{"actions": ["*"], "notActions": ["Microsoft.Authorization/*/Write"]}]
    reader = [{"actions": ["*/read"], "notActions": []}]
    carved = [{"actions": ["Microsoft.LabServices/*"], "notActions": ["Microsoft.LabServices/labPlans/write"]}]
    labguard_role = [{"actions": ["Microsoft.LabServices/labPlans/read", "Microsoft.LabServices/labPlans/write"]}]
    action = "Microsoft.LabServices/labPlans/write"
    assert allowed(contributor, action) and allowed(labguard_role, action)
    assert allowed([{"actions": ["microsoft.labservices/labplans/*"]}], action)  # case-insensitive, wildcards
    assert not allowed(reader, action) and not allowed(carved, action)
    assert allowed(carved + labguard_role, action)  # another role grants it: roles add up
    assert not allowed([], action)


def test_operation_url_shapes_hide_ids_and_show_the_api_version_or_its_absence() -> None:
    sub = "5b1d7d3e-2f4a-4c1e-9a55-3c7e1b2d4f60"
    spec = f"https://management.azure.com/subscriptions/{sub}/providers/Microsoft.LabServices/operationresults/abc"
    assert url_shape(spec) == (
        "/subscriptions/{subscriptionId}/providers/Microsoft.LabServices/operationresults/{operationId}"
        " (no query: no api-version)"
    )
    located = f"https://x/subscriptions/{sub}/providers/Microsoft.LabServices/locations/westeurope/operationResults/1?api-version=2023-06-07"
    assert url_shape(located) == (
        "/subscriptions/{subscriptionId}/providers/Microsoft.LabServices/locations/{location}/operationResults/"
        "{operationId}?api-version=…"
    )


def test_identity_comes_from_the_tokens_claims() -> None:
    import base64

    def token(claims: dict[str, str]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"header.{payload}.signature"

    user = token_claims(token({"oid": "o1", "tid": "t1", "upn": "alice@school.example", "idtyp": "user"}))
    assert identity_text(user) == "user alice@school.example (oid o1, tenant t1)"
    app = token_claims(token({"oid": "o2", "tid": "t1", "appid": "a-1", "idtyp": "app"}))
    assert identity_text(app) == "application a-1 (oid o2, tenant t1)"
    assert token_claims("not-a-token") == {}


def test_audit_says_a_subscription_is_not_registered_and_does_not_fail(run: Run, emu: Any) -> None:
    emu.set_registered(estate.EXTENSION, False)
    proc = run("audit", "-s", estate.EXTENSION)
    assert f"/subscriptions/{estate.EXTENSION}: Microsoft.LabServices is not registered, no plans here" in proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(run("audit", "-s", estate.EXTENSION, "--json").stdout)
    assert report["notRegistered"] == [f"/subscriptions/{estate.EXTENSION}"] and report["listFailures"] == []
