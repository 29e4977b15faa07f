"""Reconciling one lab: the plan core's write loop (:class:`shared.runtime.reconcile.WriteLoop`) for labs.

The write itself is the plans' own loop: audit by default; in enforce mode the backoff lookup before the
read, the read right before every write (also after any wait or retry), each drifted profile sent whole as
read, never re-sent by the SDK, throttle waits, the wait for the write by reading the lab, and the proof by
evaluating that read (nothing left out of bounds, no other leaf moved), with the same backoff when it does
not converge and the same records (``lab.change``, ``lab.fixed``... with ``lab_id``). What is lab-specific
stays here: evaluating a lab (:mod:`shared.core.lab_drift`; what the service would refuse is reported, never
written), a failed lab's notice to its plan's support contacts, and the labs of a plan that changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from shared.core.lab_drift import LabEvaluation, evaluate_lab
from shared.core.labs import Lab, LabId
from shared.core.plans import LabPlan, PlanId
from shared.core.rules import Policy
from shared.core.text import shown
from shared.edge.lab_arm import BadLab, LabGone, LabsArm
from shared.errors import ArmError
from shared.runtime.logs import record
from shared.runtime.reconcile import PlanOutcome, Status, WriteLoop
from shared.runtime.write_backoff import MemoryBackoff, WriteBackoff

log = logging.getLogger("labguard.labs")


class LabReconciler(WriteLoop):
    """Evaluates labs against the policy and, in enforce mode, writes the proved, minimal patch.

    The backoff store keys rows by ``.key``/``.path``, which a LabId has (``.../labs/<name>``), so a lab and
    a plan of the same name never share a row."""

    kind: ClassVar[str] = "lab"
    gone: ClassVar[type[ArmError]] = LabGone
    _log: ClassVar[logging.Logger] = log
    _arm: LabsArm

    def __init__(
        self,
        arm: LabsArm,
        policy: Policy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
        backoff: WriteBackoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        notifier: Any = None,
        approved_patches: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._arm = arm
        # {lab key: patch} a person approved after a preview: only those exact patches are sent (as for plans).
        self._approved = approved_patches
        self._notifier = notifier  # shared.notices.delivery.Notifier (enabled) or None
        self._policy = policy
        self._clock = clock
        self._dry_run = dry_run
        self.backoff: WriteBackoff = backoff if backoff is not None else MemoryBackoff()
        self._sleep = sleep

    async def _read(self, resource_id: Any) -> Lab:
        return await self._arm.get_lab(resource_id)

    def _evaluate(self, resource: Any) -> LabEvaluation:
        return evaluate_lab(resource, self._policy, self._clock())

    def _subject(self, evaluation: Any) -> Lab:
        return evaluation.lab  # type: ignore[no-any-return]

    async def _act_again(self, resource: Any, correlation_id: str | None) -> PlanOutcome:
        return await self.act(resource, fresh=True, correlation_id=correlation_id)

    def _outcome(self, key: str, status: Status, evaluation: Any, detail: str | None = None) -> PlanOutcome:
        return _outcome(key, status, evaluation, detail)

    def _ids(self, resource: Any) -> dict[str, Any]:
        plan = resource.lab_plan_id
        return {"lab_id": resource.id.key, "plan_id": plan.key if plan is not None else None}

    def _last_writer(self, resource: Any) -> tuple[str | None, str | None]:
        return resource.last_modified_by, resource.last_modified_by_type

    async def _write_failed(
        self, resource: Any, evaluation: Any, correlation_id: str | None, *, why: str
    ) -> PlanOutcome:
        """labguard's own write left the lab Failed: recorded for the admin, never the lab owner's notice."""
        error = resource.error
        record(
            log,
            logging.ERROR,
            "lab.write-failed",
            **self._ids(resource),
            code=error.code if error else None,
            why=why,
            note="labguard's own write left the lab Failed",
            correlation_id=correlation_id,
        )
        return _outcome(resource.id.key, "write-failed", evaluation, "labguard's own write left the lab Failed")

    async def reconcile_lab(
        self, lab_id: LabId, *, correlation_id: str | None = None, write_wait_s: float | None = None
    ) -> PlanOutcome:
        """Event path: read the lab fresh, evaluate, act. Transient ARM errors propagate (redelivery)."""
        try:
            lab = await self._arm.get_lab(lab_id)
        except LabGone:
            record(log, logging.INFO, "lab.gone", lab_id=lab_id.key, correlation_id=correlation_id)
            return PlanOutcome(lab_id.key, "gone", detail="lab not found (deleted)")
        return await self.act(lab, fresh=True, correlation_id=correlation_id, write_wait_s=write_wait_s)

    def list_scope(self, subscription_id: str, resource_group: str | None) -> AsyncIterator[Lab | BadLab]:
        """The labs of one sweep scope (the plan sweep puts them in its queue beside the plans)."""
        return self._arm.list_labs(subscription_id, resource_group)

    @staticmethod
    def handles(item: object) -> bool:
        return isinstance(item, (Lab, BadLab))

    async def reconcile_labs_of_plan(self, plan_id: PlanId, *, correlation_id: str | None = None) -> list[PlanOutcome]:
        """A plan changed: re-evaluate the labs that name it (``labPlanId``), wherever in its subscription."""
        outcomes = []
        try:
            async for item in self._arm.list_labs(plan_id.subscription_id):
                if isinstance(item, Lab) and item.lab_plan_id == plan_id:
                    outcomes.append(await self.safe_act(item, correlation_id))
        except ArmError as exc:  # the sweep checks the labs again
            record(log, logging.ERROR, "plan.labs-unlisted", plan_id=plan_id.key, error=str(exc))
        record(
            log,
            logging.INFO,
            "plan.labs-checked",
            plan_id=plan_id.key,
            labs=len(outcomes),
            correlation_id=correlation_id,
        )
        return outcomes

    async def safe_act(
        self, lab: Lab | BadLab, correlation_id: str | None, open_notices: frozenset[str] | None = None
    ) -> PlanOutcome:
        """Sweep path: one lab's failure is recorded and the sweep goes on."""
        if isinstance(lab, BadLab):
            record(log, logging.ERROR, "lab.unreadable", lab_id=lab.id, error=lab.reason)
            return PlanOutcome(lab.id, "failed", detail=f"unreadable lab JSON: {lab.reason}")
        act = self.act(lab, fresh=False, correlation_id=correlation_id, open_notices=open_notices)
        outcome = await self._guarded(lab.id.key, act, correlation_id)
        if outcome.status == "failed" and outcome.lab is None:
            return self._failed(lab, outcome.detail or "failed")
        return outcome

    def _failed(self, lab: Lab, detail: str) -> PlanOutcome:
        """A lab whose read or write failed, with its evaluation as listed: it stays shown under its plan."""
        try:
            evaluation: LabEvaluation | None = evaluate_lab(lab, self._policy, self._clock())
        except Exception:  # the evaluation is total; this is only so a failure report never fails itself
            evaluation = None
        return PlanOutcome(lab.id.key, "failed", detail=detail, lab=evaluation)

    async def act(
        self,
        lab: Lab,
        *,
        fresh: bool,
        correlation_id: str | None,
        write_wait_s: float | None = None,
        open_notices: frozenset[str] | None = None,
    ) -> PlanOutcome:
        read_at = time.monotonic()  # the caller read the lab just now (or, in a sweep, when listing)
        evaluation = evaluate_lab(lab, self._policy, self._clock())
        key = lab.id.key
        plan = lab.lab_plan_id.key if lab.lab_plan_id else None
        for finding in (*evaluation.unknown_values, *evaluation.not_patchable):
            record(
                log,
                logging.WARNING,
                "lab." + ("unknown-value" if finding.rule == "unknown-value" else "not-patchable"),
                lab_id=key,
                plan_id=plan,
                field=finding.path,
                observed=shown(finding.observed, limit=80),
                reason=finding.message,
                correlation_id=correlation_id,
            )
        if evaluation.status == "failed":
            error = lab.error
            record(
                log,
                logging.WARNING,
                "lab.provisioning-failed",
                lab_id=key,
                plan_id=plan,
                code=error.code if error else None,
                action=error.action if error else None,
                timestamp=error.timestamp if error else None,
                correlation_id=correlation_id,
            )
            return await self._report_failure(lab, evaluation, correlation_id)
        notifier = self._notifier
        if notifier is not None and lab.provisioning_state == "Succeeded":
            subject = self._as_notice_subject(lab, None)
            if notifier.may_have_open(open_notices, subject):  # the sweep's one ledger query says which may
                await notifier.resolve(subject)  # recovered: close its open notice
        if evaluation.status in ("skipped", "exempt"):
            record(
                log,
                logging.INFO,
                f"lab.{evaluation.status}",
                lab_id=key,
                reason=evaluation.reason,
                correlation_id=correlation_id,
            )
            return _outcome(key, evaluation.status, evaluation, evaluation.reason)
        if not evaluation.patch:
            status = "drifted" if evaluation.status == "drifted" else "compliant"
            return _outcome(key, status, evaluation, evaluation.reason)
        if self.mode != "enforce" or self._dry_run:
            self._record_changes(evaluation, "lab.drift", correlation_id)
            return _outcome(key, "drifted", evaluation)
        return await self._write(
            lab, evaluation, fresh=fresh, read_at=read_at, correlation_id=correlation_id, wait_s=write_wait_s
        )

    @staticmethod
    def notice_subject(lab: Lab) -> LabPlan:
        """The failed lab as its notice is keyed in the ledger (the key needs only the lab's id and error)."""
        return LabReconciler._as_notice_subject(lab, None)

    @staticmethod
    def _as_notice_subject(lab: Lab, plan: LabPlan | None) -> LabPlan:
        """The failed lab in the shape the notice channels and their ledger take: the lab's own id (so one
        notice per lab and error), its error, and the support contacts of the plan it belongs to."""
        return LabPlan(
            id=cast(PlanId, lab.id),
            location=lab.location,
            provisioning_state=lab.provisioning_state,
            support=plan.support if plan is not None else None,
            error=lab.error,
        )

    async def _report_failure(self, lab: Lab, evaluation: LabEvaluation, correlation_id: str | None) -> PlanOutcome:
        """A failed lab: its resourceOperationError goes once per error to its plan's support contacts."""
        key = lab.id.key
        if self._notifier is None or self._dry_run:
            return _outcome(key, "provisioning-failed", evaluation, "no notice channel configured")
        plan: LabPlan | None = None
        if lab.lab_plan_id is not None:
            try:
                plan = await self._arm.plans.get_plan(lab.lab_plan_id)
            except ArmError as exc:  # no plan to read: the notice goes to the fallback address
                record(log, logging.WARNING, "lab.plan-unreadable", lab_id=key, error=str(exc))
        notice = await self._notifier.notify_failure(self._as_notice_subject(lab, plan), correlation_id=correlation_id)
        if getattr(notice, "deferred", False):
            return _outcome(key, "provisioning-failed", evaluation, "notice deferred")
        if not getattr(notice, "all_delivered", True):
            return _outcome(key, "failed", evaluation, "failure notice not delivered")
        return _outcome(key, "provisioning-failed", evaluation)


def _outcome(key: str, status: Any, evaluation: LabEvaluation, detail: str | None = None) -> PlanOutcome:
    return PlanOutcome(key, status, None, detail=detail, lab=evaluation)
