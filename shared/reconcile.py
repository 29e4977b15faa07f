"""The one reconcile core both triggers run: re-read the plan, evaluate it, act, report.

As in Cloud Custodian's event and periodic modes, the Event Grid handler reconciles one plan and the
timer sweeps all plans in scope, through the same ``_act``. The event payload is never trusted: the
plan is always read fresh from ARM before anything is written, so duplicate, reordered or replayed
events converge on the same state, and labguard's own writes find nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from shared.arm import ArmError, BadPlan, LabPlansArm, PlanGone
from shared.drift import Evaluation, Finding, evaluate, shown
from shared.lab_plans import LabPlan, PlanId
from shared.logs import record
from shared.policy import Policy

log = logging.getLogger("labguard.reconcile")

Status = Literal["compliant", "drifted", "fixed", "skipped", "exempt", "provisioning-failed", "failed", "gone"]


class FailureNotifier(Protocol):
    """What the core needs from the notice channels (shared.delivery.Notifier provides it)."""

    @property
    def enabled(self) -> bool: ...

    async def notify_failure(self, plan: LabPlan, *, correlation_id: str | None = None) -> Any: ...

    async def resolve(self, plan: LabPlan) -> None: ...

    async def open_snapshot(self) -> frozenset[str] | None: ...

    def may_have_open(self, snapshot: frozenset[str] | None, plan: LabPlan) -> bool: ...


@dataclass(frozen=True)
class PlanOutcome:
    """What happened to one plan in one run."""

    plan_id: str
    status: Status
    evaluation: Evaluation | None = None
    detail: str | None = None
    notice: Any = None

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.evaluation.findings if self.evaluation else ()


@dataclass
class SweepSummary:
    """One sweep's counts, for the one summary record and for the caller to decide success."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    list_errors: list[tuple[str, ArmError]] = field(default_factory=list)  # scope, why it could not be listed
    duration_s: float = 0.0
    arm_calls: dict[str, int] = field(default_factory=dict)
    throttled: int = 0

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    def as_record(self) -> dict[str, Any]:
        return {
            "compliant": self.counts["compliant"],
            "drifted": self.counts["drifted"],
            "fixed": self.counts["fixed"],
            "skipped": self.counts["skipped"] + self.counts["exempt"],
            "exempt": self.counts["exempt"],
            "provisioning_failed": self.counts["provisioning-failed"],
            "failed": self.counts["failed"],
            "gone": self.counts["gone"],
            "plans": sum(self.counts.values()),
            "duration_s": round(self.duration_s, 3),
            "arm_calls": sum(self.arm_calls.values()),
            "arm_calls_by_kind": dict(sorted(self.arm_calls.items())),
            "throttled": self.throttled,
        }


class Reconciler:
    """Evaluates plans against the policy and, in enforce mode, applies the minimal patch."""

    def __init__(
        self,
        arm: LabPlansArm,
        policy: Policy,
        *,
        notifier: FailureNotifier | None = None,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
    ) -> None:
        self._arm = arm
        self._policy = policy
        self._notifier = notifier
        self._concurrency = max(1, concurrency)
        self._clock = clock
        self._dry_run = dry_run

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def mode(self) -> str:
        return self._policy.mode

    async def reconcile_plan(self, plan_id: PlanId, *, correlation_id: str | None = None) -> PlanOutcome:
        """Event path: read the plan fresh, evaluate, act. Transient ARM errors propagate (redelivery)."""
        try:
            plan = await self._arm.get_plan(plan_id)
        except PlanGone:
            record(log, logging.INFO, "plan.gone", plan_id=plan_id.key, correlation_id=correlation_id)
            return PlanOutcome(plan_id.key, "gone", detail="plan not found (deleted)")
        return await self._act(plan, fresh=True, correlation_id=correlation_id)

    async def sweep(
        self,
        scopes: Sequence[tuple[str, str | None]],
        *,
        on_outcome: Callable[[PlanOutcome], Awaitable[None] | None] | None = None,
        correlation_id: str | None = None,
    ) -> SweepSummary:
        """Timer path: list every plan in scope and reconcile each with bounded concurrency.

        Plans stream through a bounded queue, so memory does not grow with the estate; one plan's
        failure is recorded and the sweep goes on.
        """
        started = time.monotonic()
        calls_before = Counter(self._arm.counter.by_kind)
        throttled_before = self._arm.counter.throttled
        summary = SweepSummary()
        # One ledger query up front, so recovered plans are resolved without a query per plan.
        open_notices = await self._notifier.open_snapshot() if self._notifier is not None else None
        queue: asyncio.Queue[LabPlan | BadPlan | None] = asyncio.Queue(maxsize=self._concurrency * 4)

        async def produce(subscription: str, resource_group: str | None) -> None:
            try:
                async for item in self._arm.list_plans(subscription, resource_group):
                    await queue.put(item)
            except ArmError as exc:
                where = f"/subscriptions/{subscription}" + (
                    f"/resourceGroups/{resource_group}" if resource_group else ""
                )
                summary.counts["failed"] += 1
                summary.failures.append((where, f"listing failed: {exc}"))
                summary.list_errors.append((where, exc))
                record(log, logging.ERROR, "sweep.list-failed", scope=where, error=str(exc))

        async def consume() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                outcome = await self._safe_act(item, correlation_id, open_notices)
                summary.counts[outcome.status] += 1
                if outcome.status == "failed":
                    summary.failures.append((outcome.plan_id, outcome.detail or "failed"))
                if on_outcome is not None:
                    maybe = on_outcome(outcome)
                    if maybe is not None:
                        await maybe

        async def feed() -> None:
            await asyncio.gather(*(produce(sub, rg) for sub, rg in scopes))
            for _ in range(self._concurrency):
                await queue.put(None)

        # A TaskGroup, so an exception anywhere (a caller's on_outcome, say) cancels the rest instead
        # of leaving producers blocked on a full queue that no worker drains any more.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._concurrency):
                    group.create_task(consume())
                group.create_task(feed())
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None
        summary.duration_s = time.monotonic() - started
        summary.arm_calls = dict(Counter(self._arm.counter.by_kind) - calls_before)
        summary.throttled = self._arm.counter.throttled - throttled_before
        record(log, logging.INFO, "sweep.summary", mode=self.mode, correlation_id=correlation_id, **summary.as_record())
        return summary

    async def _safe_act(
        self, item: LabPlan | BadPlan, correlation_id: str | None, open_notices: frozenset[str] | None
    ) -> PlanOutcome:
        if isinstance(item, BadPlan):
            record(log, logging.ERROR, "plan.unreadable", plan_id=item.id, error=item.reason)
            return PlanOutcome(item.id, "failed", detail=f"unreadable plan JSON: {item.reason}")
        try:
            return await self._act(item, fresh=False, correlation_id=correlation_id, open_notices=open_notices)
        except PlanGone:
            return PlanOutcome(item.id.key, "gone", detail="deleted during the sweep")
        except ArmError as exc:
            record(
                log, logging.ERROR, "plan.failed", plan_id=item.id.key, error=str(exc), correlation_id=correlation_id
            )
            return PlanOutcome(item.id.key, "failed", detail=str(exc))
        except Exception as exc:  # one plan never stops the sweep; the run still fails at its end
            log.exception("traceback of the unexpected failure on %s", item.id.key)
            detail = f"unexpected {type(exc).__name__}: {exc}"
            record(log, logging.ERROR, "plan.failed", plan_id=item.id.key, error=detail, correlation_id=correlation_id)
            return PlanOutcome(item.id.key, "failed", detail=detail)

    async def _act(
        self,
        plan: LabPlan,
        *,
        fresh: bool,
        correlation_id: str | None,
        open_notices: frozenset[str] | None = None,
    ) -> PlanOutcome:
        evaluation = evaluate(plan, self._policy, self._clock())
        if evaluation.patch and self.mode == "enforce" and not self._dry_run and not fresh:
            # The list is a snapshot: read the plan again right before writing to it.
            plan = await self._arm.get_plan(plan.id)
            evaluation = evaluate(plan, self._policy, self._clock())
        key = plan.id.key
        for unknown in evaluation.unknown_values:  # never written over: a person must look at it
            record(
                log,
                logging.WARNING,
                "plan.unknown-value",
                plan_id=key,
                rule=unknown.rule,
                field=unknown.field,
                observed=shown(unknown.observed, limit=80),
                correlation_id=correlation_id,
            )

        if evaluation.status == "failed":  # provisioningState Failed: tell the support contacts
            return await self._report_failure(plan, evaluation, correlation_id)
        notifier = self._notifier
        if (
            notifier is not None
            and notifier.enabled
            and plan.provisioning_state == "Succeeded"
            and notifier.may_have_open(open_notices, plan)
        ):
            await notifier.resolve(plan)
        if evaluation.status in ("skipped", "exempt"):
            record(
                log,
                logging.INFO,
                f"plan.{evaluation.status}",
                plan_id=key,
                reason=evaluation.reason,
                correlation_id=correlation_id,
            )
            return PlanOutcome(key, evaluation.status, evaluation, detail=evaluation.reason)
        if not evaluation.patch:
            return PlanOutcome(key, "compliant", evaluation)

        writing = self.mode == "enforce" and not self._dry_run
        for finding in evaluation.drift:
            record(
                log,
                logging.WARNING,
                "plan.change" if writing else "plan.drift",
                plan_id=key,
                rule=finding.rule,
                field=finding.field,
                observed=finding.observed,
                new=finding.patch_value,
                mode=self.mode,
                dry_run=self._dry_run or None,
                correlation_id=correlation_id,
            )
        if not writing:
            return PlanOutcome(key, "drifted", evaluation)
        await self._arm.patch_plan(plan.id, evaluation.patch)
        record(log, logging.INFO, "plan.fixed", plan_id=key, patch=evaluation.patch, correlation_id=correlation_id)
        return PlanOutcome(key, "fixed", evaluation)

    async def _report_failure(self, plan: LabPlan, evaluation: Evaluation, correlation_id: str | None) -> PlanOutcome:
        error = plan.error
        record(
            log,
            logging.WARNING,
            "plan.provisioning-failed",
            plan_id=plan.id.key,
            code=error.code if error else None,
            action=error.action if error else None,
            timestamp=error.timestamp if error else None,
            correlation_id=correlation_id,
        )
        if self._notifier is None or not self._notifier.enabled or self._dry_run:
            return PlanOutcome(plan.id.key, "provisioning-failed", evaluation, detail="no notice channel configured")
        notice = await self._notifier.notify_failure(plan, correlation_id=correlation_id)
        if not getattr(notice, "all_delivered", True):
            # Not delivered everywhere: fail this plan so the run is recorded as failed and retried.
            return PlanOutcome(plan.id.key, "failed", evaluation, detail="failure notice not delivered", notice=notice)
        return PlanOutcome(plan.id.key, "provisioning-failed", evaluation, notice=notice)


def sweep_scopes(subscriptions: Sequence[str], resource_groups: Sequence[str]) -> list[tuple[str, str | None]]:
    """The (subscription, resource group or None) pairs a sweep lists."""
    if not resource_groups:
        return [(sub, None) for sub in subscriptions]
    return [(sub, rg) for sub in subscriptions for rg in resource_groups]


def in_scope(plan_id: PlanId, subscriptions: Sequence[str], resource_groups: Sequence[str]) -> bool:
    """Whether a plan is inside the configured scope (case-insensitive, as ARM ids are)."""
    if plan_id.subscription_id.lower() not in {s.lower() for s in subscriptions}:
        return False
    return not resource_groups or plan_id.resource_group.lower() in {rg.lower() for rg in resource_groups}
