"""Failure notices: what a plan's support contacts read when its provisioning failed.

Pure: builds a :class:`Notice` from a :class:`~shared.core.plans.LabPlan` and renders it as plain
text, HTML and JSON-ready data. No I/O and no Azure imports; the channels in :mod:`shared.notices.email`,
:mod:`shared.notices.webhook` and :mod:`shared.notices.topic` only carry what is rendered here.

Every string that comes from ARM (names, error text, supportInfo) is hostile: it is stripped of
control and invisible formatting characters (no header injection, no bidi tricks), capped in length,
and HTML-escaped in the HTML body. Only :func:`shared.core.text.clean_line` / :func:`shared.core.text.clean_block`
output is ever rendered.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.core.failures import CAP_CODE, CAP_TIMESTAMP, failure_digest, failure_key
from shared.core.plans import LabPlan, PlanId
from shared.core.text import clean_block, clean_line, is_dropped
from shared.notices.changer_claims import is_valid_address  # one address rule for notices and changers

PORTAL = "https://portal.azure.com/#resource"
EVENT_TYPE = "Labguard.LabPlan.ProvisioningFailed"
#: The event type of an admin notice: labguard's own write left the plan Failed (not the owner's doing).
ADMIN_EVENT_TYPE = "Labguard.LabPlan.WriteFailed"

# Length caps (characters, after cleaning). ARM's own limits are lower for most of these; the caps
# keep one hostile plan from producing a megabyte mail or an oversized event (Event Grid: 1 MB).
CAP_NAME = 100
CAP_RG = 90
CAP_ACTION = 64
CAP_MESSAGE = 4000
CAP_URL = 2048
CAP_EMAIL = 320
CAP_PHONE = 64
CAP_INSTRUCTIONS = 2000
CAP_SUBJECT = 200
MAX_RECIPIENTS = 5


def valid_addresses(value: object) -> tuple[str, ...]:
    """The plain addresses (a@b.example) in supportInfo.email, separated by , ; or spaces; at most five.

    All or nothing: if any part is not a plain address (display names, quotes, angle brackets,
    non-ASCII) or the field holds a control character (``help@x\r\nBcc: victim@y``), the field is
    not used at all and the notice goes to the fallback address, with the raw value shown.
    """
    if not isinstance(value, str) or len(value) > CAP_EMAIL * MAX_RECIPIENTS:
        return ()
    if any(is_dropped(ch) for ch in value):
        return ()
    found: list[str] = []
    for part in re.split(r"[,; ]+", value.strip()):
        if not part:
            continue
        if not is_valid_address(part):
            return ()
        if part.lower() not in (f.lower() for f in found):
            found.append(part)
    return tuple(found[:MAX_RECIPIENTS])


def portal_url(plan_id: PlanId) -> str:
    # ASCII ids come out exactly as ARM wrote them; anything else (Unicode \w in names) is percent-encoded.
    return PORTAL + quote(plan_id.path, safe="/()._-")


@dataclass(frozen=True)
class Notice:
    """Everything a failure notice says, already cleaned. Build it with :meth:`from_plan`."""

    plan_id: PlanId
    plan_name: str
    resource_group: str
    subscription_id: str
    location: str
    provisioning_state: str
    action: str
    code: str
    message: str
    timestamp: str
    support_url: str
    support_email: str
    support_phone: str
    support_instructions: str
    recipients: tuple[str, ...]
    portal_url: str
    failure_key: str
    admin_reason: str = ""  # set: labguard's own write failed; the notice goes to the admin, not the owner

    @classmethod
    def from_plan(cls, plan: LabPlan) -> Notice:
        error = plan.error
        support = plan.support
        return cls(
            plan_id=plan.id,
            plan_name=clean_line(plan.id.name, CAP_NAME),
            resource_group=clean_line(plan.id.resource_group, CAP_RG),
            subscription_id=clean_line(plan.id.subscription_id, 36),
            location=clean_line(plan.location, 64),
            provisioning_state=clean_line(plan.provisioning_state, 32),
            action=clean_line(error.action if error else None, CAP_ACTION),
            code=clean_line(error.code if error else None, CAP_CODE),
            message=clean_block(error.message if error else None, CAP_MESSAGE),
            timestamp=clean_line(error.timestamp if error else None, CAP_TIMESTAMP),
            support_url=clean_line(support.url if support else None, CAP_URL),
            support_email=clean_line(support.email if support else None, CAP_EMAIL),
            support_phone=clean_line(support.phone if support else None, CAP_PHONE),
            support_instructions=clean_block(support.instructions if support else None, CAP_INSTRUCTIONS),
            recipients=valid_addresses(support.email if support else None),
            portal_url=portal_url(plan.id),
            failure_key=failure_key(plan),
        )

    @property
    def kind(self) -> str:
        """``Lab`` for a lab's failure (told to the support contacts of its plan), else ``Lab plan``."""
        return "Lab" if "/providers/microsoft.labservices/labs/" in self.plan_id.key else "Lab plan"

    @property
    def event_type(self) -> str:
        return ADMIN_EVENT_TYPE if self.admin_reason else EVENT_TYPE

    @property
    def has_support(self) -> bool:
        return any((self.support_url, self.support_email, self.support_phone, self.support_instructions))

    @property
    def digest(self) -> str:
        return failure_digest(self.failure_key)

    @property
    def subject(self) -> str:
        what = f": {self.code}" if self.code else ""
        if self.admin_reason:
            line = f"[labguard] labguard's own write left {self.kind.lower()} {self.plan_name} Failed{what}"
            return clean_line(line, CAP_SUBJECT)
        return clean_line(f"[labguard] {self.kind} {self.plan_name} failed{what}", CAP_SUBJECT)

    @property
    def summary(self) -> str:
        """One line for chat messages and logs."""
        when = f" at {self.timestamp}" if self.timestamp else ""
        action = f"{self.action} " if self.action else ""
        if self.admin_reason:
            return clean_line(
                f"labguard's own write left lab plan {self.plan_name} (resource group {self.resource_group}) "
                f"Failed: {action}{self.code or 'no error code'}{when} (for the labguard admin)",
                400,
            )
        return clean_line(
            f"{self.kind} {self.plan_name} (resource group {self.resource_group}) failed: "
            f"{action}{self.code or 'no error code'}{when}",
            400,
        )

    def _facts(self) -> list[tuple[str, str]]:
        return [
            ("Plan" if self.kind == "Lab plan" else "Lab", self.plan_name),
            ("Resource group", self.resource_group),
            ("Subscription", self.subscription_id),
            ("Location", self.location or "(not reported)"),
            ("Plan id", self.plan_id.path),
            ("Azure portal", self.portal_url),
        ]

    def _error_facts(self) -> list[tuple[str, str]]:
        return [
            ("Action", self.action or "(not reported)"),
            ("Code", self.code or "(not reported)"),
            ("Time", self.timestamp or "(not reported)"),
        ]

    def _support_facts(self) -> list[tuple[str, str]]:
        return [
            (label, value)
            for label, value in (
                ("Help page", self.support_url),
                ("Email", self.support_email),
                ("Phone", self.support_phone),
            )
            if value
        ]

    def text(self, *, note: str | None = None, correlation_id: str | None = None) -> str:
        """The plain-text body. ``note`` says why this reader got it (for example the fallback address)."""
        out: list[str] = [f"{self.kind} {self.plan_name} failed to provision in Azure Lab Services.", ""]
        if self.admin_reason:
            out = [f"labguard's own write left lab plan {self.plan_name} Failed in Azure Lab Services.", ""]
            if not note or self.admin_reason not in note:
                out += [clean_line(f"For the labguard admin: {self.admin_reason}.", 600), ""]
        if note:
            out += [clean_line(note, 600), ""]
        out += [f"{label + ':':<16}{value}" for label, value in self._facts()]
        out += ["", "What failed"]
        out += [f"  {label + ':':<14}{value}" for label, value in self._error_facts()]
        out += ["  Message:", *_indent(self.message or "(no message)", "    ")]
        out += ["", "Who to contact (the plan's support information)"]
        if self.has_support:
            out += [f"  {label + ':':<14}{value}" for label, value in self._support_facts()]
            if self.support_instructions:
                out += ["  Instructions:", *_indent(self.support_instructions, "    ")]
        else:
            out += [f"  {_NO_SUPPORT}"]
        out += ["", _FOOTER]
        if correlation_id:
            out.append(f"Correlation id: {clean_line(correlation_id, 100)}")
        return "\n".join(out) + "\n"

    def html(self, *, note: str | None = None, correlation_id: str | None = None) -> str:
        """The HTML body: every value escaped; only the portal link and an https/http help page are links."""
        e = _esc
        rows = "".join(_row(label, _link(v) if label == "Azure portal" else e(v)) for label, v in self._facts())
        err = "".join(_row(label, e(v)) for label, v in self._error_facts())
        err += _row("Message", _pre(self.message or "(no message)"))
        if self.has_support:
            sup = "".join(_row(label, _link(v) if label == "Help page" else e(v)) for label, v in self._support_facts())
            if self.support_instructions:
                sup += _row("Instructions", _pre(self.support_instructions))
            support = f"<table>{sup}</table>"
        else:
            support = f"<p>{e(_NO_SUPPORT)}</p>"
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.subject)}</title></head><body>",
            f"<h2>{self.kind} {e(self.plan_name)} failed to provision</h2>",
            f"<p><strong>{e(clean_line(note, 600))}</strong></p>" if note else "",
            f"<table>{rows}</table>",
            f"<h3>What failed</h3><table>{err}</table>",
            f"<h3>Who to contact (the plan's support information)</h3>{support}",
            f"<p><small>{e(_FOOTER)}",
            f"<br>Correlation id: {e(clean_line(correlation_id, 100))}" if correlation_id else "",
            "</small></p></body></html>",
        ]
        return "".join(parts)

    def as_data(self, *, correlation_id: str | None = None) -> dict[str, Any]:
        """JSON-ready data for the Event Grid event, webhooks and the support intake."""
        return {
            "planId": self.plan_id.path,
            "planName": self.plan_name,
            "resourceGroup": self.resource_group,
            "subscriptionId": self.subscription_id,
            "location": self.location or None,
            "provisioningState": self.provisioning_state or None,
            "portalUrl": self.portal_url,
            "error": {
                "action": self.action or None,
                "code": self.code or None,
                "message": self.message or None,
                "timestamp": self.timestamp or None,
            },
            "support": {
                "url": self.support_url or None,
                "email": self.support_email or None,
                "phone": self.support_phone or None,
                "instructions": self.support_instructions or None,
            },
            "failureKey": self.failure_key,
            "correlationId": clean_line(correlation_id, 100) or None,
            **({"adminReason": clean_line(self.admin_reason, 600)} if self.admin_reason else {}),
        }


_NO_SUPPORT = (
    "This plan has no support information. Add a help page, email, phone or instructions under the "
    "plan's Lab settings > Support in the Azure portal, so that its owners receive these notices."
)
_FOOTER = (
    "Sent by labguard once for this failure on each channel. The same error is not reported again; "
    "a new error is. Values written by plan owners are shown as written and were not checked."
)


def _indent(block: str, prefix: str) -> list[str]:
    return [prefix + line for line in block.split("\n")]


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _row(label: str, cell_html: str) -> str:
    return f"<tr><th align='left' valign='top'>{_esc(label)}</th><td>{cell_html}</td></tr>"


def _pre(text: str) -> str:
    return f"<pre style='white-space:pre-wrap;margin:0'>{_esc(text)}</pre>"


def _link(url: str) -> str:
    """A link only for plain http(s) URLs without quotes or spaces; anything else stays text."""
    if re.match(r"^https?://[^\s\"'<>`\\]+$", url, re.IGNORECASE):
        return f"<a href='{_esc(url)}'>{_esc(url)}</a>"
    return _esc(url)
