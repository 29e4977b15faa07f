"""The compliance page: one self-contained HTML file rendered from a snapshot (:mod:`shared.core.snapshot`).

Self-contained on purpose: inline CSS and inline SVG only, no script, font, image or stylesheet from
anywhere, and a Content-Security-Policy that forbids loading any (the page is opened from a blob
container, a mail attachment or a laptop's disk). Every value is escaped where it is written into the
page, whether or not it came from ARM: plan owners write tags, error text and support info.

Numbers carry ``data-*`` attributes so tests (and scripts) read them from the DOM, not from layout.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.core.snapshot import ATTENTION_STATUSES, DETAIL_STATUSES

__all__ = ["render_html"]

# status -> (label, colour). Colours pass WCAG AA on white with the label beside them.
_STATES: dict[str, tuple[str, str]] = {
    "compliant": ("compliant", "#2e7d32"),
    "fixed": ("fixed", "#1565c0"),
    "drifted": ("drifted", "#ef6c00"),
    "unconverged": ("written, did not take", "#d84315"),
    "proof-deferred": ("written, proof pending", "#0277bd"),
    "exempt": ("exempt", "#6a1b9a"),
    "skipped": ("skipped", "#757575"),
    "provisioning-failed": ("failed to provision", "#c62828"),
    "write-failed": ("labguard's write failed", "#b71c1c"),
    "failed": ("could not be checked", "#ad1457"),
    "gone": ("deleted", "#9e9e9e"),
}
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa;line-height:1.4}
header{background:#0b3d62;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}
main{padding:20px 32px;max-width:1280px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin:0 0 18px}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 110px;border-radius:8px;padding:10px 12px;color:#fff;min-width:110px}
.card .n{font-size:28px;font-weight:700;display:block}
.card .l{font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.zero{opacity:.35}
.verdict{font-size:15px;margin:12px 0 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
.state{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}
.muted{color:#57606a}
.bars td.rg{white-space:nowrap;width:30%}
.bars td.n{width:60px;text-align:right}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:8px 0 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.empty{color:#57606a;font-style:italic}
.warn{color:#9a6700}
tr.lab td:first-child{padding-left:26px}
tr.lab td{background:#fbfcfd}
.cards.labs .card{flex:1 1 90px;padding:6px 10px}
.cards.labs .card .n{font-size:20px}
.reported{color:#57606a}
footer{padding:0 32px 24px;font-size:12px;color:#57606a}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _state(status: str) -> str:
    label, colour = _STATES.get(status, (status, "#57606a"))
    return f'<span class="state" style="background:{colour}" data-status="{_e(status)}">{_e(label)}</span>'


def render_html(snapshot: Mapping[str, Any]) -> str:
    """The whole page as one string (UTF-8 when written)."""
    totals: Mapping[str, Any] = snapshot.get("totals") or {}
    mode = str(snapshot.get("mode") or "audit")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        "<title>labguard compliance</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        "<header><h1>labguard compliance</h1>",
        f'<p>Generated <span data-generated-at="{_e(snapshot.get("generatedAt"))}">{_e(snapshot.get("generatedAt"))}'
        f'</span> by {_e(snapshot.get("source"))} &middot; mode <b data-mode="{_e(mode)}">{_e(mode)}</b>'
        f" &middot; policy <code>{_e(snapshot.get('policy'))}</code></p>",
        f"<p>{_e(_scope_text(snapshot.get('scope') or {}))}</p></header><main>",
        _totals(totals, mode, snapshot.get("labTotals") or {}),
        _bars(snapshot.get("resourceGroups") or []),
        _failed(snapshot.get("failedPlans") or [], snapshot.get("failedLabs") or []),
        _exemptions(snapshot.get("exemptions") or []),
        _changes(snapshot),
        _plans(snapshot.get("plans") or [], mode, snapshot.get("labsWithoutPlan") or []),
        _list_failures(snapshot.get("listFailures") or []),
        "</main><footer>labguard reads lab plans and labs and, in enforce mode only, tightens them; it never "
        "loosens a setting. Values written by plan and lab owners (tags, errors, support info) are shown as "
        "written.</footer>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _scope_text(scope: Mapping[str, Any]) -> str:
    subs = list(scope.get("subscriptions") or [])
    groups = list(scope.get("resourceGroups") or [])
    text = f"{len(subs)} subscription{'s' if len(subs) != 1 else ''}"
    if subs:
        text += " (" + ", ".join(str(s) for s in subs) + ")"
    return text + ("; resource groups " + ", ".join(str(g) for g in groups) if groups else "; all resource groups")


def _totals(totals: Mapping[str, Any], mode: str, lab_totals: Mapping[str, Any] | None = None) -> str:
    cards = [
        f'<div class="card" style="background:#24292f"><span class="n" data-total="plans">{_n(totals.get("plans"))}'
        '</span><span class="l">plans</span></div>'
    ]
    for status, (label, colour) in _STATES.items():
        count = _n(totals.get(status))
        if status == "gone" and not count:
            continue
        zero = " zero" if not count else ""
        cards.append(
            f'<div class="card{zero}" style="background:{colour}"><span class="n" data-total="{status}">{count}'
            f'</span><span class="l">{_e(label)}</span></div>'
        )
    labs = lab_totals or {}
    lab_cards = ""
    if _n(labs.get("labs")):
        row = [
            f'<div class="card" style="background:#24292f"><span class="n" data-lab-total="labs">{_n(labs.get("labs"))}'
            '</span><span class="l">labs</span></div>'
        ]
        for status, (label, colour) in _STATES.items():
            count = _n(labs.get(status))
            if not count:
                continue
            row.append(
                f'<div class="card" style="background:{colour}"><span class="n" data-lab-total="{status}">{count}'
                f'</span><span class="l">{_e(label)}</span></div>'
            )
        lab_cards = f'<h3>Labs</h3><div class="cards labs">{"".join(row)}</div>'
    attention = sum(_n(totals.get(status)) for status in ATTENTION_STATUSES)
    lab_attention = sum(_n(labs.get(status)) for status in ATTENTION_STATUSES)
    if _n(totals.get("plans")) == 0:
        verdict = (
            '<p class="verdict warn">No lab plans found in scope: check the subscriptions and resource groups.</p>'
        )
    elif attention == 0 and lab_attention == 0:
        what = "plan and lab" if _n(labs.get("labs")) else "plan"
        verdict = f'<p class="verdict">Every {what} in scope is compliant (or exempt, or left alone while busy).</p>'
    else:
        what = "would be fixed in enforce mode" if mode == "audit" else "are left to fix"
        counted = [
            f'<b data-attention="{attention}">{attention}</b> plan{"s" if attention != 1 else ""}',
            f'<b data-lab-attention="{lab_attention}">{lab_attention}</b> lab{"s" if lab_attention != 1 else ""}',
        ]
        if not _n(labs.get("labs")):
            counted = counted[:1]
        verdict = (
            f'<p class="verdict warn">{" and ".join(counted)} need attention: drift that {what} (or that labguard '
            "only reports), a write that did not take or is not yet proven, failed provisioning, or resources that "
            "could not be checked.</p>"
        )
    return (
        f'<section id="totals"><h2>Totals</h2><div class="cards">{"".join(cards)}</div>{lab_cards}{verdict}</section>'
    )


def _bars(groups: Sequence[Mapping[str, Any]]) -> str:
    if not groups:
        return '<section id="groups"><h2>By resource group</h2><p class="empty">No plans.</p></section>'
    rows = []
    for group in groups:
        counts: Mapping[str, Any] = group.get("counts") or {}
        total = max(_n(group.get("plans")), 1)
        x = 0.0
        rects = []
        for status, (label, colour) in _STATES.items():
            count = _n(counts.get(status))
            if not count:
                continue
            width = 100.0 * count / total
            rects.append(
                f'<rect x="{x:.3f}%" y="0" width="{width:.3f}%" height="18" fill="{colour}" '
                f'data-status="{status}" data-count="{count}"><title>{count} {_e(label)}</title></rect>'
            )
            x += width
        sub = str(group.get("subscriptionId") or "")
        rows.append(
            f'<tr data-group="{_e(group.get("resourceGroup"))}" data-subscription="{_e(sub)}">'
            f'<td class="rg"><b>{_e(group.get("resourceGroup"))}</b> <span class="muted">{_e(sub[:8])}…</span></td>'
            f'<td><svg width="100%" height="18" role="img" aria-label="{_e(_bar_label(counts))}" '
            f'xmlns="http://www.w3.org/2000/svg"><rect x="0" y="0" width="100%" height="18" fill="#eaeef2"/>'
            f"{''.join(rects)}</svg></td>"
            f'<td class="n" data-group-total="{_n(group.get("plans"))}">{_n(group.get("plans"))}</td></tr>'
        )
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{_e(label)}</span>' for label, colour in _STATES.values()
    )
    return (
        '<section id="groups"><h2>By resource group</h2><table class="bars"><tbody>'
        + "".join(rows)
        + f'</tbody></table><div class="legend">{legend}</div></section>'
    )


def _bar_label(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{_n(n)} {_STATES.get(s, (s, ''))[0]}" for s, n in counts.items())


def _failed(plans: Sequence[Mapping[str, Any]], labs: Sequence[Mapping[str, Any]] = ()) -> str:
    if not plans and not labs:
        body = '<p class="empty">No plan or lab has failed provisioning.</p>'
    else:
        rows = []
        for plan in plans:
            failure: Mapping[str, Any] = plan.get("failure") or {}
            notice = plan.get("notice")
            notice_text = (
                (notice or {}).get("text") if notice else "unknown here (no notice ledger configured for this run)"
            )
            rows.append(
                f'<tr data-plan="{_e(plan.get("name"))}"><td><b>{_e(plan.get("name"))}</b><br>'
                f'<span class="muted">{_e(plan.get("resourceGroup"))}</span></td>'
                f"<td><code>{_e(failure.get('code') or '(no code)')}</code><br>{_e(failure.get('message') or '')}</td>"
                f"<td>{_e(failure.get('timestamp') or '')}</td>"
                f"<td>{_e(failure.get('contact') or 'none listed')}</td>"
                f'<td data-notice="{_e(notice_text)}">{_e(notice_text)}</td></tr>'
            )
        for lab in labs:
            failure = lab.get("failure") or {}
            notice = lab.get("notice")
            notice_text = (notice or {}).get("text") if notice else "unknown here (no notice ledger configured)"
            plan_name = str(lab.get("labPlanId") or "").rstrip("/").rsplit("/", 1)[-1] or "no plan named"
            rows.append(
                f'<tr data-lab="{_e(lab.get("name"))}"><td><b>lab {_e(lab.get("name"))}</b><br>'
                f'<span class="muted">{_e(lab.get("resourceGroup"))}</span></td>'
                f"<td><code>{_e(failure.get('code') or '(no code)')}</code><br>{_e(failure.get('message') or '')}</td>"
                f"<td>{_e(failure.get('timestamp') or '')}</td>"
                f"<td>those of its plan {_e(plan_name)}</td>"
                f'<td data-notice="{_e(notice_text)}">{_e(notice_text)}</td></tr>'
            )
        body = (
            "<table><thead><tr><th>Plan or lab</th><th>Error</th><th>Since</th><th>Support contact</th>"
            f"<th>Notice</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    count = f"{len(plans)}" + (f" + {len(labs)} lab{'s' if len(labs) != 1 else ''}" if labs else "")
    title = "Failed plans and labs" if labs else "Failed plans"
    return f'<section id="failed"><h2>{title} <span class="muted">({count})</span></h2>{body}</section>'


def _exemptions(exemptions: Sequence[Mapping[str, Any]]) -> str:
    if not exemptions:
        body = '<p class="empty">No plan or lab carries an exemption tag.</p>'
    else:
        rows = []
        for item in exemptions:
            state = str(item.get("state") or "")
            days = item.get("daysLeft")
            if state == "ended":
                when = f"ended {_e(item.get('until'))}: checked as usual"
            elif state == "invalid-date":
                when = f"end date {_e(item.get('untilRaw'))} is not a date: checked as usual"
            elif item.get("until"):
                when = f"until {_e(item.get('until'))} ({_n(days)} day{'s' if days != 1 else ''} left)"
            else:
                when = "no end date"
            cls = ' class="warn"' if state in ("ending-soon", "invalid-date") else ""
            lab = item.get("kind") == "lab"
            rows.append(
                f'<tr data-{"lab" if lab else "plan"}="{_e(item.get("name"))}" data-exemption-state="{_e(state)}">'
                f"<td><b>{_e(item.get('name'))}</b>{' (lab)' if lab else ''}<br>"
                f"<span class='muted'>{_e(item.get('resourceGroup'))}</span></td>"
                f'<td>{_e(item.get("reason"))}</td><td{cls} data-until="{_e(item.get("until") or "")}">{when}</td>'
                "</tr>"
            )
        body = (
            "<table><thead><tr><th>Plan or lab</th><th>Reason</th><th>End date</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        f'<section id="exemptions"><h2>Exemptions <span class="muted">({len(exemptions)})</span></h2>{body}</section>'
    )


def _changes(snapshot: Mapping[str, Any]) -> str:
    changes: Sequence[Mapping[str, Any]] = snapshot.get("changes") or []
    days = _n(snapshot.get("changesWindowDays")) or 7
    problem = snapshot.get("changesProblem")
    title = f"Changes labguard made in the last {days} days"
    if problem:
        body = f'<p class="warn">{_e(problem)}</p>'
    elif not changes:
        body = '<p class="empty">None recorded.</p>'
    else:
        rows = []
        for change in changes:
            fields = "<br>".join(
                f"<code>{_e(c.get('field'))}</code> {_e(c.get('observed') or '(not set)')} &rarr; {_e(c.get('new'))}"
                for c in change.get("changes") or []
            )
            status = str(change.get("status") or "fixed")
            ended = _state(status) + (
                f'<br><span class="muted">{_e(change.get("detail"))}</span>' if change.get("detail") else ""
            )
            kind = str(change.get("kind") or "plan")
            what = f"<b>{_e(change.get('name'))}</b>"
            if kind == "lab":
                plan_name = change.get("labPlanName")
                what = f"lab {what}" + (f'<br><span class="muted">of plan {_e(plan_name)}</span>' if plan_name else "")
            rows.append(
                f'<tr data-change="{_e(change.get("name"))}" data-change-status="{_e(status)}" '
                f'data-change-kind="{_e(kind)}">'
                f"<td>{_e(change.get('at'))}</td>"
                f"<td>{what}</td><td>{fields}</td><td>{ended}</td>"
                f"<td>{_e(change.get('trigger'))}</td></tr>"
            )
        body = (
            "<table><thead><tr><th>When (UTC)</th><th>Plan or lab</th><th>Change</th><th>Result</th><th>Seen by</th>"
            "</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return f'<section id="changes"><h2>{_e(title)} <span class="muted">({len(changes)})</span></h2>{body}</section>'


def _findings(plan: Mapping[str, Any], mode: str) -> str:
    status = plan.get("status")
    lines: list[str] = []
    if status in ("skipped", "exempt", "provisioning-failed") and plan.get("reason"):
        lines.append(_e(plan.get("reason")))
    if status in DETAIL_STATUSES and plan.get("detail"):
        lines.append(_e(plan.get("detail")))
    for finding in plan.get("findings") or []:
        if finding.get("patchValue") is not None:
            observed = finding.get("observed")
            arrow = "fixed to" if status == "fixed" else ("would be" if mode == "audit" else "&rarr;")
            leaf = str(finding.get("field")).rsplit(".", 1)[-1]
            lines.append(
                f'<span data-finding="{_e(finding.get("rule"))}"><code>{_e(leaf)}'
                f"</code> {_e('(not set)' if observed is None else observed)} {arrow} "
                f"<b>{_e(finding.get('patchValue'))}</b></span>"
            )
        elif finding.get("rule") in ("exemption.expired", "exemption.invalid-until", "state.not-terminal"):
            lines.append(f'<span class="muted">{_e(finding.get("message"))}</span>')
    return "<br>".join(lines) or '<span class="muted">&ndash;</span>'


def _lab_findings(lab: Mapping[str, Any], mode: str) -> str:
    """A lab's findings: what is (or would be) written, and what is only reported, with why it is never patched."""
    status = lab.get("status")
    lines: list[str] = []
    if status in ("skipped", "exempt", "provisioning-failed") and lab.get("reason"):
        lines.append(_e(lab.get("reason")))
    if lab.get("detail") and (status in DETAIL_STATUSES or status == "drifted"):  # drifted: changed since preview
        lines.append(_e(lab.get("detail")))
    for finding in lab.get("findings") or []:
        leaf = str(finding.get("field")).rsplit(".", 1)[-1]
        observed = finding.get("observed")
        if finding.get("patchValue") is not None:
            arrow = "fixed to" if status == "fixed" else ("would be" if mode == "audit" else "&rarr;")
            if status == "exempt":
                arrow = "not enforced (exempt):"
            lines.append(
                f'<span data-finding="{_e(finding.get("rule"))}"><code>{_e(leaf)}'
                f"</code> {_e('(not set)' if observed is None else observed)} {arrow} "
                f"<b>{_e(finding.get('patchValue'))}</b></span>"
            )
        elif finding.get("reportedOnly") or finding.get("rule") == "unknown-value":
            lines.append(
                f'<span class="reported" data-finding="{_e(finding.get("rule"))}" data-reported-only="1">'
                f"<code>{_e(leaf)}</code> reported, never patched: {_e(finding.get('message'))}</span>"
            )
        elif finding.get("rule") in ("exemption.expired", "exemption.invalid-until", "state.not-terminal"):
            lines.append(f'<span class="muted">{_e(finding.get("message"))}</span>')
    return "<br>".join(lines) or '<span class="muted">&ndash;</span>'


def _lab_rows(labs: Sequence[Mapping[str, Any]], mode: str, plan: str) -> str:
    return "".join(
        f'<tr class="lab" data-lab="{_e(lab.get("name") or lab.get("id"))}" data-lab-status="{_e(lab.get("status"))}" '
        f'data-lab-plan="{_e(plan)}">'
        f"<td>&#x2514; lab <b>{_e(lab.get('name') or lab.get('id'))}</b>"
        + (f' <span class="muted">{_e(lab.get("osType"))}</span>' if lab.get("osType") else "")
        + f"</td><td>{_state(str(lab.get('status')))}</td><td>{_lab_findings(lab, mode)}</td></tr>"
        for lab in labs
    )


def _plans(plans: Sequence[Mapping[str, Any]], mode: str, orphans: Sequence[Mapping[str, Any]] = ()) -> str:
    if not plans:
        return '<section id="plans"><h2>Plans</h2><p class="empty">No lab plans found in scope.</p></section>'
    blocks = []
    for (sub, group), members in _grouped(plans):
        rows = "".join(
            f'<tr data-plan="{_e(p.get("name") or p.get("id"))}" data-plan-status="{_e(p.get("status"))}">'
            f"<td><b>{_e(p.get('name') or p.get('id'))}</b></td><td>{_state(str(p.get('status')))}</td>"
            f"<td>{_findings(p, mode)}</td></tr>" + _lab_rows(p.get("labs") or [], mode, str(p.get("name") or ""))
            for p in members
        )
        blocks.append(
            f'<h3>{_e(group)} <span class="muted">{_e(sub)}</span></h3>'
            f"<table><thead><tr><th style='width:26%'>Plan (its labs under it)</th><th style='width:14%'>State</th>"
            f"<th>Findings</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    if orphans:
        blocks.append(
            '<h3>Labs naming no plan in scope</h3><table><thead><tr><th style="width:26%">Lab</th>'
            f"<th style='width:14%'>State</th><th>Findings</th></tr></thead><tbody>{_lab_rows(orphans, mode, '')}"
            "</tbody></table>"
        )
    return f'<section id="plans"><h2>Plans <span class="muted">({len(plans)})</span></h2>{"".join(blocks)}</section>'


def _grouped(plans: Iterable[Mapping[str, Any]]) -> list[tuple[tuple[str, str], list[Mapping[str, Any]]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for plan in plans:
        key = (str(plan.get("subscriptionId") or "?"), str(plan.get("resourceGroup") or "(unreadable)"))
        groups.setdefault(key, []).append(plan)
    return list(groups.items())


def _list_failures(failures: Sequence[Mapping[str, Any]]) -> str:
    if not failures:
        return ""
    rows = "".join(f"<li><code>{_e(f.get('scope'))}</code>: {_e(f.get('error'))}</li>" for f in failures)
    return f'<section id="list-failures"><h2 class="warn">Scopes that could not be listed</h2><ul>{rows}</ul></section>'
