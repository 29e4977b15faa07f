"""How the command shows a run: a rich table for people, JSON for scripts, one line per change."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labguard.runner import PlanResult, RunResult, unused_overrides
from shared.core.governed import GOVERNED
from shared.core.policy import Policy, Rules
from shared.core.report import evaluation_to_dict
from shared.core.snapshot import DETAIL_STATUSES
from shared.core.text import shown
from shared.runtime.reconcile import _changed_by as changed_by

# status -> (label in the STATE column, style)
STATES: dict[str, tuple[str, str]] = {
    "compliant": ("compliant", "green"),
    "fixed": ("fixed", "green"),
    "drifted": ("drifted", "yellow"),
    "exempt": ("exempt", "cyan"),
    "skipped": ("skipped", "dim"),
    "provisioning-failed": ("FAILED", "bold red"),
    "failed": ("error", "bold red"),
    "gone": ("deleted", "dim"),
    "unconverged": ("not converged", "bold red"),
    "write-failed": ("WRITE FAILED", "bold red"),
    "proof-deferred": ("written", "yellow"),
}
ORDER = (
    "fixed",
    "compliant",
    "drifted",
    "exempt",
    "skipped",
    "provisioning-failed",
    "failed",
    "gone",
    "unconverged",
    "write-failed",
    "proof-deferred",
)
MIN_PLAIN_WIDTH = 120


def console(stream: IO[str] | None = None, *, width: int | None = None) -> Console:
    """A console for stdout (or ``stream``); when it is not a terminal, wide enough to keep rows on one line."""
    stream = stream or sys.stdout
    probe = Console(file=stream)
    if probe.is_terminal:
        return probe
    columns = width or int(os.environ.get("COLUMNS", "0") or 0) or MIN_PLAIN_WIDTH
    return Console(file=stream, width=max(columns, MIN_PLAIN_WIDTH), highlight=False)


def short_sub(subscription_id: str) -> str:
    return subscription_id[:8] + "…"


def where(result: PlanResult) -> str:
    pid = result.plan_id
    return "?" if pid is None else f"{short_sub(pid.subscription_id)}/{pid.resource_group}"


def plan_name(result: PlanResult) -> str:
    pid = result.plan_id
    return result.outcome.plan_id if pid is None else pid.name


def change_text(result: PlanResult) -> str:
    """``field observed -> bound`` for each violation, joined (what enforce writes / wrote)."""
    evaluation = result.outcome.evaluation
    if evaluation is None:
        return ""
    parts = []
    for finding in evaluation.violations:
        observed = "(not set)" if finding.observed is None else finding.observed
        parts.append(f"{finding.leaf} {observed} → {finding.patch_value}")
    return ", ".join(parts)


def patch_text(patch: Mapping[str, Any]) -> str:
    """``leaf → value`` for each leaf of a merge-patch body."""
    parts: list[str] = []

    def walk(node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value)
            else:
                parts.append(f"{key} → {value}")

    walk(patch)
    return ", ".join(parts)


def findings_lines(result: PlanResult) -> list[tuple[str, str]]:
    """(text, style) lines for the FINDINGS column."""
    outcome = result.outcome
    evaluation = outcome.evaluation
    status = outcome.status
    lines: list[tuple[str, str]] = []
    if status in ("drifted", "fixed") and evaluation is not None:
        lines += [(line, "") for line in change_text(result).split(", ") if line]
        who = changed_by(evaluation.plan.modified_by, evaluation.plan.modified_by_type)
        if who and evaluation.violations:  # whose change enforce sets back (systemData: the last writer)
            lines.append((f"last changed by {who}", "dim"))
    elif status == "exempt" and evaluation is not None:
        lines.append((f"exempt: {evaluation.reason}", ""))
        if evaluation.violations:
            lines.append(("not enforced: " + change_text(result), "dim"))
    elif status == "skipped" and evaluation is not None:
        lines.append((f"{evaluation.reason}: left alone until it settles", ""))
    elif status == "provisioning-failed" and evaluation is not None:
        plan = evaluation.plan
        lines.append((str(evaluation.reason), ""))
        if plan.error and plan.error.message:
            lines.append((shown(plan.error.message, quote=False, limit=160), "dim"))
        email = plan.support.email if plan.support and plan.support.email else None
        contact = shown(email, quote=False, limit=80) if email else None
        if result.notice is not None:
            lines.append((result.notice.describe(contact), ""))
        else:
            lines.append((f"support contact: {contact or 'none listed'} (the Functions send the notice)", ""))
    elif result.write_denied is not None:
        lines.append((result.write_denied.describe(), ""))
        if result.refused_patch:
            lines.append(("still drifted; not written: " + patch_text(result.refused_patch), "dim"))
    elif status in ("failed", "gone", "unconverged", "write-failed", "proof-deferred"):
        lines.append((outcome.detail or status, ""))
    elif status == "drifted" and outcome.detail:  # e.g. changed since the preview; not written
        lines.append((outcome.detail, ""))
    if evaluation is not None:
        for finding in evaluation.findings:
            if finding.rule == "exemption.expired":
                lines.append((f"its exemption ended {shown(finding.observed, quote=False)}", "dim"))
            elif finding.rule == "exemption.invalid-until":
                lines.append((f"exemption ignored: {finding.path} {shown(finding.observed)} is not a date", "dim"))
    return lines


def state_text(status: str, *, dry_run: bool = False, denied: bool = False) -> Text:
    if denied:
        return Text("not written", style="bold red")
    label, style = STATES.get(status, (status, ""))
    if status == "drifted" and dry_run:
        label = "would fix"
    return Text(label, style=style)


def plans_table(result: RunResult) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("PLAN", no_wrap=True)
    table.add_column("SUBSCRIPTION / RESOURCE GROUP", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("FINDINGS", overflow="fold")
    previous = None
    for item in result.sorted_results():
        pid = item.plan_id
        group = (pid.subscription_id, pid.resource_group.lower()) if pid else None
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        findings = Text()
        for index, (line, style) in enumerate(findings_lines(item)):
            if index:
                findings.append("\n")
            findings.append(line, style=style)
        table.add_row(
            plan_name(item),
            where(item),
            state_text(item.status, dry_run=result.command == "enforce", denied=item.write_denied is not None),
            findings,
        )
        for lab in result.labs_of(item.plan_id):  # its labs, indented under it
            table.add_row(*_lab_row(lab, result))
    orphans = result.labs_of(None)
    if orphans:
        table.add_section()
        table.add_row(Text("labs naming no plan in scope", style="dim"), "", "", "")
        for lab in orphans:
            table.add_row(*_lab_row(lab, result))
    return table


def lab_lines(outcome: Any) -> list[tuple[str, str]]:
    """(text, style) FINDINGS lines of one lab: what is (or would be) fixed, what is only reported and why."""
    evaluation = outcome.lab
    if evaluation is None:
        return [(outcome.detail or outcome.status, "")]
    lines: list[tuple[str, str]] = []
    for finding in evaluation.findings:
        key = finding.leaf
        observed = "(not set)" if finding.observed is None else finding.observed
        if finding.is_drift:
            lines.append((f"{key} {observed} → {finding.patch_value}", ""))
        elif finding.rule.startswith("lab.") or finding.rule == "unknown-value":
            lines.append((f"{key}: {shown(finding.message, quote=False, limit=160)}", "dim"))
    who = changed_by(evaluation.lab.last_modified_by, evaluation.lab.last_modified_by_type)
    if outcome.status in ("drifted", "fixed") and evaluation.violations and who:
        lines.append((f"last changed by {who}", "dim"))  # whose change enforce sets back
    if outcome.status in ("exempt", "skipped", "provisioning-failed", "failed") and evaluation.reason:
        lines.insert(0, (str(evaluation.reason), ""))
    elif outcome.status in ("failed", "gone", "unconverged", "write-failed", "proof-deferred"):
        lines.insert(0, (outcome.detail or outcome.status, ""))
    return lines


def _lab_row(outcome: Any, result: RunResult) -> tuple[Text, str, Text, Text]:
    evaluation = outcome.lab
    name = evaluation.lab.name if evaluation is not None else outcome.plan_id.rsplit("/", 1)[-1]
    rg = evaluation.lab.id.resource_group if evaluation is not None else ""
    findings = Text()
    for index, (line, style) in enumerate(lab_lines(outcome)):
        if index:
            findings.append("\n")
        findings.append(line, style=style)
    return Text(f"  └ lab {name}"), rg, state_text(outcome.status, dry_run=result.command == "enforce"), findings


def summary_line(result: RunResult) -> str:
    counts = result.counts
    denied = sum(1 for r in result.results if r.write_denied is not None)
    counts["failed"] -= denied
    total = sum(counts.values()) + denied
    parts = [
        f"{counts[s]} {STATES[s][0].lower() if s != 'provisioning-failed' else 'failed'}" for s in ORDER if counts[s]
    ]
    if result.command == "enforce" and result.dry_run and counts["drifted"]:
        parts = [p.replace("drifted", "to fix") for p in parts]
    if denied:
        parts.append(f"{denied} not written")
    plans = f"{total} plan{'s' if total != 1 else ''}"
    if result.interrupted is not None:
        plans += " checked before the interrupt"
    return f"{plans}: {', '.join(parts) or 'none found'} ({result.duration_s:.1f} s)"


def header_lines(result: RunResult) -> list[str]:
    settings = result.settings
    if result.files:
        return [
            "labguard audit --from-file: saved plan JSON, no Azure call; nothing is changed "
            "(→ shows what enforce would write)",
            f"policy   {result.policy.source}",
            f"files    {', '.join(result.files)}",
        ]
    subs = ", ".join(settings.subscriptions)
    groups = ", ".join(settings.resource_groups) if settings.resource_groups else "all resource groups"
    if result.command == "audit":
        what = "labguard audit: report only, nothing is changed (→ shows what enforce would write)"
    elif result.dry_run:
        what = "labguard enforce --dry-run: the patches enforce would send, nothing is changed"
    else:
        what = "labguard enforce: minimal patches, only ever tightening"
    return [
        what,
        f"mode     {mode_line(result)}",
        f"policy   {result.policy.source}",
        f"endpoint {settings.arm_endpoint}",
        f"scope    {len(settings.subscriptions)} subscription{'s' if len(settings.subscriptions) != 1 else ''} "
        f"({subs}); {groups}",
    ]


def mode_line(result: RunResult) -> str:
    """Which mode this run is in and where that came from; and the Functions' mode, from the same rule."""
    this = {"audit": "audit", "enforce": "enforce --dry-run: nothing is sent" if result.dry_run else "enforce"}
    line = f"{this[result.command]} (the command decides)"
    if result.functions_mode is not None:
        mode, source = result.functions_mode
        line += f"; with these settings the Functions run in {mode} ({source})"
    return line


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def findings_words(result: RunResult) -> list[tuple[str, str]]:
    """(fail-on name, words) for each finding of the run; the name is None-like "" for unreadable ones."""
    counts = result.counts
    words: list[tuple[str, str]] = []
    drifted = counts["drifted"]
    if drifted:
        verb = "would be fixed" if result.command == "enforce" else "drifted"
        words.append(("drift", f"{_plural(drifted, 'plan')} {verb}"))
    denied = sum(1 for r in result.results if r.write_denied is not None)
    other = sum(1 for r in result.results if r.write_failed and r.write_denied is None) + counts["unconverged"]
    if denied:
        words.append(("drift", f"{_plural(denied, 'plan')} checked but not written (missing permission)"))
    if other:
        words.append(("drift", f"{_plural(other, 'plan')} not converged (the patch did not land)"))
    if counts["provisioning-failed"]:
        n = counts["provisioning-failed"]
        words.append(("failed-provisioning", f"{_plural(n, 'plan')} failed to provision (its owner's to fix)"))
    if counts["write-failed"]:
        n = counts["write-failed"]
        words.append(("drift", f"{_plural(n, 'plan')} failed after labguard's own write (the admin's to fix)"))
    if counts["proof-deferred"]:
        n = counts["proof-deferred"]
        words.append(("drift", f"{_plural(n, 'plan')} written, still being applied (audit again to prove)"))
    expiring = result.expiring()
    if expiring:
        words.append(("exempt-expiring", f"{_plural(len(expiring), 'exemption')} ending within 14 days"))
    if result.empty_scopes:
        words.append(("empty-scope", f"{_plural(len(result.empty_scopes), 'scope')} with no lab plans"))
    unreadable = sum(1 for r in result.results if r.status == "failed" and not r.write_failed)
    if unreadable:
        words.append(("", f"{unreadable} could not be read"))
    if result.list_failures:
        words.append(("", f"{_plural(len(result.list_failures), 'scope')} could not be listed"))
    return words


def verdict_line(result: RunResult) -> Text:
    code = result.exit_code
    words = findings_words(result)
    failing = [text for name, text in words if not name or name in result.fail_on]
    ignored = [text for name, text in words if name and name not in result.fail_on]
    note = f" (not failing the run, --fail-on: {'; '.join(ignored)})" if ignored else ""
    counts = result.counts
    if code == 0:
        if result.command == "enforce" and not result.dry_run and counts["fixed"]:
            return Text(
                f"exit 0: fixed {counts['fixed']}; every enforceable plan in scope is compliant{note}", style="green"
            )
        return Text(f"exit 0: every plan in scope is compliant (or exempt / skipped){note}", style="green")
    if code == 130:
        return Text("exit 130: interrupted; see above for what was changed, in flight and not reached", style="yellow")
    if code == 3:
        trouble = [text for name, text in words if not name]
        found = [text for name, text in words if name and name in result.fail_on]
        also = f"; also found: {'; '.join(found)}" if found else ""
        return Text(
            f"exit 3: Azure could not be reached or kept failing ({'; '.join(trouble)}): try again later{also}",
            style="red",
        )
    return Text(f"exit {code}: " + "; ".join(failing) + note, style="yellow")


def empty_scope_lines(result: RunResult) -> list[str]:
    lines = []
    for scope in result.empty_scopes:
        sub, _, group = scope.removeprefix("/subscriptions/").partition("/resourceGroups/")
        if group:
            hint = f"check the name (-g / LABGUARD_RESOURCE_GROUPS; `az group list --subscription {sub} -o table`)"
            what = f"resource group {group} in subscription {sub}"
        else:
            hint = "check the id (-s / LABGUARD_SUBSCRIPTIONS) and that your identity can read lab plans there"
            what = f"subscription {sub}"
        lines.append(f"no lab plans in {what}: {hint}, or pass --allow-empty if it is empty on purpose")
    return lines


def interrupted_lines(result: RunResult) -> list[Text]:
    """What an interrupted run had done: changed, in flight (and what became of each), not reached."""
    report = result.interrupted
    if report is None:
        return []
    lines = [Text("labguard: interrupted (Ctrl-C): no new change was started", style="bold yellow")]
    changed = [r for r in result.sorted_results() if r.status == "fixed"]
    applied = [w for w in report.in_flight if w.result == "applied"]
    word = "would change" if result.dry_run or result.command == "audit" else "changed"
    lines.append(Text(f"{word} before the interrupt: {len(changed)}" + (" (listed above)" if changed else "")))
    if report.in_flight:
        waited = "not waited for (second Ctrl-C)" if report.abandoned_wait else "waited for"
        lines.append(Text(f"in flight when interrupted: {len(report.in_flight)} ({waited})"))
        for write in report.in_flight:
            what = {
                "applied": "applied",
                "refused": f"refused: {write.detail}",
                "unproven": f"{write.detail or 'sent; not proven'}: run `labguard audit` to see",
                "failed": f"{write.detail or 'sent; the plan was left Failed'}: run `labguard audit` to see",
                "abandoned": "sent, outcome unknown: run `labguard audit` to see",
            }.get(write.result, f"{write.result}: {write.detail}")
            lines.append(
                Text(
                    f"  {write.plan_id.name} ({short_sub(write.plan_id.subscription_id)}/"
                    f"{write.plan_id.resource_group}): {what}"
                )
            )
    checked = len(result.results)
    lines.append(
        Text(f"checked: {checked} plan{'s' if checked != 1 else ''}; changed in all: {len(changed) + len(applied)}")
    )
    lines.append(
        Text(
            f"not reached: {len(report.not_reached)} listed plan{'s' if len(report.not_reached) != 1 else ''}"
            + (", nothing written to them" if report.not_reached else "")
        )
    )
    for path in report.not_reached[:20]:
        lines.append(Text(f"  {path.rsplit('/', 1)[-1]}", style="dim"))
    if len(report.not_reached) > 20:
        lines.append(Text(f"  ... and {len(report.not_reached) - 20} more (--json lists all)", style="dim"))
    if report.scopes_not_listed:
        lines.append(Text("scopes not fully listed (more plans may be there): " + ", ".join(report.scopes_not_listed)))
    return lines


def emit(out: Console, renderable: Any) -> None:
    """Print a table; on a plain stream without the padding rich adds at line ends (clean to paste)."""
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    out.file.write("\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n")


def print_header(out: Console, result: RunResult) -> None:
    for line in header_lines(result):
        out.print(line, style="bold" if line.startswith("labguard") else None, soft_wrap=True)
    out.print()


def print_run(out: Console, result: RunResult, *, changes_shown: bool = False, header: bool = True) -> None:
    if header:
        print_header(out, result)
    if result.command == "enforce" and changes_shown:
        attention = [r for r in result.sorted_results() if r.status not in ("fixed", "compliant")]
        if result.dry_run:
            attention = [r for r in attention if r.status != "drifted"]
        if attention:
            rest = RunResult(result.command, result.dry_run, result.settings, result.policy, attention)
            out.print("Plans labguard did not change:")
            emit(out, plans_table(rest))
    elif result.results:
        emit(out, plans_table(result))
    for scope, error in result.list_failures:
        out.print(Text(f"could not list {scope}: {error}", style="red"), soft_wrap=True)
    for scope in result.not_registered:
        out.print(f"{scope}: Microsoft.LabServices is not registered, no plans here", soft_wrap=True)
    for line in empty_scope_lines(result):
        out.print(Text(line, style="yellow"), soft_wrap=True)
    for line in unused_override_lines(result):
        out.print(Text(f"warning: {line}", style="yellow"), soft_wrap=True)
    for plan, end in result.expiring():
        out.print(Text(f"exemption of {plan_name(plan)} ends {end.isoformat()}", style="cyan"), soft_wrap=True)
    if result.interrupted is not None:
        out.print()
        for text in interrupted_lines(result):
            out.print(text, soft_wrap=True)
    out.print()
    out.print(summary_line(result), soft_wrap=True)
    out.print(verdict_line(result), soft_wrap=True)


def unused_override_lines(result: RunResult) -> list[str]:
    if result.interrupted is not None:  # not every plan was seen: "matched nothing" would be a guess
        return unused_overrides(result.policy, result.configured)
    return unused_overrides(result.policy, result.configured, result.results, run=result.settings)


def run_json(result: RunResult) -> dict[str, Any]:
    settings = result.settings
    plans = []
    for item in result.sorted_results():
        outcome = item.outcome
        pid = item.plan_id
        entry: dict[str, Any] = {
            "id": pid.path if pid else outcome.plan_id,
            "subscriptionId": pid.subscription_id if pid else None,
            "resourceGroup": pid.resource_group if pid else None,
            "name": pid.name if pid else None,
            "status": outcome.status,
            "detail": outcome.detail if outcome.status in (*DETAIL_STATUSES, "skipped", "exempt") else None,
        }
        if outcome.evaluation is not None:
            evaluation = evaluation_to_dict(outcome.evaluation)
            entry["reason"] = evaluation["reason"]
            entry["findings"] = evaluation["findings"]
            entry["patch"] = evaluation["patch"]
            plan = outcome.evaluation.plan
            entry["changedBy"] = changed_by(plan.modified_by, plan.modified_by_type)
        if item.write_denied is not None:
            entry["writeDenied"] = {
                "principalId": item.write_denied.principal_id,
                "scope": item.write_denied.scope,
                "action": "Microsoft.LabServices/labPlans/write",
                "role": item.write_denied.role,
                "message": item.write_denied.describe(),
            }
        if item.notice is not None:
            entry["notice"] = {
                "sent": list(item.notice.sent),
                "pending": list(item.notice.pending),
                "problem": item.notice.problem,
            }
        entry["labs"] = [lab_json(lab) for lab in result.labs_of(pid)]
        plans.append(entry)
    return {
        "command": result.command,
        "dryRun": result.dry_run,
        "policy": result.policy.source,
        "endpoint": settings.arm_endpoint,
        "scope": {"subscriptions": list(settings.subscriptions), "resourceGroups": list(settings.resource_groups)},
        "summary": {status: result.counts[status] for status in ORDER if result.counts[status]},
        "plans": plans,
        "labsWithoutPlan": [lab_json(lab) for lab in result.labs_of(None)],
        "listFailures": [{"scope": scope, "error": error} for scope, error in result.list_failures],
        **({"files": list(result.files)} if result.files else {}),
        "notRegistered": list(result.not_registered),
        "emptyScopes": list(result.empty_scopes),
        "unusedOverrides": unused_override_lines(result),
        "exemptionsEnding": [
            {"id": plan.plan_id.path if plan.plan_id else plan.outcome.plan_id, "until": end.isoformat()}
            for plan, end in result.expiring()
        ],
        "mode": {
            "run": "audit" if result.command == "audit" or result.dry_run else "enforce",
            "functions": result.functions_mode[0] if result.functions_mode else None,
            "functionsModeFrom": result.functions_mode[1] if result.functions_mode else None,
        },
        "failOn": sorted(result.fail_on),
        "interrupted": interrupted_json(result),
        "exitCode": result.exit_code,
        "durationSeconds": round(result.duration_s, 3),
    }


def lab_json(outcome: Any) -> dict[str, Any]:
    """One lab for ``--json``: its id, plan, status, findings (lab keys) and the patch sent or to send."""
    evaluation = outcome.lab
    lab = evaluation.lab if evaluation is not None else None
    return {
        "id": lab.id.path if lab is not None else outcome.plan_id,
        "labPlanId": lab.lab_plan_id_raw if lab is not None else None,
        "osType": lab.os_type if lab is not None else None,
        "status": outcome.status,
        "reason": evaluation.reason if evaluation is not None else None,
        "detail": outcome.detail,
        "findings": [
            {
                "rule": f.rule,
                "field": f.path,
                "observed": f.observed,
                "allowed": f.allowed,
                "severity": f.severity,
                "message": f.message,
                "patchValue": f.patch_value,
            }
            for f in (evaluation.findings if evaluation is not None else ())
        ],
        "patch": dict(evaluation.patch) if evaluation is not None else {},
        "changedBy": changed_by(lab.last_modified_by, lab.last_modified_by_type) if lab is not None else None,
    }


def interrupted_json(result: RunResult) -> dict[str, Any] | None:
    report = result.interrupted
    if report is None:
        return None
    return {
        "changed": [
            r.plan_id.path if r.plan_id else r.outcome.plan_id for r in result.sorted_results() if r.status == "fixed"
        ],
        "inFlight": [
            {"id": w.plan_id.path, "result": w.result, "detail": w.detail, "patch": dict(w.patch)}
            for w in report.in_flight
        ],
        "notReached": list(report.not_reached),
        "scopesNotListed": list(report.scopes_not_listed),
        "waitedForInFlight": not report.abandoned_wait,
    }


def change_line(result: PlanResult, *, dry_run: bool) -> Text | None:
    """One line per plan enforce patched (or would patch); None for every other outcome."""
    if result.status not in ("fixed", "drifted"):
        return None
    verb = "would fix" if dry_run or result.status == "drifted" else "fixed"
    line = Text()
    line.append(f"{verb:<9} ", style="yellow" if verb == "would fix" else "green")
    line.append(f"{plan_name(result)}", style="bold")
    line.append(f" ({where(result)}): {change_text(result)}")
    evaluation = result.outcome.evaluation
    who = changed_by(evaluation.plan.modified_by, evaluation.plan.modified_by_type) if evaluation else None
    if who:  # whose change this sets back (systemData's last writer)
        line.append(f"; last changed by {who}", style="dim")
    return line


# ------------------------------------------------------------------------------------ check-policy


def _rule_rows(rules: Rules) -> list[tuple[str, str]]:
    return [(setting.policy_key, setting.bound_text(rules.shown(setting))) for setting in GOVERNED]


def _scope_label(scope: str) -> str:
    kind, _, key = scope.partition(" ")
    if kind == "subscription":
        return f"subscription {short_sub(key)}"
    if kind == "resource":  # "resource group <sub>/<rg>"
        sub, _, group = key.removeprefix("group ").partition("/")
        return f"{short_sub(sub)}/{group}"
    return scope


def policy_tables(policy: Policy, *, per_table: int = 3) -> Iterable[Table]:
    scopes = policy.describe()
    baseline = _rule_rows(scopes.pop("baseline"))
    overrides = list(scopes.items())
    chunks: Sequence[list[tuple[str, Rules]]] = [
        overrides[i : i + per_table] for i in range(0, len(overrides), per_table)
    ] or [[]]
    for chunk in chunks:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("SETTING", no_wrap=True)
        table.add_column("baseline", no_wrap=True)
        columns = [_rule_rows(rules) for _, rules in chunk]
        for scope, _ in chunk:
            table.add_column(_scope_label(scope), no_wrap=True)
        for index, (key, value) in enumerate(baseline):
            cells: list[Text | str] = [key, value]
            for rows in columns:
                other = rows[index][1]
                cells.append(Text(other + " *", style="bold") if other != value else Text(other, style="dim"))
            table.add_row(*cells)
        yield table


def policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "source": policy.source,
        "mode": policy.mode,
        "exemptionTag": policy.exemption_tag,
        "scopes": {scope: rules.to_policy_dict() for scope, rules in policy.describe().items()},
    }


def print_policy(out: Console, policy: Policy) -> None:
    subs, groups = len(policy.subscriptions), len(policy.resource_groups)
    out.print(
        f"{policy.source}: valid. mode {policy.mode}; exemption tag {policy.exemption_tag} "
        f"(+ {policy.exemption_until_tag}); {subs} subscription override{'s' if subs != 1 else ''}, "
        f"{groups} resource group override{'s' if groups != 1 else ''}",
        soft_wrap=True,
    )
    for scope in policy.describe():
        if scope != "baseline":
            out.print(f"  {_scope_label(scope) + ':':<32} {scope}", soft_wrap=True)
    out.print()
    for table in policy_tables(policy):
        emit(out, table)
        out.print()
    if policy.subscriptions or policy.resource_groups:
        out.print("* differs from the baseline. Precedence: resource group > subscription > baseline.")
