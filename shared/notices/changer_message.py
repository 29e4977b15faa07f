"""Telling the person whose change labguard undid: who they are, whether they may be written to, and what to say.

Pure (no I/O, no Azure imports). Who made a change comes from two untrusted places:

* the Event Grid event's ``data.claims`` (ARM copies the caller's token claims there as strings): a person's
  delegated token carries ``upn`` (long name ``http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn``),
  ``name`` and the object id, and, in current tokens, ``idtyp`` ``user``; an app-only token (an application,
  a service principal, a managed identity) carries ``idtyp`` ``app`` and no UPN;
* the resource's ``systemData`` (``lastModifiedBy``, ``lastModifiedByType``: ``User``, ``Application``,
  ``ManagedIdentity``, ``Key``): the only source on the sweep path.

labguard writes only to a person, at their UPN, and only when the UPN is a plain mail address; anything
else is skipped with the reason. What changed is never taken from the event: it is the finding labguard
made on the plan or lab it read itself, right before its write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.core.failures import failure_digest
from shared.core.plans import PlanId
from shared.core.text import clean_line

# Who made the change is read in its own light module: every event parses it, this mail is rarely needed.
from shared.notices.changer_claims import Changer, changer_from_system_data
from shared.notices.message import portal_url

CHANNEL = "changer-email"  # the ledger's channel key of these mails (one row per person, resource and hour)
CAP_VALUE = 80
MAX_CHANGES = 20

#: The sweep (no event) tells systemData's last writer only when that write is this recent: an older one is
#: not news to them, and the drift more likely comes from a tightened policy than from their change.
SWEEP_WINDOW = timedelta(hours=24)


def who_to_tell(
    event: Changer | None,
    who: str | None,
    kind: str | None,
    *,
    changed_at: str | None = None,
    now: datetime | None = None,
) -> Changer:
    """The person to tell about a write labguard undid: the event's caller when the resource's own record
    (systemData, read by labguard right before its write) agrees they were the last to change it, else
    systemData alone (the sweep, or an event without claims) when its lastModifiedAt is within
    :data:`SWEEP_WINDOW` of ``now``."""
    recorded = changer_from_system_data(who, kind)
    if event is None:
        if recorded.skip is None and now is not None:
            when = _instant(changed_at)
            if when is None:
                return replace(recorded, address=None, skip="systemData does not say when it was last changed")
            if now - when > SWEEP_WINDOW:
                return replace(
                    recorded,
                    address=None,
                    skip=f"the last change is older than {SWEEP_WINDOW.days * 24} h (systemData): not news to its "
                    "writer, and the drift may come from a tightened policy",
                )
        return recorded
    if event.skip is not None or not who or not kind:
        return event
    if kind.lower() != "user" or (event.address or "").casefold() != who.casefold():
        return Changer(
            None, event.name, event.object_id, "event", "written again by someone else before labguard read it"
        )
    return event


def _instant(text: str | None) -> datetime | None:
    """An ARM timestamp (ISO 8601, UTC), or None when absent or unreadable."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip()[:40].replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Change:
    """One setting labguard set back: the leaf, the value it read, the bound it wrote, the rule."""

    setting: str
    theirs: str
    bound: str
    rule: str


def changes_from(findings: Iterable[object]) -> tuple[Change, ...]:
    """Each drift finding labguard's patch fixed, cleaned and capped (values were written by people)."""
    out = []
    for finding in findings:
        field = getattr(finding, "field", "")
        path = ".".join(str(p) for p in field) if isinstance(field, tuple) else str(field)
        observed = getattr(finding, "observed", None)
        out.append(
            Change(
                setting=clean_line(path.rsplit(".", 1)[-1], CAP_VALUE),
                theirs="(not set)" if observed is None else clean_line(observed, CAP_VALUE),
                bound=clean_line(getattr(finding, "patch_value", None), CAP_VALUE),
                rule=clean_line(getattr(finding, "rule", ""), CAP_VALUE),
            )
        )
    return tuple(out[:MAX_CHANGES])


@dataclass(frozen=True)
class ChangerMessage:
    """The one short mail a person gets when labguard undid their change. Build with :meth:`build`."""

    plan_id: PlanId  # the plan's id, or a lab's (a LabId read through the same ``key``/``path``/``name``)
    kind: str  # "lab plan" or "lab"
    to: str
    name: str
    changes: tuple[Change, ...]
    contact: str
    at: datetime

    @classmethod
    def build(
        cls,
        resource_id: PlanId,
        *,
        kind: str,
        changer: Changer,
        changes: tuple[Change, ...],
        contact: str,
        at: datetime,
    ) -> ChangerMessage:
        if changer.address is None:
            raise ValueError("no address to write to")
        return cls(resource_id, kind, changer.address, changer.name, changes, clean_line(contact, 2048), at)

    @property
    def resource_key(self) -> str:
        return self.plan_id.key

    @property
    def hour(self) -> str:
        return self.at.astimezone(UTC).strftime("%Y-%m-%dT%H")

    @property
    def failure_key(self) -> str:
        """The ledger key: one mail per person, resource and clock hour (hashed in :attr:`digest`)."""
        return f"changer|{self.to.casefold()}|{self.resource_key}|{self.hour}"

    @property
    def digest(self) -> str:
        return failure_digest(self.failure_key)

    @property
    def resource_name(self) -> str:
        return clean_line(self.plan_id.name, 100)

    @property
    def rules(self) -> list[str]:
        return sorted({c.rule for c in self.changes})

    @property
    def subject(self) -> str:
        return clean_line(f"[labguard] Your change to {self.kind} {self.resource_name} was set back", 200)

    def text(self, *, correlation_id: str | None = None) -> str:
        """Plain text only: every value in it is cleaned and capped; nothing is a link but the portal's."""
        group = clean_line(self.plan_id.resource_group, 90)
        greeting = f"Hello {self.name}," if self.name else "Hello,"
        width = max([len("setting"), *(len(c.setting) for c in self.changes)])
        theirs = max([len("your value"), *(len(c.theirs) for c in self.changes)])
        bound = max([len("set back to"), *(len(c.bound) for c in self.changes)])
        lines = [
            greeting,
            "",
            f"labguard set back settings of {self.kind} {self.resource_name} (resource group {group}) that were",
            "outside your school's lab policy. Azure's record names you as the last person to change it.",
            "",
            f"  {'setting':<{width}}  {'your value':<{theirs}}  {'set back to':<{bound}}  rule",
            *(f"  {c.setting:<{width}}  {c.theirs:<{theirs}}  {c.bound:<{bound}}  {c.rule}" for c in self.changes),
            "",
            f"When: {self.at.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} UTC",
            f"Azure portal: {portal_url(self.plan_id)}",
            "",
            f"If this {self.kind} needs a setting outside the policy, ask for an exemption: {self.contact}",
            "",
            f"labguard writes to you at most once an hour about this {self.kind}.",
        ]
        if correlation_id:
            lines.append(f"Correlation id: {clean_line(correlation_id, 100)}")
        return "\n".join(lines) + "\n"
