"""The admin's daily digest, so audit mode is not silent: the day's drift, new failures, ending exemptions.

Pure: built from a snapshot (:mod:`shared.core.snapshot`) and the item keys of the last digest sent. An item
is one drifted or fixed setting, one provisioning failure, or one exemption ending within 14 days; its
key is a short hash of what it says, so the same drift seen on the next day is not "new". A digest is
sent only when at least one item is new; it then lists every current item, new ones marked.
:mod:`shared.notices.digest` keeps the once-per-day ledger row and sends it.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from shared.core.text import clean_line

__all__ = ["Digest", "DigestItem", "build_digest", "digest_items"]

Kind = Literal["failure", "drift", "fixed", "exemption-ending"]
_TITLES: dict[str, str] = {
    "failure": "Failed provisioning",
    "drift": "Drift (not changed: audit mode or exempt)",
    "fixed": "Fixed by labguard",
    "exemption-ending": "Exemptions ending within 14 days",
}
MAX_ITEMS_SHOWN = 200


@dataclass(frozen=True)
class DigestItem:
    key: str
    kind: Kind
    plan: str  # plan name
    group: str  # resource group
    text: str  # one cleaned line


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p).lower() for p in parts).encode("utf-8")).hexdigest()[:20]


def digest_items(snapshot: Mapping[str, Any]) -> list[DigestItem]:
    """Every item the snapshot holds that an admin should hear about."""
    items: list[DigestItem] = []
    for plan in snapshot.get("plans") or []:
        name = clean_line(plan.get("name") or plan.get("id"), 100)
        group = clean_line(plan.get("resourceGroup"), 90)
        status = plan.get("status")
        pid = plan.get("id")
        if status == "provisioning-failed":
            failure = plan.get("failure") or {}
            what = clean_line(f"{failure.get('code') or 'no error code'}: {failure.get('message') or ''}", 300)
            items.append(DigestItem(_key("failure", pid, failure.get("key")), "failure", name, group, what))
        if status in ("drifted", "fixed"):
            for finding in plan.get("findings") or []:
                if finding.get("patchValue") is None:
                    continue
                field = str(finding.get("field") or "").rsplit(".", 1)[-1]
                observed = finding.get("observed") or "(not set)"
                line = clean_line(f"{field} {observed} -> {finding.get('patchValue')}", 200)
                kind: Kind = "fixed" if status == "fixed" else "drift"
                items.append(DigestItem(_key(kind, pid, field, observed), kind, name, group, line))
        exemption = plan.get("exemption")
        if exemption and exemption.get("state") == "ending-soon":
            days = exemption.get("daysLeft")
            line = clean_line(
                f"ends {exemption.get('until')} ({days} day{'s' if days != 1 else ''} left): {exemption.get('reason')}",
                300,
            )
            items.append(
                DigestItem(_key("exemption", pid, exemption.get("until")), "exemption-ending", name, group, line)
            )
    return items


@dataclass(frozen=True)
class Digest:
    day: date
    items: tuple[DigestItem, ...]
    new: frozenset[str]  # keys of the items not in the previous digest
    mode: str
    generated_at: str

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]

    @property
    def subject(self) -> str:
        counts = {kind: sum(1 for i in self.items if i.kind == kind and i.key in self.new) for kind in _TITLES}
        parts = [
            f"{counts['failure']} new failure{'s' if counts['failure'] != 1 else ''}" if counts["failure"] else "",
            f"{counts['drift']} new drifted setting{'s' if counts['drift'] != 1 else ''}" if counts["drift"] else "",
            f"{counts['fixed']} setting{'s' if counts['fixed'] != 1 else ''} fixed" if counts["fixed"] else "",
            f"{counts['exemption-ending']} exemption{'s' if counts['exemption-ending'] != 1 else ''} ending"
            if counts["exemption-ending"]
            else "",
        ]
        return clean_line(f"[labguard] Daily digest {self.day.isoformat()}: " + ", ".join(p for p in parts if p), 200)

    def _sections(self) -> list[tuple[str, list[DigestItem]]]:
        return [
            (title, [i for i in self.items if i.kind == kind][:MAX_ITEMS_SHOWN])
            for kind, title in _TITLES.items()
            if any(i.kind == kind for i in self.items)
        ]

    def text(self) -> str:
        out = [
            f"labguard daily digest for {self.day.isoformat()} (mode {self.mode}, sweep at {self.generated_at}).",
            f"{len(self.new)} new item{'s' if len(self.new) != 1 else ''} since the last digest, marked NEW.",
            "",
        ]
        for title, items in self._sections():
            total = sum(1 for i in self.items if i.kind == items[0].kind)
            out.append(f"{title} ({total})")
            for item in items:
                mark = "NEW " if item.key in self.new else "    "
                out.append(f"  {mark}{item.group}/{item.plan}: {item.text}")
            if total > len(items):
                out.append(f"  ... and {total - len(items)} more (see the compliance page)")
            out.append("")
        out.append(
            "Sent once a day by labguard when something is new; nothing is sent on a day with nothing new. "
            "Values written by plan owners are shown as written."
        )
        return "\n".join(out) + "\n"

    def html(self) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.subject)}</title></head><body>",
            f"<h2>labguard daily digest {e(self.day.isoformat())}</h2>",
            f"<p>Mode {e(self.mode)}; sweep at {e(self.generated_at)}. <b>{len(self.new)}</b> new since the last "
            "digest (marked NEW).</p>",
        ]
        for title, items in self._sections():
            rows = "".join(
                f"<tr><td>{'<b>NEW</b>' if i.key in self.new else ''}</td><td>{e(i.group)}/{e(i.plan)}</td>"
                f"<td>{e(i.text)}</td></tr>"
                for i in items
            )
            parts.append(f"<h3>{e(title)}</h3><table>{rows}</table>")
        parts.append("<p><small>Sent once a day by labguard when something is new.</small></p></body></html>")
        return "".join(parts)


def build_digest(snapshot: Mapping[str, Any], day: date, previous: Sequence[str] | frozenset[str]) -> Digest | None:
    """The day's digest, or None when nothing is new since the previous digest (or nothing at all)."""
    items = digest_items(snapshot)
    seen = set(previous)
    new = frozenset(item.key for item in items if item.key not in seen)
    if not new:
        return None
    order = {kind: index for index, kind in enumerate(_TITLES)}
    ordered = sorted(items, key=lambda i: (order[i.kind], i.key not in new, i.group.lower(), i.plan.lower()))
    return Digest(day, tuple(ordered), new, str(snapshot.get("mode") or "audit"), str(snapshot.get("generatedAt")))
