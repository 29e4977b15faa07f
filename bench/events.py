"""Child process: Event Grid events through the indexed ``eventgrid_lab_plan`` function, one at a time.

Each event is decoded as the Python worker decodes it (``EventGridEventInConverter``) outside the
timing, then the function labguard registers (``app.get_functions()``) is awaited. Per event:
``total`` = wall time of that await; ``arm`` = time spent inside azure-core's aiohttp transport
``send`` (request out, response and body in: the ARM round trip, measured around the transport);
``own`` = total - arm, i.e. labguard, the SDK pipeline policies, JSON, evaluation and logging.
The first event (it builds the runtime and fetches the token) is reported apart as ``first``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from bench.child import apply_env, capture_logs, emit, read_spec

_in_transport = [0.0]


def _instrument_transport() -> None:
    from azure.core.pipeline.transport import AioHttpTransport

    original = AioHttpTransport.send

    async def timed(self: Any, request: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, request, **kwargs)
        finally:
            _in_transport[0] += time.perf_counter() - started

    AioHttpTransport.send = timed  # type: ignore[method-assign]


def write_event(plan_id: str) -> dict[str, Any]:
    """A ResourceWriteSuccess for a plan as a subscription system topic sends it, by a lab owner."""
    sub = plan_id.split("/")[2]
    return {
        "id": str(uuid.uuid4()),
        "topic": f"/subscriptions/{sub}",
        "subject": plan_id,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-23T10:00:00Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": plan_id, "action": "Microsoft.LabServices/labPlans/write", "evidence": {}},
            "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": str(uuid.uuid4())},
            "correlationId": str(uuid.uuid4()),
            "resourceProvider": "Microsoft.LabServices",
            "resourceUri": plan_id,
            "operationName": "Microsoft.LabServices/labPlans/write",
            "status": "Succeeded",
            "subscriptionId": sub,
        },
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.functions.eventgrid import EventGridEventInConverter
    from azure.functions.meta import Datum

    from function_app import app
    from shared.runtime.runs import close_runtimes

    _instrument_transport()
    logs = capture_logs()
    function = next(f for f in app.get_functions() if f.get_function_name() == "eventgrid_lab_plan")
    user_function = function.get_user_function()
    samples: list[dict[str, float]] = []
    first: dict[str, float] = {}
    for n, plan_id in enumerate([spec["warmup_plan"], *spec["plans"]]):
        event = EventGridEventInConverter.decode(Datum(json.dumps(write_event(plan_id)), "json"), trigger_metadata={})
        _in_transport[0] = 0.0
        handed_in = time.time()  # the endpoint's request log uses the same clock: event -> PATCH from outside
        started = time.perf_counter()
        await user_function(event)
        total = time.perf_counter() - started
        sample = {"total": total, "arm": _in_transport[0], "own": total - _in_transport[0], "handed_in": handed_in}
        if n == 0:
            first = sample
        else:
            samples.append(sample)
    await close_runtimes()
    return {"first": first, "samples": samples, "log_records": logs.records}


def main() -> None:
    spec = read_spec()
    apply_env(spec)
    emit(asyncio.run(run(spec)))


if __name__ == "__main__":
    main()
