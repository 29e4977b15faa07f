"""A sweep's writes do not hold a slot while the service completes them (issue 18, item 1).

With writes that take seconds to complete and only two slots, every drifted plan is written before
the first write's completion is read: the waits run beside the sweep, each poll taking a slot only for
its own request. The event path still waits (bounded) for its one write, and proves it.
"""

from __future__ import annotations

import json
from typing import Any

from .conftest import plan_body
from .test_functions_e2e import arm_requests, deliver, tick, write_event


def records(caplog: Any, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith(event + " ")
    ]


def plan_reads_after_its_patch(calls: list[dict[str, Any]]) -> list[int]:
    """Indexes of reads of a plan that come after that plan's PATCH (the completion waits and proofs)."""
    patched: set[str] = set()
    found = []
    for i, call in enumerate(calls):
        path = call["path"].lower()
        if call["method"] == "PATCH":
            patched.add(path)
        elif call["method"] == "GET" and path in patched:
            found.append(i)
    return found


async def test_every_write_goes_out_before_the_first_completion_is_read(emu: Any, configure: Any, caplog: Any) -> None:
    configure(LABGUARD_CONCURRENCY="2")
    emu.configure(lro_delay_s=1.5)  # each write completes 1.5 s after it is accepted (Retry-After: 2)
    bodies = [plan_body(f"slow-{i}") for i in range(6)]
    for body in bodies:
        emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")
    await tick()
    calls = arm_requests(emu)
    writes = [i for i, c in enumerate(calls) if c["method"] == "PATCH"]
    proofs = plan_reads_after_its_patch(calls)
    assert len(writes) == 6 and len(proofs) >= 6
    assert max(writes) < min(proofs), "a write waited for another write's completion"
    (summary,) = records(caplog, "sweep.summary")
    assert summary["fixed"] == 6 and summary["proof_deferred"] == 0
    assert len(records(caplog, "plan.fixed")) == 6
    # Polled at the Retry-After the service gave, not every few hundred milliseconds: one read per write.
    assert len(proofs) == 6


async def test_the_event_path_still_waits_for_its_write_and_proves_it(emu: Any, configure: Any, caplog: Any) -> None:
    emu.configure(lro_delay_s=1.0)
    body = plan_body("event-slow")
    emu.put_plan(body)
    caplog.set_level("INFO", logger="labguard")
    await deliver(write_event(body["id"]))
    (fixed,) = records(caplog, "plan.fixed")
    assert fixed["plan_id"].endswith("/event-slow")
