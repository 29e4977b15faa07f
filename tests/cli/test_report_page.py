"""The compliance page (``labguard report --html``) in a real headless browser (Debian's chromium).

The page is rendered by the command as a subprocess against the local endpoint, opened from disk in
chromium over the DevTools protocol; the test reads the numbers from the DOM and checks them against
``labguard audit --json`` over the same estate, and checks that hostile text written by plan owners
stays text (no element, no script, no console error).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools import estate

from .browser import chromium_path, headless_chromium
from .conftest import one_line_error

Run = Callable[..., subprocess.CompletedProcess[str]]

needs_chromium = pytest.mark.skipif(
    chromium_path() is None,
    reason="chromium is not installed: `make test` installs Debian's chromium when run as root "
    "(apt-get install -y chromium); otherwise install it to run the page tests",
)

HOSTILE_REASON = '<img src=x onerror="window.__pwned=1">exam week</td></tr><script>window.__pwned=2</script>'
HOSTILE_ERROR = "subnet '</code><script>window.__pwned=3</script>' <style>body{display:none}</style> is in use"


def seed_hostile(emu: Any) -> None:
    """An exempt plan and a Failed plan whose owners wrote markup into tags and the error text."""
    today = datetime.now(UTC).date()
    exempt = estate.plan_body(estate.spec_named(estate.EXEMPT_PLAN), today)
    body = copy.deepcopy(exempt)
    body["name"] = "hostile-exempt"
    body["id"] = body["id"].rsplit("/", 1)[0] + "/hostile-exempt"
    body["tags"]["labguard:exempt"] = HOSTILE_REASON
    body["tags"]["labguard:exempt-until"] = today.replace(year=today.year + 1).isoformat()
    emu.put_plan(body)
    failed = copy.deepcopy(body)
    failed["name"] = "hostile-failed"
    failed["id"] = body["id"].rsplit("/", 1)[0] + "/hostile-failed"
    failed["tags"] = {"department": "<b>bold</b>"}
    emu.put_plan(failed)
    emu.fail_plan(
        failed["id"],
        {"action": "Update", "code": "<i>Code</i>", "message": HOSTILE_ERROR, "timestamp": "2026-11-30T08:00:00Z"},
    )


@needs_chromium
async def test_the_page_loads_clean_and_shows_the_audits_numbers(run: Run, emu: Any, tmp_path: Path) -> None:
    seed_hostile(emu)
    page_file = tmp_path / "report.html"
    proc = run("report", "--html", str(page_file), "--snapshot", str(tmp_path / "snapshot.json"))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {page_file}" in proc.stderr and "38 plans" in proc.stderr
    assert f"; {len(estate.LAB_SPECS)} labs: " in proc.stderr
    audit = run("audit", "--json")
    plans = json.loads(audit.stdout)["plans"]
    expected = Counter(p["status"] for p in plans)
    by_group = Counter(p["resourceGroup"] for p in plans)

    html = page_file.read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html

    async with headless_chromium(tmp_path / "profile") as page:
        await page.open(page_file.as_uri())
        totals = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-total]')]"
            ".map(e => [e.dataset.total, Number(e.textContent)]))"
        )
        rows = await page.evaluate(
            "[...document.querySelectorAll('tr[data-plan-status]')].map(e => [e.dataset.plan, e.dataset.planStatus])"
        )
        groups = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('tr[data-group]')]"
            ".map(e => [e.dataset.group, Number(e.querySelector('[data-group-total]').textContent)]))"
        )
        bar_counts = await page.evaluate(
            "[...document.querySelectorAll('tr[data-group] rect[data-count]')]"
            ".reduce((a, r) => a + Number(r.dataset.count), 0)"
        )
        failed_notice = await page.evaluate(
            "[...document.querySelectorAll('#failed tr[data-plan]')]"
            ".map(e => [e.dataset.plan, e.lastElementChild.textContent])"
        )
        exemptions = await page.evaluate(
            "[...document.querySelectorAll('#exemptions tr[data-plan]')]"
            ".map(e => [e.dataset.plan, e.dataset.exemptionState, e.querySelector('[data-until]').dataset.until])"
        )
        hostile_text = await page.evaluate(
            "document.querySelector('#exemptions tr[data-plan=\"hostile-exempt\"]').children[1].textContent"
        )
        injected = await page.evaluate(
            "[document.querySelectorAll('script,img,iframe,object,embed,link,style').length, typeof window.__pwned,"
            " getComputedStyle(document.body).display]"
        )
        lab_rows = await page.evaluate(
            "[...document.querySelectorAll('tr[data-lab-status]')].map(e => [e.dataset.labPlan, e.dataset.lab,"
            " e.dataset.labStatus, e.previousElementSibling.dataset.plan || e.previousElementSibling.dataset.labPlan,"
            " [...e.querySelectorAll('[data-reported-only]')].map(f => f.textContent)])"
        )
        lab_totals = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-lab-total]')]"
            ".map(e => [e.dataset.labTotal, Number(e.textContent)]))"
        )
        verdict = await page.evaluate(
            "[Number(document.querySelector('[data-attention]').dataset.attention),"
            " Number(document.querySelector('[data-lab-attention]').dataset.labAttention)]"
        )
        shot = tmp_path / "report.png"
        await page.screenshot(shot)
        problems = page.problems()

    assert problems == []
    assert totals["plans"] == len(plans) == 38
    for status in ("compliant", "fixed", "drifted", "exempt", "skipped", "provisioning-failed", "failed"):
        assert totals[status] == expected[status], status
    assert Counter(status for _, status in rows) == expected
    assert {name for name, _ in rows} == {p["name"] for p in plans}
    assert groups == dict(by_group)
    assert bar_counts == len(plans)
    notices = dict(failed_notice)
    assert set(notices) == {estate.FAILED_PLAN, "hostile-failed"}
    assert "AzureWebJobsStorage" in notices[estate.FAILED_PLAN]  # no ledger in this run: the page says so
    states = {name: (state, until) for name, state, until in exemptions}
    assert states[estate.EXEMPT_PLAN][0] == "active" and states[estate.EXPIRED_EXEMPT_PLAN][0] == "ended"
    assert hostile_text == HOSTILE_REASON  # shown as written, as text
    assert injected == [1, "undefined", "block"]  # the page's own <style> only; nothing ran
    # Labs: each under its plan (the row right above is the plan or one of its labs), as the audit says.
    audit_labs = {(p["name"], lab["id"].rsplit("/", 1)[-1]): lab for p in plans for lab in p["labs"]}
    assert len(audit_labs) == len(estate.LAB_SPECS)
    assert {(plan, lab): status for plan, lab, status, _, _ in lab_rows} == {
        key: lab["status"] for key, lab in audit_labs.items()
    }
    assert all(above == plan for plan, _, _, above, _ in lab_rows)
    lab_expected = Counter(lab["status"] for lab in audit_labs.values())
    assert lab_totals == {"labs": len(audit_labs), **lab_expected}
    reported = {lab: texts for _, lab, _, _, texts in lab_rows}
    assert len(reported["db-lab-template"]) == 1 and "never patched" in reported["db-lab-template"][0]
    assert "create-only" in reported["db-lab-template"][0]
    attention = ("drifted", "unconverged", "proof-deferred", "write-failed", "provisioning-failed", "failed")
    assert verdict == [sum(expected[s] for s in attention), sum(lab_expected[s] for s in attention)]
    assert shot.stat().st_size > 20_000
    target = os.environ.get("LABGUARD_PAGE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_report_to_an_unwritable_place_is_one_line_before_any_azure_call(run: Run, emu: Any, tmp_path: Path) -> None:
    line = one_line_error(run("report", "--html", str(tmp_path / "no-such-dir" / "page.html")))
    assert "no-such-dir" in line and "existing directory" in line
    assert emu.requests() == []
