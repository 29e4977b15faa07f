"""The sweep fan-out end to end: the real timer enqueues on Azurite's queue, the real queue-triggered
function sweeps each message's scope, the real poison function records scopes the queue gave up on.

Azurite (queue and table services) stands in for the app's storage. The Functions host itself cannot
run here, so :func:`drain` does what the host documents for a queue trigger: take a message (its
dequeue count goes up), call the function with a real ``azure.functions.QueueMessage``, delete the
message on success, make it visible again on failure, and after host.json's ``maxDequeueCount``
move it to ``<queue>-poison``. Several drainers run at once, as several instances would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter

from devtools.services import APP_ROOT, AZURITE_ACCOUNT, AZURITE_KEY, free_port, stop_process, wait_listening
from shared.runtime.fanout import POISON_QUEUE, SWEEP_QUEUE

from .conftest import OTHER_SUB, SUB, compliant_plan, plan_body
from .test_functions_e2e import FUNCTIONS, arm_requests, patches, shutdown_of, tick

HOST = json.loads((APP_ROOT / "host.json").read_text())
THIRD_SUB = "22222222-3333-4444-5555-666666666666"
BIN = APP_ROOT / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's queue and table services, in memory; yields their connection string."""
    workdir = tmp_path_factory.mktemp("azurite-fanout")
    procs: list[subprocess.Popen[bytes]] = []
    ports = {}
    try:
        for service in ("queue", "table"):
            exe = BIN / f"azurite-{service}"
            if not exe.exists():
                pytest.fail(f"{exe} is missing: run `make test` (npm ci installs Azurite)", pytrace=False)
            port = ports[service] = free_port()
            log = (workdir / f"{service}.log").open("wb")
            argv = [str(exe), f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
            argv += ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                cwd=workdir,
                env={**os.environ, "AZURITE_ACCEPT_EULA": "true"},
                start_new_session=True,
            )
            procs.append(proc)
            assert wait_listening(proc, port, 30), f"Azurite {service} did not start"
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{ports['queue']}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{ports['table']}/{AZURITE_ACCOUNT};"
        )
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.fixture
def fanout(configure: Any, storage: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app with fan-out on, its own queue names' table and queues fresh for each test."""
    from azure.storage.queue import QueueServiceClient

    table = "fan" + os.urandom(4).hex()
    configure(
        AzureWebJobsStorage=storage,
        LABGUARD_SWEEP_FANOUT="on",
        LABGUARD_LEDGER_TABLE=table,
        LABGUARD_SUBSCRIPTIONS=f"{SUB},{OTHER_SUB},{THIRD_SUB}",
    )
    service = QueueServiceClient.from_connection_string(storage)
    for name in (SWEEP_QUEUE, POISON_QUEUE):
        service.get_queue_client(name).create_queue() if not _exists(service, name) else None
        service.get_queue_client(name).clear_messages()
    return service


def _exists(service: Any, name: str) -> bool:
    return any(q.name == name for q in service.list_queues(name_starts_with=name))


def queued(service: Any, name: str = SWEEP_QUEUE) -> list[dict[str, Any]]:
    """The messages on a queue, decoded as the host decodes them (base64), without taking them."""
    client = service.get_queue_client(name)
    return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]


async def drain(service: Any, *, instances: int = 3, visibility_s: int = 0) -> dict[str, int]:
    """Run the queue functions as the host runs them until both queues are empty.

    ``visibility_s`` stands in for host.json's visibilityTimeout (60 s) so the test does not wait.
    """
    max_dequeue = HOST["extensions"]["queues"]["maxDequeueCount"]
    calls = {"ok": 0, "failed": 0, "poisoned": 0}

    async def one(queue: str, function: str) -> bool:
        client = service.get_queue_client(queue)
        taken = await asyncio.to_thread(lambda: list(client.receive_messages(max_messages=1, visibility_timeout=30)))
        if not taken:
            return False
        raw = taken[0]
        metadata = {
            "Id": Datum(raw.id, "string"),
            "DequeueCount": Datum(str(raw.dequeue_count), "string"),
            "PopReceipt": Datum(raw.pop_receipt, "string"),
        }
        # Decoded exactly as the Python worker decodes a queue trigger's payload and metadata.
        message = QueueMessageInConverter.decode(
            Datum(base64.b64decode(raw.content), "bytes"), trigger_metadata=metadata
        )
        assert isinstance(message, func.QueueMessage) and message.dequeue_count == raw.dequeue_count
        try:
            await FUNCTIONS[function].get_user_function()(message)
        except Exception:
            calls["failed"] += 1
            if raw.dequeue_count >= max_dequeue:  # the host moves it to <queue>-poison
                await asyncio.to_thread(service.get_queue_client(POISON_QUEUE).send_message, raw.content)
                await asyncio.to_thread(client.delete_message, raw)
                calls["poisoned"] += 1
            else:
                await asyncio.to_thread(client.update_message, raw, visibility_timeout=visibility_s)
            return True
        calls["ok"] += 1
        await asyncio.to_thread(client.delete_message, raw)
        return True

    async def instance() -> None:
        idle = 0
        while idle < 3:
            busy = await one(SWEEP_QUEUE, "sweep_scope") or await one(POISON_QUEUE, "sweep_scope_poison")
            idle = 0 if busy else idle + 1
            if not busy:
                await asyncio.sleep(0.05)

    await asyncio.gather(*(instance() for _ in range(instances)))
    return calls


def records(caplog: Any, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith(event + " ")
    ]


def test_the_queue_functions_are_indexed_on_the_sweep_queue_and_its_poison_queue() -> None:
    for name, queue in (("sweep_scope", SWEEP_QUEUE), ("sweep_scope_poison", POISON_QUEUE)):
        (binding,) = [json.loads(b) for b in FUNCTIONS[name].get_raw_bindings()]
        assert binding["type"] == "queueTrigger" and binding["queueName"] == queue
        assert binding["connection"] == "AzureWebJobsStorage"  # identity-based in Azure (__queueServiceUri)
    assert POISON_QUEUE == SWEEP_QUEUE + "-poison"  # the host's name for the poison queue
    queues = HOST["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64" and queues["maxDequeueCount"] >= 2


async def test_the_timer_only_enqueues_and_each_scope_is_swept_once_with_one_summary(
    emu: Any, fanout: Any, caplog: Any
) -> None:
    plans = [plan_body(f"drifted-{i}", sub=sub) for i, sub in enumerate((SUB, OTHER_SUB, THIRD_SUB, SUB))]
    plans.append(compliant_plan("fine", sub=THIRD_SUB))
    for body in plans:
        emu.put_plan(body)
    emu.clear_requests()
    caplog.set_level("INFO", logger="labguard")

    await tick()
    assert arm_requests(emu) == []  # the timer read nothing: it only enqueued
    messages = queued(fanout)
    assert sorted(m["subscription"] for m in messages) == sorted([SUB, OTHER_SUB, THIRD_SUB])
    (enqueued,) = records(caplog, "sweep.enqueued")
    assert {m["run"] for m in messages} == {enqueued["run_id"]} and {m["scopes"] for m in messages} == {3}

    calls = await drain(fanout)
    assert calls == {"ok": 3, "failed": 0, "poisoned": 0}
    assert len(patches(emu)) == 4
    for body in plans:
        assert shutdown_of(emu, body["id"])["idleDelay"] in ("PT30M", "PT15M")
    scopes = records(caplog, "sweep.scope")
    assert sorted(s["scope"] for s in scopes) == sorted(f"/subscriptions/{s}" for s in (SUB, OTHER_SUB, THIRD_SUB))
    (summary,) = records(caplog, "sweep.summary")  # one per run, assembled from the scopes' rows
    assert summary["run_id"] == enqueued["run_id"] and summary["scopes"] == 3 and summary["scopes_failed"] == 0
    assert summary["fixed"] == 4 and summary["compliant"] == 1 and summary["plans"] == 5
    assert summary["arm_calls"] == sum(s["arm_calls"] for s in scopes)


async def test_a_scope_that_keeps_failing_is_retried_then_poisoned_and_the_run_still_reports(
    emu: Any, fanout: Any, caplog: Any
) -> None:
    for i, sub in enumerate((SUB, OTHER_SUB, THIRD_SUB)):
        emu.put_plan(plan_body(f"drifted-{i}", sub=sub))
    # Listing OTHER_SUB's plans is refused every time (the role is missing there, say).
    emu.add_fault(
        "GET", rf"/subscriptions/{OTHER_SUB}/providers/Microsoft.LabServices/labPlans", status=403, count=None
    )
    caplog.set_level("INFO", logger="labguard")
    await tick()
    calls = await drain(fanout)
    max_dequeue = HOST["extensions"]["queues"]["maxDequeueCount"]
    assert calls == {"ok": 2 + 1, "failed": max_dequeue, "poisoned": 1}  # 2 scopes + the poison handler
    (failed,) = records(caplog, "sweep.scope-failed")
    assert failed["scope"] == f"/subscriptions/{OTHER_SUB}"
    (summary,) = records(caplog, "sweep.summary")
    assert summary["scopes"] == 3 and summary["scopes_failed"] == 1
    assert summary["failed_scopes"] == [f"/subscriptions/{OTHER_SUB}"]
    assert summary["fixed"] == 2 and summary["failed"] == 1
    assert queued(fanout) == [] and queued(fanout, POISON_QUEUE) == []


async def test_a_message_that_is_not_a_scope_is_refused_in_one_line_and_not_retried(
    emu: Any, fanout: Any, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="labguard")
    fanout.get_queue_client(SWEEP_QUEUE).send_message(base64.b64encode(b'{"run": "x; drop"}').decode())
    calls = await drain(fanout, instances=1)
    assert calls == {"ok": 1, "failed": 0, "poisoned": 0}
    (bad,) = records(caplog, "sweep.message-malformed")
    assert "run" in bad["error"] and "drop" not in bad["error"]
    assert arm_requests(emu) == []


async def test_auto_sweeps_a_small_estate_in_one_invocation(emu: Any, fanout: Any, configure: Any, caplog: Any) -> None:
    configure(LABGUARD_SWEEP_FANOUT="auto")
    emu.put_plan(plan_body("small"))
    caplog.set_level("INFO", logger="labguard")
    await tick()
    assert queued(fanout) == [] and not records(caplog, "sweep.enqueued")
    (summary,) = records(caplog, "sweep.summary")
    assert summary["fixed"] == 1 and "run_id" not in summary
