"""Reconciling one lab: the plan core's steps (:mod:`shared.runtime.reconcile`) for ``Microsoft.LabServices/labs``.

The same rules as for plans: audit by default; in enforce mode read the lab right before every write
(also after any wait or retry), send each drifted profile whole as read, never let the SDK re-send,
wait for the write by reading the lab, and prove it by evaluating that read (nothing left out of
bounds, no other leaf moved), with the same backoff when it does not converge. What the service would
refuse (see :mod:`shared.core.lab_drift`) is reported, never written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from shared.core.governed import PROFILES
from shared.core.lab_drift import LabEvaluation, as_plan, evaluate_lab
from shared.core.labs import Lab, LabId
from shared.core.plans import LabPlan, PlanId
from shared.core.policy import Policy
from shared.core.proof import unexpected_changes
from shared.core.text import shown
from shared.edge.lab_arm import BadLab, LabGone, LabsArm
from shared.errors import ArmError, Throttled
from shared.runtime.logs import record
from shared.runtime.reconcile import MAX_THROTTLE_WAIT_S, MAX_WRITE_ATTEMPTS, PlanOutcome, _changed_by
from shared.runtime.write_backoff import MemoryBackoff, WriteBackoff

log = logging.getLogger("labguard.labs")

_TO_PLAN_PROFILE = {profile.lab_arm_key: profile.arm_key for profile in PROFILES}


def _plan_field(field: tuple[str, ...]) -> tuple[str, ...]:
    """A lab finding's path as the plan view of the lab (:func:`as_plan`) names it, for the proof."""
    if len(field) > 1 and field[0] == "properties" and field[1] in _TO_PLAN_PROFILE:
        return (field[0], _TO_PLAN_PROFILE[field[1]], *field[2:])
    return field


def _backoff_key(lab_id: LabId) -> PlanId:
    # The backoff store keys rows by ``.key``/``.path``, which a LabId has (``.../labs/<name>``), so a lab
    # and a plan of the same name never share a row.
    return cast(PlanId, lab_id)


class LabReconciler:
    """Evaluates labs against the policy and, in enforce mode, writes the proved, minimal patch."""

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
    ) -> None:
        self._arm = arm
        self._notifier = notifier  # shared.notices.delivery.Notifier (enabled) or None
        self._policy = policy
        self._clock = clock
        self._dry_run = dry_run
        self.backoff: WriteBackoff = backoff if backoff is not None else MemoryBackoff()
        self._sleep = sleep

    @property
    def mode(self) -> str:
        return self._policy.mode

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
        try:
            return await self.act(lab, fresh=False, correlation_id=correlation_id, open_notices=open_notices)
        except LabGone:
            return PlanOutcome(lab.id.key, "gone", detail="deleted during the sweep")
        except ArmError as exc:
            record(log, logging.ERROR, "lab.failed", lab_id=lab.id.key, error=str(exc), correlation_id=correlation_id)
            return PlanOutcome(lab.id.key, "failed", detail=str(exc))
        except Exception as exc:  # one lab never stops the sweep; the run still fails at its end
            log.exception("traceback of the unexpected failure on %s", lab.id.key)
            detail = f"unexpected {type(exc).__name__}: {exc}"
            record(log, logging.ERROR, "lab.failed", lab_id=lab.id.key, error=detail, correlation_id=correlation_id)
            return PlanOutcome(lab.id.key, "failed", detail=detail)

    async def act(
        self,
        lab: Lab,
        *,
        fresh: bool,
        correlation_id: str | None,
        write_wait_s: float | None = None,
        open_notices: frozenset[str] | None = None,
    ) -> PlanOutcome:
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
        return await self._write(lab, evaluation, fresh=fresh, correlation_id=correlation_id, wait_s=write_wait_s)

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

    def _record_changes(self, evaluation: LabEvaluation, event: str, correlation_id: str | None) -> None:
        lab = evaluation.lab
        for finding in evaluation.drift:
            record(
                log,
                logging.WARNING,
                event,
                lab_id=lab.id.key,
                plan_id=lab.lab_plan_id.key if lab.lab_plan_id else None,
                rule=finding.rule,
                field=finding.path,
                observed=finding.observed,
                new=finding.patch_value,
                mode=self.mode,
                dry_run=self._dry_run or None,
                changed_by=_changed_by(lab.last_modified_by, lab.last_modified_by_type),
                correlation_id=correlation_id,
            )

    async def _write(
        self, lab: Lab, evaluation: LabEvaluation, *, fresh: bool, correlation_id: str | None, wait_s: float | None
    ) -> PlanOutcome:
        """Read right before every attempt, write once per attempt, then prove (as plans are written)."""
        key = lab.id.key
        held = await self._backoff_holds(evaluation, correlation_id)
        if held is not None:
            return held
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            slot = await self._arm.write_slot(lab.id)
            if attempt > 1 or not fresh or (slot is not None and getattr(slot, "delay", 0) > 0):
                lab = await self._arm.get_lab(lab.id)  # the read right before the write
                evaluation = evaluate_lab(lab, self._policy, self._clock())
                if evaluation.status == "failed" or not evaluation.patch:
                    record(
                        log,
                        logging.INFO,
                        "lab.write-dropped",
                        lab_id=key,
                        state=lab.provisioning_state,
                        reason="the read right before the write found nothing to write",
                        correlation_id=correlation_id,
                    )
                    return await self.act(lab, fresh=True, correlation_id=correlation_id)
                held = await self._backoff_holds(evaluation, correlation_id)
                if held is not None:
                    return held
            self._record_changes(evaluation, "lab.change", correlation_id)
            try:
                accepted = await self._arm.send_patch(lab.id, evaluation.patch, slot)
            except ArmError as exc:
                if not exc.transient or attempt == MAX_WRITE_ATTEMPTS:
                    raise
                wait = min(exc.retry_after_s, MAX_THROTTLE_WAIT_S) if isinstance(exc, Throttled) else float(attempt)
                record(
                    log,
                    logging.WARNING,
                    "lab.write-retry",
                    lab_id=key,
                    status=exc.status,
                    wait_s=wait,
                    attempt=attempt,
                    correlation_id=correlation_id,
                )
                await self._sleep(wait)
                continue
            return await self._prove(lab, evaluation, accepted, correlation_id=correlation_id, wait_s=wait_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _backoff_holds(self, evaluation: LabEvaluation, correlation_id: str | None) -> PlanOutcome | None:
        lab = evaluation.lab
        state = await self.backoff.get(_backoff_key(lab.id))
        if state is None or not state.holds(self._clock(), (f.path for f in evaluation.drift)):
            return None
        record(
            log,
            logging.WARNING,
            "lab.write-backoff",
            lab_id=lab.id.key,
            attempts=state.attempts,
            retry_at=state.retry_at.isoformat(),
            reason=state.reason,
            correlation_id=correlation_id,
        )
        retry_at = state.retry_at.isoformat(timespec="minutes")
        detail = f"earlier writes did not converge ({state.attempts}x); not written again before {retry_at}"
        return _outcome(lab.id.key, "unconverged", evaluation, detail)

    async def _prove(
        self, before: Lab, evaluation: LabEvaluation, accepted: Any, *, correlation_id: str | None, wait_s: float | None
    ) -> PlanOutcome:
        key = before.id.key
        after = await self._arm.wait_for_write(before.id, accepted, timeout_s=wait_s)
        if after is None:
            record(
                log,
                logging.WARNING,
                "lab.proof-deferred",
                lab_id=key,
                patch=evaluation.patch,
                note="the service had not finished the write; the next sweep reads and proves it",
                correlation_id=correlation_id,
            )
            return _outcome(key, "proof-deferred", evaluation, "write still running; the next sweep proves it")
        if after.provisioning_state == "Failed":
            error = after.error
            record(
                log,
                logging.ERROR,
                "lab.write-failed",
                lab_id=key,
                code=error.code if error else None,
                note="labguard's own write left the lab Failed",
                correlation_id=correlation_id,
            )
            return _outcome(key, "write-failed", evaluation, "labguard's own write left the lab Failed")
        proof = evaluate_lab(after, self._policy, self._clock())
        written = frozenset(_plan_field(f.field) for f in evaluation.drift)
        moved = unexpected_changes(as_plan(before), as_plan(after), written)
        still = list(proof.violations)
        if not still and not moved:
            record(log, logging.INFO, "lab.fixed", lab_id=key, patch=evaluation.patch, correlation_id=correlation_id)
            await self.backoff.clear(_backoff_key(before.id))
            return _outcome(key, "fixed", evaluation)
        reason = "; ".join(
            [f"{f.leaf} read back {f.observed!r}" for f in still]
            + [f"{c.leaf} changed {c.before!r} -> {c.after!r}" for c in moved]
        )
        fields = [f.path for f in still] + [c.path for c in moved] + [f.path for f in evaluation.drift]
        state = await self.backoff.unconverged(_backoff_key(before.id), self._clock(), fields, reason)
        record(
            log,
            logging.ERROR,
            "lab.unconverged",
            lab_id=key,
            patch=evaluation.patch,
            reason=reason,
            attempts=state.attempts,
            retry_at=state.retry_at.isoformat(),
            correlation_id=correlation_id,
        )
        return _outcome(key, "unconverged", evaluation, f"written, but {reason}")


def _outcome(key: str, status: Any, evaluation: LabEvaluation, detail: str | None = None) -> PlanOutcome:
    return PlanOutcome(key, status, None, detail=detail, lab=evaluation)
