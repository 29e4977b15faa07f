"""Event Grid trigger: a lab plan was written somewhere in scope; reconcile that one plan.

Accepts Event Grid schema and CloudEvents 1.0 (azure.functions decodes either). Thin by design:
the SDKs and the core are imported inside the call, so indexing the app stays cheap (cold start).
"""

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("eventgrid_lab_plan")
@bp.event_grid_trigger(arg_name="event")
async def eventgrid_lab_plan(event: func.EventGridEvent) -> None:
    from shared.runtime.runs import on_event

    if isinstance(event, func.CloudEvent):  # CloudEvents 1.0 schema
        await on_event(
            event_id=event.id,
            event_type=event.type,
            subject=event.subject,
            data=event.get_json(),
            event_time=event.time,
        )
    else:
        await on_event(
            event_id=event.id,
            event_type=event.event_type,
            subject=event.subject,
            data=event.get_json(),
            event_time=event.event_time,
        )
