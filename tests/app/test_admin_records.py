"""What the Functions tell an admin in their records: empty scopes in ``sweep.summary``, the mode and where
it came from (``run.mode``), and a malformed ``AzureWebJobsStorage`` named in the error."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from shared.errors import SettingsError
from shared.runtime.runs import current_runtime

from .conftest import SUB, compliant_plan
from .test_functions_e2e import tick  # the indexed timer function (the app indexes its functions once)


def records(caplog: Any, event: str) -> list[tuple[int, dict[str, Any]]]:
    return [
        (r.levelno, json.loads(r.getMessage().split(" ", 1)[1]))
        for r in caplog.records
        if r.getMessage().startswith(event + " ")
    ]


async def test_sweep_summary_names_the_scopes_with_no_lab_plans(emu: Any, configure: Any, caplog: Any) -> None:
    emu.put_plan(compliant_plan("c1", rg="labs-east"))
    configure(LABGUARD_RESOURCE_GROUPS="labs-east,labs-typo")
    caplog.set_level("INFO", logger="labguard")
    await tick()
    ((level, summary),) = records(caplog, "sweep.summary")
    assert summary["compliant"] == 1
    assert summary["empty_scopes"] == [f"/subscriptions/{SUB}/resourceGroups/labs-typo"]
    assert "no lab plans in" in summary["warning"] and "labs-typo" in summary["warning"]
    assert level == logging.WARNING  # an alert on warnings sees it


async def test_sweep_summary_has_no_warning_when_every_scope_holds_plans(emu: Any, configure: Any, caplog: Any) -> None:
    emu.put_plan(compliant_plan("c1", rg="labs-east"))
    caplog.set_level("INFO", logger="labguard")
    await tick()
    ((level, summary),) = records(caplog, "sweep.summary")
    assert summary["empty_scopes"] == [] and "warning" not in summary
    assert level == logging.INFO


@pytest.mark.parametrize(
    ("setting", "file_mode", "mode", "source"),
    [
        ("enforce", "audit", "enforce", "app setting LABGUARD_MODE"),
        ("", "enforce", "enforce", "policy file"),
        ("", None, "audit", "default"),
    ],
    ids=["setting-wins", "file-when-no-setting", "audit-when-neither"],
)
async def test_run_mode_says_which_mode_and_where_it_came_from(
    emu: Any, configure: Any, caplog: Any, tmp_path: Any, setting: str, file_mode: str | None, mode: str, source: str
) -> None:
    policy = tmp_path / "mode.yaml"
    policy.write_text((f"mode: {file_mode}\n" if file_mode else "") + "connection:\n  webSshAccess: None\n")
    configure(LABGUARD_MODE=setting, LABGUARD_POLICY_FILE=str(policy))
    caplog.set_level("INFO", logger="labguard")
    runtime = await current_runtime()
    ((_, record),) = records(caplog, "run.mode")
    assert record["mode"] == mode == runtime.reconciler.mode
    assert record["source"].startswith(source)
    assert record["policy"] == str(policy)


async def test_a_malformed_storage_connection_names_the_setting_not_the_value(configure: Any) -> None:
    secret = "AccountName=st;AccountKey=c2VjcmV0LWtleQ==;NotAKey"
    configure(AzureWebJobsStorage=secret)
    with pytest.raises(SettingsError) as caught:
        await current_runtime()
    assert "AzureWebJobsStorage" in str(caught.value)
    assert "c2VjcmV0LWtleQ" not in str(caught.value)
