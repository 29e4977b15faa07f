"""The mail to the person whose change labguard undid (LABGUARD_NOTIFY_CHANGER, off by default).

Called by the trigger glue (:mod:`shared.runtime.runs`, :mod:`shared.runtime.lab_runs`) after the
reconcile core proved a write (status ``fixed``) to a plan or lab, with the event's claims when a write
event caused it. Who to tell and what to say are decided in :mod:`shared.notices.changer_message` (pure);
this module sends the one mail over the notice mail relay and keys it in the notice ledger through
:meth:`shared.notices.delivery.Notifier.deliver_once`, so it gets what a failure notice gets: one row per
person, resource and hour claimed before sending and marked sent after; while the ledger is down, this
worker's memory stands in and the row is written when the ledger answers again; every ledger call and
the whole step bounded by LABGUARD_NOTICE_WAIT_SECONDS.

Records: ``changer.notified``, ``changer.skipped`` (with the reason: not a person, already told this hour,
another run is sending it), ``changer.failed`` (the relay refused: not retried, the fix stands),
``changer.deferred``. Each carries the plan or lab id, the rules and the correlation id; never a raw claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, cast

from shared.core.plans import PlanId
from shared.errors import DeliveryError
from shared.notices.changer_claims import Changer, is_valid_address
from shared.notices.changer_message import CHANNEL, ChangerMessage, changes_from, who_to_tell
from shared.notices.delivery import Notifier
from shared.notices.email import MAIL_POLICY, SmtpConfig, send_message
from shared.runtime.logs import record
from shared.runtime.settings import Settings, secret_value

log = logging.getLogger("labguard.changer")


class ChangerNotifier:
    """Tells the person whose change a proved labguard write undid; one per worker runtime."""

    def __init__(
        self,
        notifier: Notifier,
        smtp: SmtpConfig,
        contact: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._notifier = notifier
        self._smtp = smtp
        self._contact = contact
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, notifier: Notifier) -> ChangerNotifier | None:
        """None unless LABGUARD_NOTIFY_CHANGER is on (Settings makes sure the relay and contact are set)."""
        if not settings.notify_changer or not settings.smtp_host or not settings.exemption_contact:
            return None
        smtp = SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            mail_from=settings.mail_from,
            username=settings.smtp_username,
            password=secret_value(settings.smtp_password),
            ca_bundle=settings.ca_bundle,
        )
        return cls(notifier, smtp, settings.exemption_contact)

    async def after_fix(
        self, outcome: Any, *, event: Changer | None = None, correlation_id: str | None = None
    ) -> str | None:
        """One outcome of the reconcile core: when labguard proved a write (``fixed``), tell whoever made the
        change it undid. Returns what happened (``notified``, ``skipped``, ``failed``, ``deferred``), or None
        when there was nothing to tell. Never raises for a channel or ledger fault."""
        if getattr(outcome, "status", None) != "fixed":
            return None
        target = _target(outcome)
        if target is None:
            return None
        resource_id, kind, findings, who, who_kind, changed_at = target
        id_field = "lab_id" if kind == "lab" else "plan_id"
        changes = changes_from(findings)
        if not changes:
            return None
        changer = who_to_tell(event, who, who_kind, changed_at=changed_at, now=self._clock())
        rules = ", ".join(sorted({c.rule for c in changes}))
        ids = {id_field: resource_id.key, "rule": rules, "correlation_id": correlation_id}
        if changer.skip is not None or changer.address is None:
            record(log, logging.INFO, "changer.skipped", **ids, source=changer.source, reason=changer.skip)
            return "skipped"
        message = ChangerMessage.build(
            resource_id, kind=kind, changer=changer, changes=changes, contact=self._contact, at=self._clock()
        )

        async def send() -> str:
            return await self._send(message, correlation_id)

        result = await self._notifier.deliver_once(message, CHANNEL, send, correlation_id=correlation_id)
        if result.deferred:
            record(log, logging.WARNING, "changer.deferred", **ids, note="still sending in the background")
            return "deferred"
        [channel] = result.results
        where = {"to": changer.address, "source": changer.source, "ledger_fault": result.ledger_fault}
        if channel.status == "sent":
            record(log, logging.INFO, "changer.notified", **ids, **where)
            return "notified"
        if channel.status == "failed":
            record(log, logging.ERROR, "changer.failed", **ids, **where, reason=channel.detail)
            return "failed"
        reason = (
            "already told this hour about this " + kind
            if channel.status == "already-sent"
            else "another run is sending it"
        )
        record(log, logging.INFO, "changer.skipped", **ids, **where, reason=reason)
        return "skipped"

    async def _send(self, message: ChangerMessage, correlation_id: str | None) -> str:
        config = self._smtp
        if not config.mail_from or not is_valid_address(config.mail_from):
            raise DeliveryError("LABGUARD_MAIL_FROM is not set to a valid address")
        await send_message(
            config, build_mail(message, mail_from=config.mail_from, correlation_id=correlation_id), (message.to,)
        )
        return f"sent to {message.to} via {config.where}"


def build_mail(message: ChangerMessage, *, mail_from: str, correlation_id: str | None = None) -> EmailMessage:
    """Plain text; the only header values from outside are the validated address and the cleaned subject."""
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = message.subject
    msg["From"] = mail_from
    msg["To"] = message.to
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = mail_from.rpartition("@")[2] or "labguard.invalid"
    msg["Message-ID"] = make_msgid(idstring="labguard", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office loops
    msg["X-Labguard-Plan-Id"] = message.plan_id.path
    msg["X-Labguard-Changer"] = message.digest
    msg.set_content(message.text(correlation_id=correlation_id))
    return msg


def _target(outcome: Any) -> tuple[PlanId, str, tuple[Any, ...], str | None, str | None, str | None] | None:
    """(id, kind, the findings the write fixed, systemData's last writer, its type and when) of an outcome."""
    lab_evaluation = getattr(outcome, "lab", None)
    if lab_evaluation is not None:
        lab = lab_evaluation.lab
        # A LabId reads as a PlanId (``key``, ``path``, ``name``, ``resource_group``): the ledger keys on ``key``.
        lab_id = cast(PlanId, lab.id)
        return (
            lab_id,
            "lab",
            tuple(lab_evaluation.drift),
            lab.last_modified_by,
            lab.last_modified_by_type,
            lab.last_modified_at,
        )
    evaluation = getattr(outcome, "evaluation", None)
    if evaluation is None:
        return None
    plan = evaluation.plan
    return plan.id, "lab plan", tuple(evaluation.drift), plan.modified_by, plan.modified_by_type, plan.modified_at
