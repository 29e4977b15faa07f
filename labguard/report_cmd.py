"""``labguard report --html FILE``: the compliance page of an audit run, as the Functions write it.

Runs the same read-only audit as ``labguard audit`` (nothing is changed), adds the notice state of
Failed plans and the last 7 days of labguard's change log when ``AzureWebJobsStorage`` is set, and
writes one self-contained HTML file (:mod:`shared.core.report_html`), plus the JSON snapshot it was
rendered from with ``--snapshot FILE``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labguard import runner
from shared.core.report_html import render_html
from shared.core.snapshot import NoticeState, PlanEntry, build_snapshot


def _notice(result: runner.PlanResult) -> NoticeState | None:
    status = result.notice
    if status is not None:
        return NoticeState(sent=status.sent, pending=status.pending, problem=status.problem)
    if result.status == "provisioning-failed":
        return NoticeState(problem="no notice ledger: set AzureWebJobsStorage to see it")
    return None


def snapshot_of(result: runner.RunResult, changes: Any, problem: str | None, now: datetime) -> dict[str, Any]:
    entries = [
        PlanEntry(item.outcome.plan_id, item.status, item.outcome.evaluation, item.outcome.detail, _notice(item))
        for item in result.results
    ]
    return build_snapshot(
        entries,
        result.policy,
        source="labguard report",
        subscriptions=result.settings.subscriptions,
        resource_groups=result.settings.resource_groups,
        generated_at=now,
        changes=changes,
        changes_problem=problem,
        list_failures=result.list_failures,
    )


def write_report(
    flags: runner.Flags,
    html_file: str,
    snapshot_file: str | None,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Audit, render and write; returns the snapshot and the files written. Raises runner.ConfigError."""
    from shared.runtime.sweep_outputs import recent_changes

    env = os.environ if env is None else env
    targets = [Path(html_file).expanduser()] + ([Path(snapshot_file).expanduser()] if snapshot_file else [])
    for target in targets:
        if target.is_dir() or not target.parent.is_dir():
            raise runner.ConfigError(f"cannot write {target}: name a file in an existing directory")
    settings = runner.resolve_settings(env, flags, mode="audit")
    runner.require_scope(settings)
    policy = runner.read_policy(settings.policy_file, settings.mode_override)

    async def go() -> dict[str, Any]:
        result = await runner.run(settings, policy, command="audit", credential=credential)
        now = datetime.now(UTC)
        changes, problem = await recent_changes(settings, now)
        return snapshot_of(result, changes, problem, now)

    snapshot = asyncio.run(go())
    try:
        targets[0].write_text(render_html(snapshot), encoding="utf-8")
        if snapshot_file:
            targets[1].write_text(json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise runner.ConfigError(f"cannot write the report: {exc.strerror or exc}") from None
    return snapshot, targets
