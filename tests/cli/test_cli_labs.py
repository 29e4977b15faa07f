"""`labguard audit` shows each plan's labs indented under it, and `--json` carries them."""

from __future__ import annotations

import json
from typing import Any

from devtools import estate
from tests.cli.conftest import arm_writes
from tests.labs.lab_fixtures import lab_body

PLAN = estate.plan_id(estate.spec_named("cs310-web-development"))


def seed_labs(emu: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    mine = lab_body("web-lab-a", plan_id=PLAN, rg="rg-computer-science")
    loose = lab_body("loose-lab", plan_id=None, rg="rg-computer-science", os_type="Linux")
    for body in (mine, loose):
        body["id"] = body["id"].replace(body["id"].split("/")[2], estate.TEACHING)
        emu.put_lab(body)
    return mine, loose


def test_audit_shows_labs_under_their_plan_and_in_json(run: Any, emu: Any) -> None:
    mine, loose = seed_labs(emu)
    proc = run("audit", "-s", estate.TEACHING)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    plan_row = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == "cs310-web-development")
    lab_row = next(i for i, line in enumerate(lines) if "└ lab web-lab-a" in line)
    assert lab_row > plan_row and all(
        "└ lab" not in line or "web-lab-a" in line for line in lines[plan_row : lab_row + 1]
    )
    assert "drifted" in lines[lab_row] and "webRdpAccess Public → None" in proc.stdout
    assert "labs naming no plan in scope" in proc.stdout and "└ lab loose-lab" in proc.stdout
    assert arm_writes(emu) == []

    report = json.loads(run("audit", "--json", "-s", estate.TEACHING).stdout)
    plan = next(p for p in report["plans"] if p["name"] == "cs310-web-development")
    (lab,) = plan["labs"]
    assert lab["id"].lower() == mine["id"].lower() and lab["status"] == "drifted" and lab["osType"] == "Windows"
    assert lab["patch"]["properties"]["connectionProfile"]["webRdpAccess"] == "None"
    assert [entry["id"].lower() for entry in report["labsWithoutPlan"]] == [loose["id"].lower()]


def test_the_demo_estate_seeds_labs_of_every_kind_and_enforce_fixes_only_what_it_may(run: Any, emu: Any) -> None:
    report = json.loads(run("audit", "--json", "-s", estate.TEACHING).stdout)
    plan = next(p for p in report["plans"] if p["name"] == estate.LAB_PLAN)
    status = {lab["id"].rsplit("/", 1)[-1]: lab["status"] for lab in plan["labs"]}
    assert status == {
        "db-lab-drifted": "drifted",
        "db-lab-stricter": "compliant",
        "db-lab-exempt": "exempt",
        "db-lab-template": "drifted",
        "db-lab-over-quota": "drifted",
    }
    run("enforce", "-s", estate.TEACHING)
    patched = sorted(w["path"].rsplit("/", 1)[-1] for w in arm_writes(emu) if "/labs/" in w["path"].lower())
    assert patched == ["db-lab-drifted", "db-lab-over-quota"]  # never the template-VM, stricter or exempt lab


def test_enforce_and_audit_name_who_last_changed_what_is_set_back(run: Any, emu: Any) -> None:
    """The CLI mails nobody (the Functions do, LABGUARD_NOTIFY_CHANGER); it shows whose change it undoes."""
    proc = run("audit", "-s", estate.TEACHING)
    lines = proc.stdout.splitlines()
    lab_row = next(i for i, line in enumerate(lines) if "└ lab db-lab-drifted" in line)
    after = lines[lab_row : lab_row + 12]
    assert any("last changed by teacher@school.example (User)" in line for line in after), after
    report = json.loads(run("audit", "--json", "-s", estate.TEACHING).stdout)
    plan = next(p for p in report["plans"] if p["name"] == estate.LAB_PLAN)
    [lab] = [lab for lab in plan["labs"] if lab["id"].endswith("/db-lab-drifted")]
    assert lab["changedBy"] == "teacher@school.example (User)"
    drifted = next(p for p in report["plans"] if p["status"] == "drifted")
    assert drifted["changedBy"] == "emulator-seed (Application)"
    proc = run("enforce", "--yes", "-s", estate.TEACHING)
    fixed = [line for line in proc.stdout.splitlines() if line.startswith("fixed ")]
    assert fixed and all(line.endswith("; last changed by emulator-seed (Application)") for line in fixed), fixed
