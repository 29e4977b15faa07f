"""The Event Grid subscription admits exactly the events the handler acts on.

The event types and operations come from the code (shared/runtime/events.py), the function name from the
functions the app really registers (function_app.app), and the filter from the `az` call the
postdeploy hook really makes (run with stand-in commands, hook_support.py). The system topic comes
from the parsed template.
"""

from __future__ import annotations

import functools
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hook_support import OUTPUTS, Sandbox, option_values, quick
from infra_support import (
    INFRA,
    ROOT,
    accessor_path,
    bicep_files,
    body,
    function_call,
    load_json,
    main,
    module,
    parse,
    resources_of_type,
)

from shared.runtime.events import (
    HANDLED_EVENT_TYPES,
    HANDLED_OPERATIONS,
    IgnoredEvent,
    LabEvent,
    PlanEvent,
    parse_event,
)

RG = "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-labs"
PLAN = f"{RG}/providers/Microsoft.LabServices/labPlans/plan1"
LAB = f"{RG}/providers/Microsoft.LabServices/labs/lab1"
VM = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm1"


def eventgrid() -> dict[str, Any]:
    return module("eventgrid")


@functools.cache
def hook_create_call() -> tuple[str, ...]:
    """The `az eventgrid system-topic event-subscription create` argv of one postdeploy run."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Sandbox(Path(tmp)).run("postdeploy.sh", quick())
    assert run.returncode == 0, run.stderr
    (create,) = run.az("eventgrid", "system-topic", "event-subscription", "create")
    return tuple(create)


def subscription_filter() -> dict[str, Any]:
    """The hook's filter, in the shape of the ARM resource's `filter` property."""
    create = list(hook_create_call())
    key, operator, *values = option_values(create, "--advanced-filter")
    return {
        "includedEventTypes": option_values(create, "--included-event-types"),
        "advancedFilters": [{"operatorType": operator, "key": key, "values": values}],
        "filterOptions": [o for o in create if o.startswith("--") and ("filter" in o or "subject" in o)],
    }


@functools.cache
def registered_functions() -> dict[str, dict[str, Any]]:
    """name -> trigger of each function function_app.py registers, as the Functions host indexes them.

    A private copy of the module: FunctionApp.get_functions() may run once per app object, and
    other tests index the shared `function_app.app`.
    """
    spec = importlib.util.spec_from_file_location("_function_app_for_infra_tests", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return {f.get_function_name(): f.get_trigger().get_dict_repr() for f in copy.app.get_functions()}


def test_system_topic_is_the_subscription_topic():
    (topic,) = resources_of_type(eventgrid(), "Microsoft.EventGrid/systemTopics").values()
    props = body(topic)["properties"]
    assert props["topicType"] == "Microsoft.Resources.Subscriptions"
    source = accessor_path(props["source"])
    assert source is not None and function_call(source[0]) == ("subscription", {"subscription_id": None})
    assert source[1:] == ["id"]
    assert body(topic)["location"] == "global"


def test_filter_event_types_are_exactly_the_handled_ones():
    types = subscription_filter()["includedEventTypes"]
    assert len(types) == len(set(types))
    assert set(types) == set(HANDLED_EVENT_TYPES)


def test_filter_operation_names_are_exactly_the_handled_ones():
    (advanced,) = subscription_filter()["advancedFilters"]
    assert advanced["operatorType"] == "StringIn"
    assert advanced["key"] == "data.operationName"
    assert set(advanced["values"]) == set(HANDLED_OPERATIONS)
    assert len(advanced["values"]) == len(set(advanced["values"]))


def test_filter_has_nothing_else_that_could_narrow_or_widen_it():
    # No subject filters, no second advanced filter, no array filtering.
    assert subscription_filter()["filterOptions"] == ["--advanced-filter"]


def admitted(event_type: str, operation: str) -> bool:
    """Event Grid's evaluation of this subscription's filter (string comparisons are case-insensitive)."""
    flt = subscription_filter()
    if event_type.lower() not in {t.lower() for t in flt["includedEventTypes"]}:
        return False
    for advanced in flt["advancedFilters"]:
        assert advanced["operatorType"] == "StringIn" and advanced["key"] == "data.operationName"
        if operation.lower() not in {v.lower() for v in advanced["values"]}:
            return False
    return True


CASES = [
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.LabServices/labPlans/write", PLAN),
    ("Microsoft.Resources.ResourceWriteFailure", "Microsoft.LabServices/labPlans/write", PLAN),
    ("Microsoft.Resources.ResourceWriteSuccess", "microsoft.labservices/labplans/write", PLAN),
    ("Microsoft.Resources.ResourceWriteCancel", "Microsoft.LabServices/labPlans/write", PLAN),
    ("Microsoft.Resources.ResourceDeleteSuccess", "Microsoft.LabServices/labPlans/delete", PLAN),
    ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.LabServices/labPlans/saveImage/action", PLAN),
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.LabServices/labs/write", LAB),
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Compute/virtualMachines/write", VM),
    ("Microsoft.Resources.ResourceWriteFailure", "Microsoft.Compute/virtualMachines/write", VM),
]


@pytest.mark.parametrize(("event_type", "operation", "uri"), CASES)
def test_filter_admits_an_event_exactly_when_the_handler_acts_on_it(event_type: str, operation: str, uri: str):
    data = {"operationName": operation, "resourceUri": uri, "status": "Succeeded"}
    outcome = parse_event(event_id="e1", event_type=event_type, subject=uri, data=data)
    assert admitted(event_type, operation) == isinstance(outcome, (PlanEvent, LabEvent))
    if not admitted(event_type, operation):
        assert isinstance(outcome, IgnoredEvent)


def test_destination_is_the_event_grid_function_the_app_registers():
    create = list(hook_create_call())
    assert option_values(create, "--endpoint-type") == ["azurefunction"]
    (endpoint,) = option_values(create, "--endpoint")
    app_id, name = endpoint.split("/functions/")
    assert app_id == OUTPUTS["LABGUARD_FUNCTION_APP_ID"]
    functions = registered_functions()
    assert functions[name]["type"] == "eventGridTrigger"
    assert [n for n, t in functions.items() if t["type"] == "eventGridTrigger"] == [name]
    assert option_values(create, "--max-events-per-batch") == ["1"]
    # The hook gets the app id from main.bicep's output of that name.
    assert accessor_path(main()["outputs"]["LABGUARD_FUNCTION_APP_ID"]["value"]) == [
        "functionApp",
        "outputs",
        "functionAppId",
    ]


def test_timer_function_reads_the_schedule_setting_the_template_sets():
    timers = [t for t in registered_functions().values() if t["type"] == "timerTrigger"]
    assert [t["schedule"] for t in timers] == ["%LABGUARD_SCHEDULE%"]
    assert "LABGUARD_SCHEDULE" in main()["variables"]["appSettings"]["value"]


def test_retries_then_dead_letters_to_the_blob_container():
    create = list(hook_create_call())
    assert 1 <= int(option_values(create, "--max-delivery-attempts")[0]) <= 30
    assert 1 <= int(option_values(create, "--event-ttl")[0]) <= 1440
    assert option_values(create, "--deadletter-identity") == ["systemassigned"]
    (container_id,) = option_values(create, "--deadletter-identity-endpoint")
    assert container_id == OUTPUTS["LABGUARD_DEAD_LETTER_CONTAINER_ID"]
    # main.bicep's output points at the container the storage module creates, private.
    output = main()["outputs"]["LABGUARD_DEAD_LETTER_CONTAINER_ID"]["value"]
    assert output == "${storage.outputs.storageAccountId}/blobServices/default/containers/${deadLetterContainerName}"
    storage = module("storage")
    (container,) = [
        c
        for c in resources_of_type(storage, "Microsoft.Storage/storageAccounts/blobServices/containers").values()
        if body(c)["name"] == "deadLetterContainerName"
    ]
    assert body(container)["properties"]["publicAccess"] == "None"
    passed = body(main()["modules"]["eventGrid"])["params"]["deadLetterContainerName"]
    assert accessor_path(passed) == ["storage", "outputs", "deadLetterContainerName"]


def test_topic_identity_may_write_dead_letters_to_that_container_only():
    (assignment,) = resources_of_type(eventgrid(), "Microsoft.Authorization/roleAssignments").values()
    assert body(assignment)["scope"] == "deadLetterContainer"


def test_no_template_creates_the_event_subscription():
    # Event Grid validates an AzureFunction endpoint when the subscription is created, and the function
    # exists only after the code deploy: the postdeploy hook owns the subscription, no provision does.
    for path in bicep_files():
        assert not resources_of_type(parse(path), "Microsoft.EventGrid/systemTopics/eventSubscriptions"), path.name
    assert "deployEventSubscription" not in main()["parameters"]
    fed = load_json(INFRA / "main.parameters.json")["parameters"]
    assert not [v for v in fed.values() if "LABGUARD_EVENT_SUBSCRIPTION" in v["value"]]
