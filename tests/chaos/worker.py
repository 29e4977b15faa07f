"""A second Functions worker for the chaos test: one timer invocation of the real app, in its own process.

The chaos test starts it mid-run and kills it (SIGKILL) while it sweeps, as a host recycling an instance
would; whatever it had in memory (notices it sent, writes it was waiting for) dies with it. Settings come
from the environment, as for the host. Prints ``sweeping`` when the sweep starts and ``done`` at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


async def main() -> None:
    from azure.functions.meta import Datum
    from azure.functions.timer import TimerRequestConverter

    from function_app import app
    from shared.runtime.runs import RunFailed, close_runtimes

    functions = {f.get_function_name(): f for f in app.get_functions()}
    timer = TimerRequestConverter.decode(Datum(json.dumps({"IsPastDue": False}), "json"), trigger_metadata={})
    print("sweeping", flush=True)
    try:
        await functions["timer_sweep"].get_user_function()(timer)
    except RunFailed as exc:
        print(f"run failed: {str(exc)[:200]}", flush=True)
    finally:
        await close_runtimes()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
