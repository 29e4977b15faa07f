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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

from shared.core.drift import Evaluation, Finding, evaluate
from shared.core.plans import LabPlan, PlanId
from shared.core.proof import unexpected_changes
from shared.core.rules import Policy
from shared.core.text import shown
from shared.edge.arm import BadPlan, LabPlansArm
from shared.errors import ArmError, PlanGone, ProviderNotRegistered, Throttled
from shared.runtime.logs import record
from shared.runtime.write_backoff import BackoffState, MemoryBackoff, WriteBackoff

log = logging.getLogger("labguard.reconcile")

Status = Literal[
    "compliant",
    "drifted",
    "fixed",
    "skipped",
    "exempt",
    "provisioning-failed",
    "failed",
    "gone",
    "unconverged",  # written, but the proof read still finds drift or another leaf moved; backing off
    "write-failed",  # labguard's own write left the plan Failed: the admin is told, not the owner
    "proof-deferred",  # written; the service had not finished within the wait, the next sweep proves it
]

BUSY_STATES = frozenset({"creating", "updating", "deleting", "locked"})
MAX_WRITE_ATTEMPTS = 3  # a write answered 429/5xx is tried again, after a fresh read, at most this often
MAX_THROTTLE_WAIT_S = 60.0
CHANGED_SINCE_PREVIEW = "changed since the preview; not written"
FRESH_FOR_S = 1.0  # a read older than this (a slow backoff lookup, say) is read again before the write


@dataclass(frozen=True)
class _Deferral:
    """Set by a sweep: where a written plan's wait for completion goes (beside the sweep, not in a slot),
    and the bound its polls share with the sweep's other requests."""

    defer: Callable[[str, Callable[[], Coroutine[Any, Any, PlanOutcome]]], None]  # key, how to start the proof
    gate: asyncio.Semaphore


_DEFER_PROOF: ContextVar[_Deferral | None] = ContextVar("labguard_defer_proof", default=None)


class FailureNotifier(Protocol):
    """What the core needs from the notice channels (shared.notices.delivery.Notifier provides it)."""

    @property
    def enabled(self) -> bool: ...

    async def notify_failure(self, plan: LabPlan, *, correlation_id: str | None = None) -> Any: ...

    async def resolve(self, plan: LabPlan) -> None: ...

    async def open_snapshot(self) -> frozenset[str] | None: ...

    async def notify_admin(self, plan: LabPlan, *, reason: str, correlation_id: str | None = None) -> Any: ...

    def may_have_open(self, snapshot: frozenset[str] | None, plan: LabPlan) -> bool: ...


@dataclass(frozen=True)
class PlanOutcome:
    """What happened to one plan in one run."""

    plan_id: str
    status: Status
    evaluation: Evaluation | None = None
    detail: str | None = None
    notice: Any = None
    lab: Any = None  # a lab's outcome: its shared.core.lab_drift.LabEvaluation (``plan_id`` is then the lab's id)
    written: bool = False  # labguard wrote the plan in this run (the change log records it, whatever the proof)

    @property
    def findings(self) -> tuple[Finding, ...]:
        if self.lab is not None:
            return tuple(self.lab.findings)
        return self.evaluation.findings if self.evaluation else ()


@dataclass
class SweepSummary:
    """One sweep's counts, for the one summary record and for the caller to decide success."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    list_errors: list[tuple[str, ArmError]] = field(default_factory=list)  # scope, why it could not be listed
    not_registered: list[str] = field(default_factory=list)  # scopes whose subscription lacks Microsoft.LabServices
    empty_scopes: list[str] = field(default_factory=list)  # scopes listed fine with no lab plan: a typo, usually
    duration_s: float = 0.0
    arm_calls: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    lab_counts: Counter[str] = field(default_factory=Counter)  # labs, by outcome status (shared.runtime.lab_reconcile)

    @property
    def failed(self) -> int:
        """Plans and labs that failed plus scopes that could not be listed: either fails the run."""
        return self.counts["failed"] + self.lab_counts["failed"] + len(self.list_errors)

    def as_record(self) -> dict[str, Any]:
        return {
            "compliant": self.counts["compliant"],
            "drifted": self.counts["drifted"],
            "fixed": self.counts["fixed"],
            "skipped": self.counts["skipped"],
            "exempt": self.counts["exempt"],
            "provisioning_failed": self.counts["provisioning-failed"],
            "failed": self.counts["failed"],
            "gone": self.counts["gone"],
            "unconverged": self.counts["unconverged"],
            "write_failed": self.counts["write-failed"],
            "proof_deferred": self.counts["proof-deferred"],
            "scopes_unlisted": sorted(scope for scope, _ in self.list_errors),
            "not_registered": sorted(self.not_registered),
            "plans": sum(self.counts.values()),
            "duration_s": round(self.duration_s, 3),
            "arm_calls": sum(self.arm_calls.values()),
            "arm_calls_by_kind": dict(sorted(self.arm_calls.items())),
            "throttled": self.throttled,
            "empty_scopes": sorted(self.empty_scopes),
            "warning": empty_scope_warning(self.empty_scopes),
            **(
                {"labs": sum(self.lab_counts.values()), "labs_by_status": dict(sorted(self.lab_counts.items()))}
                if self.lab_counts
                else {}
            ),
        }


def scope_path(subscription: str, resource_group: str | None) -> str:
    return f"/subscriptions/{subscription}" + (f"/resourceGroups/{resource_group}" if resource_group else "")


def empty_scope_warning(scopes: Sequence[str]) -> str | None:
    """Nothing found is not compliance: name the scopes that held no lab plan, and what to check."""
    if not scopes:
        return None
    return (
        f"no lab plans in {', '.join(sorted(scopes))}: check LABGUARD_SUBSCRIPTIONS / LABGUARD_RESOURCE_GROUPS "
        "for a typo, or that labguard's identity can read there"
    )


class WriteLoop:
    """The one write loop for plans (:class:`Reconciler`) and labs (``shared.runtime.lab_reconcile.LabReconciler``).

    The backoff lookup comes before the read; each attempt waits for the write budget, reads the resource
    right before the write (also after any wait or retry), sends one PATCH that the SDK never re-sends,
    waits out a 429 or transient error, and proves the write by reading again. Records name the resource's
    kind: ``plan.change`` with ``plan_id``, ``lab.change`` with ``lab_id`` (and the lab's ``plan_id``).
    A subclass says how its kind is read, judged, named and reported (the methods that raise here).
    """

    kind: ClassVar[str] = "plan"  # the records' prefix and id field
    gone: ClassVar[type[ArmError]] = PlanGone  # what a read or write raises when the resource was deleted
    _log: ClassVar[logging.Logger] = log
    _arm: Any  # get/list by kind; write_slot, send_patch and wait_for_write by the resource's id
    _policy: Policy
    _clock: Callable[[], datetime]
    _dry_run: bool
    backoff: WriteBackoff
    _sleep: Callable[[float], Awaitable[None]]
    _approved: Mapping[str, Mapping[str, Any]] | None = None
    _own_identities: Callable[[], Awaitable[frozenset[str]]] | None = None

    @property
    def mode(self) -> str:
        return self._policy.mode

    # What differs by kind ------------------------------------------------------------------------

    async def _read(self, resource_id: Any) -> Any:
        """A fresh read of the resource (raises ``gone`` on 404)."""
        raise NotImplementedError

    def _evaluate(self, resource: Any) -> Any:
        """The resource judged against the policy now (an Evaluation or a LabEvaluation)."""
        raise NotImplementedError

    def _subject(self, evaluation: Any) -> Any:
        """The resource an evaluation is of."""
        raise NotImplementedError

    async def _act_again(self, resource: Any, correlation_id: str | None) -> PlanOutcome:
        """Judge and act on a resource just read (the read before a write found nothing to write)."""
        raise NotImplementedError

    def _outcome(self, key: str, status: Status, evaluation: Any, detail: str | None = None) -> PlanOutcome:
        raise NotImplementedError

    def _ids(self, resource: Any) -> dict[str, Any]:
        """The id fields of the resource's records."""
        return {f"{self.kind}_id": resource.id.key}

    def _last_writer(self, resource: Any) -> tuple[str | None, str | None]:
        """Who made the resource's last write and their kind (systemData), untrusted; None when not said."""
        raise NotImplementedError

    async def _write_failed(
        self, resource: Any, evaluation: Any, correlation_id: str | None, *, why: str
    ) -> PlanOutcome:
        """labguard's own write left the resource Failed."""
        raise NotImplementedError

    # The loop ------------------------------------------------------------------------------------

    async def _guarded(
        self, key: str, work: Coroutine[Any, Any, PlanOutcome], correlation_id: str | None
    ) -> PlanOutcome:
        """One resource's work in a sweep: its failure becomes its outcome, never the sweep's end."""
        event, id_field = f"{self.kind}.failed", f"{self.kind}_id"
        try:
            return await work
        except self.gone:
            return PlanOutcome(key, "gone", detail="deleted during the sweep")
        except ArmError as exc:
            record(self._log, logging.ERROR, event, error=str(exc), correlation_id=correlation_id, **{id_field: key})
            return PlanOutcome(key, "failed", detail=str(exc))
        except Exception as exc:  # one resource never stops the sweep; the run still fails at its end
            self._log.exception("traceback of the unexpected failure on %s", key)
            detail = f"unexpected {type(exc).__name__}: {exc}"
            record(self._log, logging.ERROR, event, error=detail, correlation_id=correlation_id, **{id_field: key})
            return PlanOutcome(key, "failed", detail=detail)

    def _record_changes(self, evaluation: Any, event: str, correlation_id: str | None) -> None:
        resource = self._subject(evaluation)
        who, kind = self._last_writer(resource)
        for finding in evaluation.drift:
            record(
                self._log,
                logging.WARNING,
                event,
                **self._ids(resource),
                rule=finding.rule,
                field=finding.path,
                observed=finding.observed,
                new=finding.patch_value,
                mode=self.mode,
                dry_run=self._dry_run or None,
                changed_by=_changed_by(who, kind),
                correlation_id=correlation_id,
            )

    async def _write(
        self,
        resource: Any,
        evaluation: Any,
        *,
        fresh: bool,
        read_at: float,
        correlation_id: str | None,
        wait_s: float | None,
    ) -> PlanOutcome:
        """Write the patch: read right before every attempt, never let the SDK re-send, then prove it.

        Each attempt first waits for the write budget (the pacer), then reads the resource, then writes at
        once; a 429 or a transient error is waited out and the next attempt reads again, so a resource that
        turned Failed or busy meanwhile is not written.
        """
        kind, key = self.kind, resource.id.key
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            # The backoff lookup (a table call, up to seconds) comes before the read, never between the
            # read and the write: a whole profile sent as read must be as the owner left it just now.
            backoff = await self.backoff.get(resource.id)
            held = self._backoff_holds(backoff, resource, evaluation, correlation_id)
            if held is not None:
                return held
            slot = await self._arm.write_slot(resource.id, max_wait_s=None if wait_s is None else wait_s / 4)
            waited = time.monotonic() - read_at > FRESH_FOR_S or (slot is not None and getattr(slot, "delay", 0) > 0)
            if attempt > 1 or not fresh or waited:
                resource = await self._read(resource.id)  # the read right before the write
                evaluation = self._evaluate(resource)
                if evaluation.status == "failed" or not evaluation.patch:
                    record(
                        self._log,
                        logging.INFO,
                        f"{kind}.write-dropped",
                        **self._ids(resource),
                        state=shown(resource.provisioning_state, quote=False, limit=60),
                        reason="the read right before the write found nothing to write",
                        correlation_id=correlation_id,
                    )
                    return await self._act_again(resource, correlation_id)
                held = self._backoff_holds(backoff, resource, evaluation, correlation_id)
                if held is not None:
                    return held
            if self._approved is not None and _plain(self._approved.get(key)) != _plain(evaluation.patch):
                record(
                    self._log,
                    logging.WARNING,
                    f"{kind}.write-unapproved",
                    **self._ids(resource),
                    patch=evaluation.patch,
                    reason="the patch differs from the one approved in the preview",
                    correlation_id=correlation_id,
                )
                self._record_changes(evaluation, f"{kind}.drift", correlation_id)
                return self._outcome(key, "drifted", evaluation, CHANGED_SINCE_PREVIEW)
            self._record_changes(evaluation, f"{kind}.change", correlation_id)
            try:
                accepted = await self._arm.send_patch(resource.id, evaluation.patch, slot)
            except ArmError as exc:
                if not exc.transient or attempt == MAX_WRITE_ATTEMPTS:
                    raise
                wait = min(exc.retry_after_s, MAX_THROTTLE_WAIT_S) if isinstance(exc, Throttled) else float(attempt)
                if wait_s is not None and wait > wait_s / 4:
                    raise  # a bounded (event) run does not sit out a long Retry-After: redelivery will
                record(
                    self._log,
                    logging.WARNING,
                    f"{kind}.write-retry",
                    **self._ids(resource),
                    status=exc.status,
                    wait_s=wait,
                    attempt=attempt,
                    note=f"the {kind} is read again before the next write",
                    correlation_id=correlation_id,
                )
                await self._sleep(wait)
                continue
            deferral = _DEFER_PROOF.get()
            if deferral is not None and wait_s is None:  # a sweep: the wait goes beside it, the slot is freed
                start = partial(self._proof_beside, resource, evaluation, accepted, correlation_id, deferral.gate)
                deferral.defer(key, start)
                return _DEFERRED
            proved = await self._prove(resource, evaluation, accepted, correlation_id=correlation_id, wait_s=wait_s)
            return replace(proved, written=True)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _proof_beside(
        self, before: Any, evaluation: Any, accepted: Any, correlation_id: str | None, gate: asyncio.Semaphore
    ) -> Coroutine[Any, Any, PlanOutcome]:
        """The proof of a write, run beside a sweep: guarded (its failure is its outcome) and marked written."""
        proof = self._prove(before, evaluation, accepted, correlation_id=correlation_id, wait_s=None, gate=gate)
        return self._guarded(before.id.key, _marked_written(proof), correlation_id)

    def _backoff_holds(
        self, state: BackoffState | None, resource: Any, evaluation: Any, correlation_id: str | None
    ) -> PlanOutcome | None:
        """The resource's earlier write did not converge and it is not due yet: no write, say when it is.

        Synchronous on purpose: it runs between the read and the write, where nothing may be slow.
        """
        now = self._clock()
        if state is None or not state.holds(now, (f.path for f in evaluation.drift)):
            return None
        record(
            self._log,
            logging.WARNING,
            f"{self.kind}.write-backoff",
            **self._ids(resource),
            fields=sorted(state.fields),
            attempts=state.attempts,
            retry_at=state.retry_at.isoformat(),
            reason=state.reason,
            correlation_id=correlation_id,
        )
        detail = (
            f"earlier writes did not converge ({state.attempts}x: {state.reason}); "
            f"not written again before {state.retry_at.isoformat(timespec='minutes')}"
        )
        return self._outcome(resource.id.key, "unconverged", evaluation, detail)

    async def _prove(
        self,
        before: Any,
        evaluation: Any,
        accepted: Any,
        *,
        correlation_id: str | None,
        wait_s: float | None,
        gate: asyncio.Semaphore | None = None,
    ) -> PlanOutcome:
        """Wait for the write by reading the resource, then evaluate that read: fixed, unconverged or failed.

        ``gate`` bounds the requests in flight: each poll holds it only for its own request.
        """
        kind, key = self.kind, before.id.key
        after = await self._arm.wait_for_write(before.id, accepted, timeout_s=wait_s, gate=gate)
        if after is None:
            record(
                self._log,
                logging.WARNING,
                f"{kind}.proof-deferred",
                **self._ids(before),
                patch=evaluation.patch,
                answered=accepted.status,
                waited_s=wait_s,
                note="the service had not finished the write; the next sweep reads and proves it",
                correlation_id=correlation_id,
            )
            return self._outcome(key, "proof-deferred", evaluation, "write still running; the next sweep proves it")
        if after.provisioning_state == "Failed":
            return await self._write_failed(after, evaluation, correlation_id, why="the write labguard just made")
        proof = self._evaluate(after)
        written = frozenset(f.field for f in evaluation.drift)
        moved = unexpected_changes(before, after, written)
        still = list(proof.violations)
        if not still and not moved:
            record(
                self._log,
                logging.INFO,
                f"{kind}.fixed",
                **self._ids(before),
                patch=evaluation.patch,
                correlation_id=correlation_id,
            )
            await self.backoff.clear(before.id)
            return self._outcome(key, "fixed", evaluation)
        if await self._written_by_someone_else(after):
            # Someone wrote the resource after labguard did: the difference is their change, not a write of
            # ours that did not converge, so no backoff. Their write's event (and the next sweep) judges it.
            record(
                self._log,
                logging.WARNING,
                f"{kind}.changed-during-write",
                **self._ids(before),
                patch=evaluation.patch,
                still_drifted=[f.path for f in still],
                note="written again by someone else before the proof read; judged afresh, no backoff",
                correlation_id=correlation_id,
            )
            await self.backoff.clear(before.id)
            status: Status = "drifted" if still else "compliant"
            return self._outcome(key, status, proof, "changed by someone else during labguard's write")
        difference: list[dict[str, Any]] = [
            {"field": f.path, "written": _written(evaluation, f.field), "read_back": f.observed} for f in still
        ] + [{**change.as_dict(), "outside_patch": True} for change in moved]
        reason = "; ".join(
            [f"{f.leaf} read back {f.observed!r}" for f in still]
            + [f"{c.leaf} changed {c.before!r} -> {c.after!r}" for c in moved]
        )
        fields = [f.path for f in still] + [c.path for c in moved] + [".".join(path) for path in written]
        state = await self.backoff.unconverged(before.id, self._clock(), fields, reason)
        record(
            self._log,
            logging.ERROR,
            f"{kind}.unconverged",
            **self._ids(before),
            patch=evaluation.patch,
            difference=difference,
            attempts=state.attempts,
            retry_at=state.retry_at.isoformat(),
            note="not written again before retry_at unless another field drifts",
            correlation_id=correlation_id,
        )
        detail = f"written, but {reason}; next try after {state.retry_at.isoformat(timespec='minutes')}"
        return self._outcome(key, "unconverged", evaluation, detail)

    async def _written_by_someone_else(self, resource: Any) -> bool:
        """Whether systemData names a last writer that is not labguard (False when either is unknown)."""
        who, _ = self._last_writer(resource)
        if self._own_identities is None or not who:
            return False
        try:
            ours = await self._own_identities()
        except Exception as exc:  # identity unknown: cannot tell, keep the cautious path (backoff)
            record(self._log, logging.WARNING, "identity.unknown", error=type(exc).__name__)
            return False
        return bool(ours) and who.lower() not in ours


class Reconciler(WriteLoop):
    """Evaluates plans against the policy and, in enforce mode, applies the minimal patch."""

    _arm: LabPlansArm

    def __init__(
        self,
        arm: LabPlansArm,
        policy: Policy,
        *,
        notifier: FailureNotifier | None = None,
        concurrency: int = 16,
        list_concurrency: int = 4,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
        backoff: WriteBackoff | None = None,
        own_identities: Callable[[], Awaitable[frozenset[str]]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        labs: Any = None,
        approved_patches: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._arm = arm
        self._policy = policy
        self._notifier = notifier
        self._concurrency = max(1, concurrency)
        self._list_concurrency = max(1, list_concurrency)
        self._clock = clock
        self._dry_run = dry_run
        self.backoff: WriteBackoff = backoff if backoff is not None else MemoryBackoff()
        self._own_identities = own_identities
        self._sleep = sleep
        self.labs = labs  # a shared.runtime.lab_reconcile.LabReconciler: the sweep lists and reconciles labs too
        # {plan key: patch} a person approved after a preview: only those exact patches are sent.
        self._approved = approved_patches

    @property
    def policy(self) -> Policy:
        return self._policy

    async def _read(self, resource_id: Any) -> LabPlan:
        return await self._arm.get_plan(resource_id)

    def _evaluate(self, resource: Any) -> Evaluation:
        return evaluate(resource, self._policy, self._clock())

    def _subject(self, evaluation: Any) -> LabPlan:
        return evaluation.plan  # type: ignore[no-any-return]

    async def _act_again(self, resource: Any, correlation_id: str | None) -> PlanOutcome:
        return await self._act(resource, fresh=True, correlation_id=correlation_id)

    def _outcome(self, key: str, status: Status, evaluation: Any, detail: str | None = None) -> PlanOutcome:
        return PlanOutcome(key, status, evaluation, detail=detail)

    def _last_writer(self, resource: Any) -> tuple[str | None, str | None]:
        return resource.modified_by, resource.modified_by_type

    async def reconcile_plan(
        self,
        plan_id: PlanId,
        *,
        correlation_id: str | None = None,
        write_wait_s: float | None = None,
        caused_by_us: bool = False,
    ) -> PlanOutcome:
        """Event path: read the plan fresh, evaluate, act. Transient ARM errors propagate (redelivery).

        ``write_wait_s`` bounds the wait for a write to finish (Event Grid gives a delivery 30 s);
        ``caused_by_us``: the event says labguard's identity made the write it reports.
        """
        try:
            plan = await self._arm.get_plan(plan_id)
        except PlanGone:
            record(log, logging.INFO, "plan.gone", plan_id=plan_id.key, correlation_id=correlation_id)
            return PlanOutcome(plan_id.key, "gone", detail="plan not found (deleted)")
        return await self._act(
            plan, fresh=True, correlation_id=correlation_id, write_wait_s=write_wait_s, caused_by_us=caused_by_us
        )

    async def sweep(
        self,
        scopes: Sequence[tuple[str, str | None]],
        *,
        on_outcome: Callable[[PlanOutcome], Awaitable[None] | None] | None = None,
        correlation_id: str | None = None,
        summary_event: str = "sweep.summary",
        summary_fields: dict[str, Any] | None = None,
    ) -> SweepSummary:
        """Timer path: list every plan in scope and reconcile each with bounded concurrency.

        Plans stream through a bounded queue, and at most ``list_concurrency`` scopes are listed at
        once, so memory follows the concurrency, not the estate or its number of subscriptions. One
        plan's failure is recorded and the sweep goes on. A write does not hold one of the
        ``concurrency`` slots while the service completes it: its wait (by reading the plan) runs
        beside the sweep, each poll taking a slot only for its own request.
        """
        started = time.monotonic()
        calls_before = Counter(self._arm.counter.by_kind)
        throttled_before = self._arm.counter.throttled
        summary = SweepSummary()
        # One ledger query up front, so recovered plans are resolved without a query per plan.
        open_notices = await self._notifier.open_snapshot() if self._notifier is not None else None
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=self._concurrency * 4)
        listing = asyncio.Semaphore(self._list_concurrency)
        lab_listing = asyncio.Semaphore(self._list_concurrency)
        requests = asyncio.Semaphore(self._concurrency)  # completion polls: one slot per request, not per wait

        async def produce(subscription: str, resource_group: str | None) -> None:
            where = scope_path(subscription, resource_group)
            listed = 0
            try:
                async with listing:
                    async for item in self._arm.list_plans(subscription, resource_group):
                        listed += 1
                        settled = self._settled(item, open_notices)
                        if settled is None:
                            await queue.put(item)
                        else:
                            await report(settled)
                if not listed:
                    summary.empty_scopes.append(where)
                if self.labs is not None:  # labs beside plans: same paging, pacing and budget
                    # A bound of their own, as large: the next scopes list their plans meanwhile, and memory
                    # follows the two bounds (lab pages were unbounded: every scope reached them at once).
                    async with lab_listing:
                        async for lab in self.labs.list_scope(subscription, resource_group):
                            await queue.put(lab)
            except ProviderNotRegistered as exc:
                # No plans can exist there: say so once per sweep instead of failing every sweep.
                summary.not_registered.append(exc.scope)
                record(
                    log, logging.WARNING, "sweep.not-registered", scope=exc.scope, note="not registered, no plans here"
                )
            except ArmError as exc:  # a scope, not a plan: in summary.failed, never in the plan counts
                summary.failures.append((where, f"listing failed: {exc}"))
                summary.list_errors.append((where, exc))
                record(log, logging.ERROR, "sweep.list-failed", scope=where, error=str(exc))

        async def report(outcome: PlanOutcome) -> None:
            if outcome.lab is not None:
                summary.lab_counts[outcome.status] += 1
            else:
                summary.counts[outcome.status] += 1
            if outcome.status == "failed":
                summary.failures.append((outcome.plan_id, outcome.detail or "failed"))
            if on_outcome is not None:
                maybe = on_outcome(outcome)
                if maybe is not None:
                    await maybe

        async def consume() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                async with requests:
                    if self.labs is not None and self.labs.handles(item):
                        outcome = await self.labs.safe_act(item, correlation_id, open_notices)
                    else:
                        outcome = await self._safe_act(item, correlation_id, open_notices)
                if outcome is not _DEFERRED:
                    await report(outcome)

        async def finish(start: Callable[[], Coroutine[Any, Any, PlanOutcome]]) -> None:
            await report(await start())

        async def feed() -> None:
            await asyncio.gather(*(produce(sub, rg) for sub, rg in scopes))
            for _ in range(self._concurrency):
                await queue.put(None)

        # A TaskGroup, so an exception anywhere (a caller's on_outcome, say) cancels the rest instead
        # of leaving producers blocked on a full queue that no worker drains any more.
        try:
            async with asyncio.TaskGroup() as group:

                def defer(key: str, start: Callable[[], Coroutine[Any, Any, PlanOutcome]]) -> None:
                    task = finish(start)
                    try:
                        group.create_task(task)
                    except RuntimeError:  # the sweep is being cancelled: nothing is proved now; the next sweep does
                        task.close()
                        raise asyncio.CancelledError from None

                token = _DEFER_PROOF.set(_Deferral(defer, requests))
                try:
                    for _ in range(self._concurrency):
                        group.create_task(consume())
                    group.create_task(feed())
                finally:
                    _DEFER_PROOF.reset(token)
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None
        summary.duration_s = time.monotonic() - started
        summary.arm_calls = dict(Counter(self._arm.counter.by_kind) - calls_before)
        summary.throttled = self._arm.counter.throttled - throttled_before
        level = logging.WARNING if summary.empty_scopes else logging.INFO
        record(
            log,
            level,
            summary_event,
            mode=self.mode,
            correlation_id=correlation_id,
            **(summary_fields or {}),
            **summary.as_record(),
        )
        return summary

    def _settled(self, item: LabPlan | BadPlan, open_notices: frozenset[str] | None) -> PlanOutcome | None:
        """A listed plan that needs nothing beyond its evaluation (compliant, no unknown value, no notice to
        close): its outcome now, without a worker's turn (most of an estate; the queue hop cost more than the
        evaluation). None for anything else, which a worker then acts on as usual, evaluating it again."""
        if type(item) is not LabPlan:
            return None
        try:
            evaluation = evaluate(item, self._policy, self._clock())
        except Exception:  # the worker's guarded path records it
            return None
        if evaluation.status != "compliant" or evaluation.unknown_values:
            return None
        if self._may_close_notices(item, open_notices):
            return None
        return PlanOutcome(item.id.key, "compliant", evaluation)

    def _may_close_notices(self, plan: LabPlan, open_notices: frozenset[str] | None) -> bool:
        """A Succeeded plan may have notice records of an old failure to close (the sweep's snapshot says)."""
        notifier = self._notifier
        return (
            notifier is not None
            and notifier.enabled
            and plan.provisioning_state == "Succeeded"
            and notifier.may_have_open(open_notices, plan)
        )

    async def _safe_act(
        self, item: LabPlan | BadPlan, correlation_id: str | None, open_notices: frozenset[str] | None
    ) -> PlanOutcome:
        if isinstance(item, BadPlan):
            record(log, logging.ERROR, "plan.unreadable", plan_id=item.id, error=item.reason)
            return PlanOutcome(item.id, "failed", detail=f"unreadable plan JSON: {item.reason}")
        act = self._act(item, fresh=False, correlation_id=correlation_id, open_notices=open_notices)
        return await self._guarded(item.id.key, act, correlation_id)

    async def _act(
        self,
        plan: LabPlan,
        *,
        fresh: bool,
        correlation_id: str | None,
        open_notices: frozenset[str] | None = None,
        write_wait_s: float | None = None,
        caused_by_us: bool = False,
    ) -> PlanOutcome:
        read_at = time.monotonic()  # the caller read the plan just now (or, in a sweep, when listing)
        evaluation = evaluate(plan, self._policy, self._clock())
        key = plan.id.key
        for unknown in evaluation.unknown_values:  # never written over: a person must look at it
            record(
                log,
                logging.WARNING,
                "plan.unknown-value",
                plan_id=key,
                rule=unknown.rule,
                field=unknown.path,
                observed=shown(unknown.observed, limit=80),
                correlation_id=correlation_id,
            )

        if evaluation.status == "failed":  # provisioningState Failed: tell the support contacts (or the admin)
            return await self._report_failure(plan, evaluation, correlation_id, caused_by_us=caused_by_us)
        if self._notifier is not None and self._may_close_notices(plan, open_notices):
            await self._notifier.resolve(plan)
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
        if not writing:
            self._record_changes(evaluation, "plan.drift", correlation_id)
            return PlanOutcome(key, "drifted", evaluation)
        return await self._write(
            plan, evaluation, fresh=fresh, read_at=read_at, correlation_id=correlation_id, wait_s=write_wait_s
        )

    async def _report_failure(
        self, plan: LabPlan, evaluation: Evaluation, correlation_id: str | None, *, caused_by_us: bool = False
    ) -> PlanOutcome:
        if caused_by_us:
            return await self._write_failed(plan, evaluation, correlation_id, why="the failure event names labguard")
        if await self._last_written_by_us(plan):
            return await self._write_failed(plan, evaluation, correlation_id, why="systemData names labguard")
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
        if getattr(notice, "deferred", False):  # still delivering past the wait: acknowledged, the sweep checks again
            return PlanOutcome(plan.id.key, "provisioning-failed", evaluation, detail="notice deferred", notice=notice)
        if not getattr(notice, "all_delivered", True):
            # Not delivered everywhere: fail this plan so the run is recorded as failed and retried.
            return PlanOutcome(plan.id.key, "failed", evaluation, detail="failure notice not delivered", notice=notice)
        return PlanOutcome(plan.id.key, "provisioning-failed", evaluation, notice=notice)

    async def _last_written_by_us(self, plan: LabPlan) -> bool:
        """Whether systemData says labguard's own identity made the plan's last write."""
        if self._own_identities is None or not plan.modified_by:
            return False
        if (plan.modified_by_type or "").lower() not in ("application", "managedidentity"):
            return False
        try:
            ours = await self._own_identities()
        except Exception as exc:  # identity unknown: treat the failure as the owner's, as before
            record(log, logging.WARNING, "identity.unknown", error=type(exc).__name__)
            return False
        return plan.modified_by.lower() in ours

    async def _write_failed(
        self, plan: LabPlan, evaluation: Evaluation, correlation_id: str | None, *, why: str
    ) -> PlanOutcome:
        """labguard's own write left the plan Failed: the admin's problem, never the plan owner's."""
        error = plan.error
        key = plan.id.key
        record(
            log,
            logging.ERROR,
            "plan.write-failed",
            plan_id=key,
            code=error.code if error else None,
            action=error.action if error else None,
            timestamp=error.timestamp if error else None,
            why=why,
            note="labguard's own write failed: reported to the admin, not to the plan's support contact",
            correlation_id=correlation_id,
        )
        detail = (
            f"labguard's own write failed ({why}): {error.code if error and error.code else 'no error code'}; "
            "reported to the admin, not the plan's owner"
        )
        if self._notifier is None or not self._notifier.enabled or self._dry_run:
            return PlanOutcome(key, "write-failed", evaluation, detail=detail)
        notice = await self._notifier.notify_admin(plan, reason=detail, correlation_id=correlation_id)
        results = getattr(notice, "results", ())
        if any(getattr(r, "status", "") == "failed" for r in results):
            why_failed = "admin notice of a failed write not delivered"
            return PlanOutcome(key, "failed", evaluation, detail=why_failed, notice=notice)
        return PlanOutcome(key, "write-failed", evaluation, detail=detail, notice=notice)


# What _write returns in a sweep when the proof was handed off: the proof task reports the outcome.
_DEFERRED = PlanOutcome("", "proof-deferred", detail="handed to the completion wait")


def _written(evaluation: Evaluation, field: tuple[str, ...]) -> str | None:
    return next((f.patch_value for f in evaluation.drift if f.field == field), None)


def _changed_by(who: str | None, kind: str | None) -> str | None:
    """Who made the change being undone (systemData), capped and on one line; None if not said."""
    if not who:
        return None
    return f"{shown(who, quote=False, limit=120)} ({shown(kind, quote=False, limit=20) if kind else 'unknown kind'})"


async def _marked_written(proof: Coroutine[Any, Any, PlanOutcome]) -> PlanOutcome:
    """A proof run beside the sweep: its outcome says the plan was written, whatever the proof found."""
    return replace(await proof, written=True)


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


def _plain(value: Any) -> Any:
    """A patch as plain dicts, to compare a fresh patch with an approved one."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
