"""checkov over infra/: every failed check is justified in infra/README.md, and nothing else fails.

checkov runs from its own virtualenv (.venv-checkov: its pins clash with the app's), as a
subprocess, with the repository's .checkov.yaml. The justifications are the README's table: one
row per (check, file, resource) with the reason; a new failure, or a justification that no longer
matches a failure, fails this test.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from infra_support import INFRA, README, ROOT, bicep_files, body, function_call, main, module, resources_of_type

CHECKOV = Path(os.environ.get("LABGUARD_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
INSTALL = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30"

Finding = tuple[str, str, str]  # (check id, file under infra/, resource)


@functools.cache
def checkov_report() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}; install it with: {INSTALL}")
    run = subprocess.run(
        [str(CHECKOV), "--config-file", ".checkov.yaml", "--output", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode in (0, 1), f"checkov crashed ({run.returncode}): {run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    assert isinstance(report, dict) and report["check_type"] == "bicep", "expected one bicep report"
    return report


def findings(kind: str) -> set[Finding]:
    return {
        (c["check_id"], c["file_path"].lstrip("/"), c["resource"]) for c in checkov_report()["results"].get(kind, [])
    }


def justified() -> dict[Finding, str]:
    """Rows of the README table whose first cell is a checkov check id: (id, file, resource) -> reason."""
    rows: dict[Finding, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("CKV"):
            check, file, resource, reason = cells
            assert (check, file, resource) not in rows, f"duplicate justification row for {check} {resource}"
            rows[(check, file, resource)] = reason
    return rows


def test_checkov_parses_every_bicep_file():
    report = checkov_report()
    assert report["results"].get("parsing_errors", []) == []
    assert report["summary"]["parsing_errors"] == 0
    scanned = {f for _, f, _ in findings("passed_checks") | findings("failed_checks")}
    # Files whose resources checkov has checks for; a file it silently skipped would be missing.
    for path in bicep_files():
        if path.stem.startswith("role-assignment-") or path.stem == "eventgrid" or path.stem == "monitoring":
            continue  # checkov has no Bicep/ARM check for role assignments, Event Grid or Insights
        assert str(path.relative_to(INFRA)) in scanned, f"checkov reported nothing for {path.name}"


def test_every_failed_check_is_justified_in_the_readme():
    unjustified = findings("failed_checks") - set(justified())
    assert not unjustified, "fix these or justify them in infra/README.md (Checkov table):\n" + "\n".join(
        f"| {c} | {f} | {r} | <reason> |" for c, f, r in sorted(unjustified)
    )


def test_every_justification_still_matches_a_failed_check():
    stale = set(justified()) - findings("failed_checks")
    assert not stale, f"justified in infra/README.md but no longer failing (remove the row): {sorted(stale)}"


def test_every_justification_gives_a_reason():
    assert all(len(reason) > 20 for reason in justified().values())


def test_no_check_is_suppressed_in_the_templates():
    # Justifications live in the README, not as inline checkov:skip comments that hide them.
    assert findings("skipped_checks") == set()


def test_storage_account_name_follows_the_naming_rules_checkov_cannot_see():
    # CKV_AZURE_43 false positive: the name is built in main.bicep from a lowercase 13-char hash.
    tree = main()
    name = body(tree["modules"]["storage"])["params"]["storageAccountName"]
    assert name == "stlabguard${resourceToken}"
    token = function_call(tree["variables"]["resourceToken"]["value"])
    assert token is not None and token[0] == "to_lower"
    inner = function_call(token[1]["string_to_change"])
    assert inner is not None and inner[0] == "unique_string"  # always 13 characters, [a-z0-9]
    assert len("stlabguard") + 13 <= 24 and "stlabguard".isalnum() and "stlabguard".islower()


def test_conditional_secrets_have_the_content_type_checkov_cannot_see():
    # checkov reads no properties inside `resource ... = if (...) {...}` (CKV_AZURE_114 false positive).
    secrets = resources_of_type(module("keyvault"), "Microsoft.KeyVault/vaults/secrets")
    assert len(secrets) == 3
    assert {body(s)["properties"]["contentType"] for s in secrets.values()} == {"text/plain"}
