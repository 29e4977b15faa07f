"""Child process: a fresh interpreter handles ONE Event Grid event, as a new Functions worker does.

Started by the parent (``bench.outside.first_events``), which notes ``time.monotonic()`` just before it
spawns this process (CLOCK_MONOTONIC is one clock for every process on the machine), so the first event is
timed from process start, interpreter start-up included. In here, in the worker's order: ``import
function_app`` and ``app.get_functions()`` (indexing), then the event is decoded as the worker decodes it
(``EventGridEventInConverter``) and the indexed function is awaited; the function's own time runs from that
await's entry to its return. Also reported: the top-level packages the first invocation imported (what it
loads that indexing did not). Prints one JSON line.

It imports nothing of the bench: the parent passes the app settings and the event in the spec, so the same
file runs against another labguard tree (``cwd`` and ``PYTHONPATH`` that tree: the code as it was when an
issue was filed, measured the same way).
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    import asyncio
    import json
    import os

    spec = json.loads(sys.stdin.read())
    os.environ.update(spec["env"])
    asyncio.run(run(spec))


async def run(spec: dict[str, object]) -> None:
    import json

    started = time.monotonic()
    from function_app import app

    function = next(f for f in app.get_functions() if f.get_function_name() == "eventgrid_lab_plan")
    user_function = function.get_user_function()
    indexed = time.monotonic()

    from azure.functions.eventgrid import EventGridEventInConverter
    from azure.functions.meta import Datum

    event = EventGridEventInConverter.decode(Datum(json.dumps(spec["event"]), "json"), trigger_metadata={})
    before = set(sys.modules)
    handed_in = time.time()
    entry = time.monotonic()
    await user_function(event)
    done = time.monotonic()
    loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
    try:
        from shared.runtime.runs import close_runtimes
    except ImportError:  # an older tree
        from shared.runs import close_runtimes  # type: ignore[import-not-found,no-redef]

    await close_runtimes()
    sys.stdout.write(
        json.dumps(
            {
                "child_started": started,
                "indexed": indexed,
                "entry": entry,
                "done": done,
                "handed_in_epoch": handed_in,
                "own_s": done - entry,
                "modules_loaded_by_first_call": len(set(sys.modules) - before),
                "packages_loaded_by_first_call": loaded,
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
