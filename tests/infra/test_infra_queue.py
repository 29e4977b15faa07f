"""The sweep fan-out's infra: the queue and its poison queue, the run table, identity-based queue access,
and host.json's queue settings, in step with the code (shared/runtime/fanout.py, handlers/queue_sweep.py)."""

from __future__ import annotations

import json

from infra_support import ROOT, body, module, resources_of_type

from shared.runtime.fanout import POISON_QUEUE, SWEEP_QUEUE, run_table_name
from shared.runtime.settings import Settings

QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
HOST = json.loads((ROOT / "host.json").read_text())


def queue_names() -> set[str]:
    storage = module("storage")
    default = storage["parameters"]["sweepQueueName"]["default"]
    names = set()
    for queue in resources_of_type(storage, QUEUE).values():
        name = body(queue)["name"]
        names.add(default if name == "sweepQueueName" else name.replace("${sweepQueueName}", default))
    return names


def test_the_template_creates_the_sweep_queue_and_the_poison_queue_the_functions_read():
    assert queue_names() == {SWEEP_QUEUE, POISON_QUEUE}
    handler = (ROOT / "handlers" / "queue_sweep.py").read_text()
    assert f'queue_name="{SWEEP_QUEUE}"' in handler and f'queue_name="{POISON_QUEUE}"' in handler


def test_the_run_table_sits_beside_the_ledger_table():
    storage = module("storage")
    tables = resources_of_type(storage, "Microsoft.Storage/storageAccounts/tableServices/tables")
    names = {body(t)["name"] for t in tables.values()}
    assert "${ledgerTableName}runs" in names
    assert run_table_name("labguardnotices") == "labguardnoticesruns"


def test_the_queue_trigger_connects_with_the_app_identity():
    app = module("functionapp")
    platform = app["variables"]["platformSettings"]["value"]
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    assert platform["AzureWebJobsStorage__queueServiceUri"] == "queueEndpoint"
    access = body(app["resources"]["hostQueueAccess"])
    assert access["scope"] == "storage"
    role = access["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert app["variables"][role]["value"] == STORAGE_QUEUE_DATA_CONTRIBUTOR  # send, receive, delete, update
    # The code sends with the same identity on the same endpoint (no connection string in Azure).
    settings = Settings.from_env({"AzureWebJobsStorage__queueServiceUri": "https://stx.queue.core.windows.net/"})
    assert settings.queue_endpoint == "https://stx.queue.core.windows.net"


def test_host_json_retries_a_failed_scope_then_poisons_it():
    queues = HOST["extensions"]["queues"]
    assert 2 <= queues["maxDequeueCount"] <= 10  # retried, then labguard-sweep-poison
    hours, minutes, seconds = (int(p) for p in queues["visibilityTimeout"].split(":"))
    assert 10 <= hours * 3600 + minutes * 60 + seconds <= 600  # a throttled subscription gets time to recover
    assert 1 <= queues["batchSize"] <= 8  # scopes one instance sweeps at once (each with its own concurrency)
    assert queues["messageEncoding"] == "base64"  # what shared.runtime.fanout.SweepQueue sends


def test_the_fanout_settings_are_parameters_with_safe_defaults():
    main_params = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert main_params["sweepFanout"]["value"] == "${LABGUARD_SWEEP_FANOUT=}"
    assert Settings.from_env({}).sweep_fanout == "auto"
