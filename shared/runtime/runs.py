"""One run per trigger invocation: the glue between a Functions handler and the reconcile core.

Handlers stay thin (parse the input, call one function here, report); everything that decides
lives in the core. The expensive parts (credential, SDK client, policy, notice channels) are built
once per worker and event loop and passed into the core, not kept as module-level singletons in
the core itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import BusyRetry, MalformedEvent, RunFailed, SettingsError
from shared.runtime.events import IgnoredEvent, LabEvent, PlanEvent, event_label, parse_event
from shared.runtime.logs import record
from shared.runtime.reconcile import PlanOutcome, Reconciler, SweepSummary, in_scope, sweep_scopes
from shared.runtime.settings import Settings

if TYPE_CHECKING:
    from shared.core.rules import Policy

log = logging.getLogger("labguard.runs")
APP_ROOT = Path(__file__).resolve().parents[2]  # shared/runtime/runs.py -> the app root


@dataclass
class Runtime:
    """What a worker keeps between invocations: settings, policy, the ARM session and the notifier."""

    settings: Settings
    reconciler: Reconciler
    session: Any
    stack: AsyncExitStack
    _own_principal: str | None = None
    _own_known: bool = False
    _run_book: Any = None
    changer: Any = None  # shared.notices.changer.ChangerNotifier when LABGUARD_NOTIFY_CHANGER is on

    async def tell_changer(self, outcome: PlanOutcome, event: Any = None, correlation_id: str | None = None) -> None:
        """After a proved write (``fixed``): tell the person whose change it undid, if that is switched on.

        ``event``: the write event's caller (shared.notices.changer_message.Changer); None on the sweep path."""
        if self.changer is None or outcome.status != "fixed":
            return
        try:
            await self.changer.after_fix(outcome, event=event, correlation_id=correlation_id)
        except Exception as exc:  # a mail to a person never fails the fix, the event or the sweep
            record(
                log,
                logging.ERROR,
                "changer.failed",
                plan_id=outcome.plan_id,
                reason=f"unexpected {type(exc).__name__}",
                correlation_id=correlation_id,
            )

    async def run_book(self) -> Any:
        """The fan-out's run table (shared.runtime.fanout.RunBook), opened on first use and closed with the runtime."""
        if self._run_book is None:
            from shared.runtime.fanout import RunBook

            self._run_book = RunBook.from_settings(self.settings)
            self.stack.push_async_callback(self._run_book.close)
        return self._run_book

    async def own_principal(self) -> str | None:
        """Our identity's object id, read once from our own token, to recognise our own writes."""
        if not self._own_known:
            try:
                self._own_principal = await self.session.own_principal_id()
            except Exception as exc:
                record(log, logging.WARNING, "identity.unknown", error=type(exc).__name__)
            self._own_known = True
        return self._own_principal

    async def close(self) -> None:
        await self.stack.aclose()


class _IdentityCache:
    """Our own ids (object id, application id), read once from our token, to recognise our own writes."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._ids: frozenset[str] | None = None

    async def get(self) -> frozenset[str]:
        if self._ids is None:
            self._ids = await self._session.own_identities()
        return self._ids


_runtimes: dict[tuple[int, tuple[tuple[str, str], ...]], Runtime] = {}
EVENT_WRITE_WAIT_S = 20.0  # Event Grid waits 30 s for a delivery: the rest is left to the next sweep
BUSY_RETRY_FOR = timedelta(minutes=15)  # an event for a busy plan is redelivered at most this long (then the sweep)


def _fingerprint(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(("LABGUARD_", "AZURE_", "AzureWebJobs"))))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The app settings; a bad one is refused with one record naming it (never its value) before anything runs."""
    try:
        return Settings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        record(log, logging.ERROR, "settings.refused", error=str(exc))
        raise SettingsError(str(exc)) from None


async def build_runtime(
    settings: Settings, *, credential: Any | None = None, policy: Policy | None = None, **arm_options: Any
) -> Runtime:
    """Open the ARM session and the notice channels and load the policy; close with ``Runtime.close``.

    Requests are paced to ARM's per-subscription budget (one :class:`shared.edge.pacing.Pacer` per runtime,
    shared by sweeps and events) unless ``pacer=None`` is passed.
    """
    from shared.core.policy_check import load_checked_policy
    from shared.edge.arm import open_arm
    from shared.edge.pacing import Pacer
    from shared.runtime.write_backoff import MemoryBackoff, TableBackoff, WriteBackoff

    arm_options.setdefault("pacer", Pacer())

    policy_path = Path(settings.policy_file)
    if not policy_path.is_absolute():
        policy_path = APP_ROOT / policy_path
    if policy is None:
        policy = load_checked_policy(policy_path, mode_override=settings.mode_override)
    stack = AsyncExitStack()
    try:
        session = await stack.enter_async_context(open_arm(settings, credential=credential, **arm_options))
        notifier = None
        try:  # the storage clients: the SDK's message may quote the value (a key): name the setting, never the value
            if settings.notice_channel_set:  # without one, nothing to deliver through: delivery is not imported
                from shared.notices.delivery import Notifier

                notifier = await stack.enter_async_context(Notifier.from_settings(settings))
            table = TableBackoff.from_settings(settings)  # shared by every instance of a scaled-out app
        except ValueError:
            raise SettingsError(
                "AzureWebJobsStorage is not a valid storage connection string: write "
                "'UseDevelopmentStorage=true' for Azurite, or 'DefaultEndpointsProtocol=https;AccountName=...;...'"
                " (in Azure, an identity-based connection: AzureWebJobsStorage__accountName)"
            ) from None
        if notifier is not None and not notifier.enabled:
            notifier = None
        backoff: WriteBackoff = MemoryBackoff()
        if table is not None:
            stack.push_async_callback(table.close)
            backoff = table
        identities = _IdentityCache(session)
        reconciler = Reconciler(
            session.plans,
            policy,
            notifier=notifier,
            concurrency=settings.concurrency,
            list_concurrency=settings.list_concurrency,
            backoff=backoff,
            own_identities=identities.get,
            labs=_lab_reconciler(settings, session, policy, backoff, notifier),
        )
        changer = None
        if settings.notify_changer and notifier is not None:  # opt-in (it needs the mail relay, a channel)
            from shared.notices.changer import ChangerNotifier

            changer = ChangerNotifier.from_settings(settings, notifier)
    except BaseException:
        await stack.aclose()
        raise
    return Runtime(settings=settings, reconciler=reconciler, session=session, stack=stack, changer=changer)


#: Options the worker's runtimes open ARM with (:func:`shared.edge.arm.open_arm`): none in the app, so azure-core's
#: retry defaults; tests set ``retry`` so a transient fault costs no backoff sleep.
WORKER_ARM_OPTIONS: dict[str, Any] = {}


def _lab_reconciler(settings: Settings, session: Any, policy: Policy, backoff: Any, notifier: Any) -> Any:
    """Labs beside plans (LABGUARD_LABS, on by default), over the same ARM session, pacer and backoff."""
    if not settings.labs:
        return None
    from shared.edge.lab_arm import LabsArm
    from shared.runtime.lab_reconcile import LabReconciler

    return LabReconciler(LabsArm(session.plans), policy, backoff=backoff, notifier=notifier)


async def current_runtime(env: Mapping[str, str] | None = None) -> Runtime:
    """The worker's runtime for this event loop and configuration, built on first use."""
    env = os.environ if env is None else env
    key = (id(asyncio.get_running_loop()), _fingerprint(env))
    runtime = _runtimes.get(key)
    if runtime is None:
        runtime = await build_runtime(load_settings(env), **WORKER_ARM_OPTIONS)
        _runtimes[key] = runtime
        policy = runtime.reconciler.policy
        record(
            log,
            logging.INFO,
            "run.mode",
            mode=policy.mode,
            source=policy.mode_source,
            policy=policy.source,
            loaded=policy.load_note,
        )
    return runtime


async def close_runtimes() -> None:
    """Close every runtime opened on the running loop (tests and the CLI call this)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _runtimes if k[0] == loop_id]:
        await _runtimes.pop(key).close()


async def on_event(
    *,
    event_id: object,
    event_type: object,
    subject: object,
    data: object,
    env: Mapping[str, str] | None = None,
    event_time: datetime | None = None,
) -> PlanOutcome | None:
    """Handle one Event Grid event about a lab plan. Returns None when it was acknowledged unread.

    Raises (so Event Grid redelivers) on transient ARM failures, on permission errors an admin can fix,
    and when a failure notice could not be delivered.
    """

    try:
        event = parse_event(event_id=event_id, event_type=event_type, subject=subject, data=data)
    except MalformedEvent as exc:
        record(log, logging.ERROR, "event.malformed", event_id=event_label(event_id), error=str(exc))
        return None
    if isinstance(event, IgnoredEvent):
        record(log, logging.INFO, "event.ignored", event_id=event.event_id, reason=event.reason)
        return None
    if isinstance(event, LabEvent):
        from shared.runtime.lab_runs import on_lab_event

        return await on_lab_event(event, env, EVENT_WRITE_WAIT_S, event_time)
    settings = load_settings(env)
    if not in_scope(event.plan_id, settings.subscriptions, settings.resource_groups):
        record(log, logging.INFO, "event.out-of-scope", event_id=event.event_id, plan_id=event.plan_id.key)
        return None
    runtime = await current_runtime(env)
    correlation_id = event.correlation_id or event.event_id
    own = await runtime.own_principal()
    ours = own is not None and event.caller_object_id == own
    failure = event.event_type.endswith("WriteFailure")
    if ours and not failure:  # never drop a failure event for being ours: that failure is ours to report
        record(log, logging.INFO, "event.own-write", event_id=event.event_id, plan_id=event.plan_id.key)
        return None
    work = runtime.reconciler.reconcile_plan(
        event.plan_id,
        correlation_id=correlation_id,
        write_wait_s=EVENT_WRITE_WAIT_S,
        caused_by_us=ours and failure,
    )
    outcome, settled = await reconcile_event(
        runtime, work, event, {"plan_id": event.plan_id.key}, event.plan_id.key, correlation_id
    )
    if settled:
        return outcome
    if outcome.status not in ("gone", "failed"):
        from shared.runtime.lab_runs import labs_of_changed_plan

        await labs_of_changed_plan(runtime, event.plan_id, correlation_id)  # one lab's failure: the sweep's
    if outcome.status == "failed":
        raise RunFailed(f"event {event.event_id}: {outcome.detail}")
    _retry_if_busy(outcome, event.event_id, event_time, correlation_id)
    return outcome


async def reconcile_event(
    runtime: Runtime,
    work: Coroutine[Any, Any, PlanOutcome],
    event: PlanEvent | LabEvent,
    ids: dict[str, str],
    key: str,
    correlation_id: str,
) -> tuple[PlanOutcome, bool]:
    """The event path's one reconcile step for a plan or a lab: run ``work``, record it, log the write in the
    change log and tell whoever made the change it undid. Raises RunFailed (Event Grid redelivers) on a
    transient or permission error; returns (outcome, True) when an ARM error settles the event as failed."""
    from shared.errors import ArmError

    try:
        outcome = await work
    except ArmError as exc:
        record(
            log,
            logging.ERROR,
            "event.arm-error",
            event_id=event.event_id,
            **ids,
            status=exc.status,
            error=str(exc),
            correlation_id=correlation_id,
        )
        if exc.transient or exc.status in (401, 403):
            raise RunFailed(f"event {event.event_id}: {exc}; Event Grid will redeliver") from exc
        return PlanOutcome(key, "failed", detail=str(exc)), True
    record(
        log,
        logging.INFO,
        "event.done",
        event_id=event.event_id,
        **ids,
        status=outcome.status,
        correlation_id=correlation_id,
    )
    if outcome.status == "fixed" or outcome.written:  # every write is recorded, however it ended
        from shared.runtime.changes import record_changes

        await record_changes(runtime.settings, [outcome], trigger="event", correlation_id=correlation_id)
    await runtime.tell_changer(outcome, event.changer, correlation_id)
    return outcome, False


def _retry_if_busy(
    outcome: PlanOutcome, event_id: str, event_time: datetime | None, correlation_id: str | None
) -> None:
    """A change to a plan or lab that is busy now (a write running, Locked) is asked again of Event Grid.

    Bounded by the event's age: past BUSY_RETRY_FOR it is acknowledged and left to the sweep, so a
    plan locked for a day does not keep an event spinning.
    """
    if outcome.evaluation is not None:
        kind, state = "plan", (outcome.evaluation.plan.provisioning_state or "").lower()
    elif outcome.lab is not None:
        kind, state = "lab", (outcome.lab.lab.provisioning_state or "").lower()
    else:
        return
    if outcome.status != "skipped" or state not in ("creating", "updating", "deleting", "locked"):
        return
    now = datetime.now(UTC)
    when = event_time if event_time is None or event_time.tzinfo else event_time.replace(tzinfo=UTC)
    age = now - when if when is not None else timedelta(0)
    if age > BUSY_RETRY_FOR:
        record(
            log,
            logging.INFO,
            f"{kind}.busy-left-to-sweep",
            event_id=event_id,
            **{f"{kind}_id": outcome.plan_id},
            state=state,
            event_age_s=round(age.total_seconds()),
            correlation_id=correlation_id,
        )
        return
    record(
        log,
        logging.WARNING,
        f"{kind}.busy-retry",
        event_id=event_id,
        **{f"{kind}_id": outcome.plan_id},
        state=state,
        event_age_s=round(age.total_seconds()),
        retry_for_s=round(BUSY_RETRY_FOR.total_seconds()),
        correlation_id=correlation_id,
    )
    raise BusyRetry(f"event {event_id}: {kind} {outcome.plan_id} is {state}; Event Grid will deliver it again")


async def on_timer(*, past_due: bool, env: Mapping[str, str] | None = None) -> SweepSummary | str:
    """Sweep every plan in scope; raise at the end if any plan failed, so the host records it.

    With the fan-out (LABGUARD_SWEEP_FANOUT), only enqueue one message per scope and return the run id:
    the queue-triggered function sweeps each scope (:func:`on_scope_message`).
    """
    from shared.runtime.fanout import enqueue_run, fans_out, has_queue

    if past_due:
        record(log, logging.WARNING, "sweep.past-due", note="the previous schedule was missed; sweeping now")
    settings = load_settings(env)
    if not settings.subscriptions:
        raise RunFailed("LABGUARD_SUBSCRIPTIONS is empty: list the subscription ids to sweep, comma-separated")
    scopes = sweep_scopes(settings.subscriptions, settings.resource_groups)
    if fans_out(settings.sweep_fanout, len(scopes)):
        if not has_queue(settings):
            raise RunFailed(
                "LABGUARD_SWEEP_FANOUT needs a queue: set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri"
            )
        return await enqueue_run(settings, scopes)
    runtime = await current_runtime(env)
    from shared.runtime.sweep_outputs import after_sweep, wanted

    kept: list[PlanOutcome] = []  # every outcome for the page and digest, else only the changes made
    keep_all = wanted(settings)

    async def keep(outcome: PlanOutcome) -> None:
        if keep_all or outcome.status == "fixed" or outcome.written:  # every write goes into the change log
            kept.append(outcome)
        await runtime.tell_changer(outcome)  # the sweep has no claims: systemData says who

    summary = await runtime.reconciler.sweep(scopes, on_outcome=keep)
    failures = [(scope, str(exc)) for scope, exc in summary.list_errors]
    await after_sweep(settings, runtime.reconciler.policy, kept, list_failures=failures)
    if summary.failed:
        first = "; ".join(f"{plan}: {why}" for plan, why in summary.failures[:3])
        what = f"{summary.counts['failed']} plan(s) failed"
        if summary.list_errors:
            what += f", {len(summary.list_errors)} scope(s) could not be listed"
        raise RunFailed(f"{what} in this sweep: {first}")
    return summary


async def on_scope_message(
    *, body: str, dequeue_count: int = 1, message_id: str | None = None, env: Mapping[str, str] | None = None
) -> SweepSummary | None:
    """Sweep the one scope a fan-out message names, record its row, and report the run when it completes.

    A scope that could not be listed raises, so the host retries the message after the queue's
    visibility timeout (and moves it to the poison queue after maxDequeueCount). Plans that failed
    are counted in the scope's row and the run's summary; they do not retry the whole scope.
    """
    from shared.runtime.fanout import BadMessage, ScopeMessage

    try:
        message = ScopeMessage.from_json(body)
    except BadMessage as exc:  # not ours or hand-made: one line, no retry (a retry cannot fix it)
        record(log, logging.ERROR, "sweep.message-malformed", message_id=message_id, error=str(exc))
        return None
    runtime = await current_runtime(env)
    settings = runtime.settings
    scope = (message.subscription, message.resource_group)
    if message.subscription not in settings.subscriptions or (
        settings.resource_groups and message.resource_group not in settings.resource_groups
    ):
        # Out of scope now (settings changed since the timer enqueued it): not swept, but counted done.
        record(log, logging.WARNING, "sweep.scope-out-of-scope", run_id=message.run_id, scope=message.scope)
        summary = SweepSummary()
    else:
        from shared.runtime.changes import record_changes

        fixed: list[PlanOutcome] = []

        async def keep(outcome: PlanOutcome) -> None:
            if outcome.status == "fixed" or outcome.written:  # every write goes into the change log
                fixed.append(outcome)
            await runtime.tell_changer(outcome, None, message.run_id)

        summary = await runtime.reconciler.sweep(
            [scope],
            on_outcome=keep,
            correlation_id=message.run_id,
            summary_event="sweep.scope",
            summary_fields={"run_id": message.run_id, "scope": message.scope, "dequeue_count": dequeue_count},
        )
        # The change log gets each scope's changes; the compliance page and digest need the whole estate
        # and are written only by a sweep in one invocation (LABGUARD_SWEEP_FANOUT=off).
        await record_changes(settings, fixed, trigger="sweep", correlation_id=message.run_id)
        if summary.list_errors:
            where, error = summary.list_errors[0]
            raise RunFailed(f"{where}: listing failed ({error}); the queue delivers this scope again")
    book = await runtime.run_book()
    totals = await book.scope_finished(message, summary.as_record(), status="done")
    if totals is not None:
        level = logging.ERROR if totals["failed"] or totals["scopes_failed"] else logging.INFO
        record(log, level, "sweep.summary", mode=runtime.reconciler.mode, correlation_id=message.run_id, **totals)
    return summary


async def on_scope_poison(
    *, body: str, dequeue_count: int = 0, message_id: str | None = None, env: Mapping[str, str] | None = None
) -> None:
    """A scope message the host gave up on (maxDequeueCount): record ``sweep.scope-failed`` and count it."""
    from shared.runtime.fanout import BadMessage, ScopeMessage

    try:
        message = ScopeMessage.from_json(body)
    except BadMessage as exc:
        record(log, logging.ERROR, "sweep.message-malformed", message_id=message_id, error=str(exc), poison=True)
        return
    record(
        log,
        logging.ERROR,
        "sweep.scope-failed",
        run_id=message.run_id,
        scope=message.scope,
        message_id=message_id,
        note="the queue gave up on this scope after host.json's maxDequeueCount; the next run sweeps it again",
        correlation_id=message.run_id,
    )
    runtime = await current_runtime(env)
    book = await runtime.run_book()
    failed = {"failed": 1}
    totals = await book.scope_finished(message, failed, status="failed", error="retries spent (poison queue)")
    if totals is not None:
        record(
            log, logging.ERROR, "sweep.summary", mode=runtime.reconciler.mode, correlation_id=message.run_id, **totals
        )
