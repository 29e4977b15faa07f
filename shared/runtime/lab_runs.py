"""The trigger side of labs: one lab write event, and the labs of a plan that changed.

Kept beside :mod:`shared.runtime.runs` (which calls it) so the plan trigger code stays as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.runtime.events import LabEvent
from shared.runtime.logs import record
from shared.runtime.reconcile import PlanOutcome, in_scope

log = logging.getLogger("labguard.runs")


async def on_lab_event(
    event: LabEvent, env: Mapping[str, str] | None, write_wait_s: float, event_time: datetime | None = None
) -> PlanOutcome | None:
    """Reconcile one lab an event names. Raises RunFailed or BusyRetry (redelivery) as plan events do."""
    from shared.errors import RunFailed
    from shared.runtime.runs import _retry_if_busy, current_runtime, load_settings, reconcile_event

    settings = load_settings(env)
    if not settings.labs:
        record(log, logging.INFO, "event.ignored", event_id=event.event_id, reason="labs are off (LABGUARD_LABS)")
        return None
    if not in_scope(event.lab_id.scope, settings.subscriptions, settings.resource_groups):
        record(log, logging.INFO, "event.out-of-scope", event_id=event.event_id, lab_id=event.lab_id.key)
        return None
    runtime = await current_runtime(env)
    labs: Any = runtime.reconciler.labs
    correlation_id = event.correlation_id or event.event_id
    own = await runtime.own_principal()
    if own is not None and event.caller_object_id == own:
        record(log, logging.INFO, "event.own-write", event_id=event.event_id, lab_id=event.lab_id.key)
        return None
    work = labs.reconcile_lab(event.lab_id, correlation_id=correlation_id, write_wait_s=write_wait_s)
    outcome, settled = await reconcile_event(
        runtime, work, event, {"lab_id": event.lab_id.key}, event.lab_id.key, correlation_id
    )
    if settled:
        return outcome
    if outcome.status == "failed":
        raise RunFailed(f"event {event.event_id}: {outcome.detail}")
    _retry_if_busy(outcome, event.event_id, event_time, correlation_id)
    return outcome


async def labs_of_changed_plan(runtime: Any, plan_id: Any, correlation_id: str | None) -> list[PlanOutcome]:
    """A plan's write may move its labs' bounds' context: re-evaluate the labs that name it (labPlanId)."""
    labs = runtime.reconciler.labs
    if labs is None:
        return []
    outcomes: list[PlanOutcome] = await labs.reconcile_labs_of_plan(plan_id, correlation_id=correlation_id)
    if any(o.status == "fixed" or o.written for o in outcomes):  # the labs' writes go into the change log too
        from shared.runtime.changes import record_changes

        await record_changes(runtime.settings, outcomes, trigger="event", correlation_id=correlation_id)
    for outcome in outcomes:  # the plan's writer did not write these labs: systemData says who did
        await runtime.tell_changer(outcome, None, correlation_id)
    return outcomes
