"""The Event Grid subscription admits exactly the events the handler acts on.

The event types and operations come from the code (shared/events.py), the function name from the
functions the app really registers (function_app.app), and the filter from the parsed template.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import pytest
from infra_support import (
    INFRA,
    ROOT,
    accessor_path,
    body,
    condition,
    function_call,
    load_json,
    main,
    module,
    resolve_name,
    resources_of_type,
)

from shared.events import HANDLED_EVENT_TYPES, HANDLED_OPERATIONS, IgnoredEvent, PlanEvent, parse_event

RG = "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-labs"
PLAN = f"{RG}/providers/Microsoft.LabServices/labPlans/plan1"
LAB = f"{RG}/providers/Microsoft.LabServices/labs/lab1"
VM = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm1"


def eventgrid() -> dict[str, Any]:
    return module("eventgrid")


def event_subscription() -> dict[str, Any]:
    (sub,) = resources_of_type(eventgrid(), "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    return sub


def subscription_filter() -> dict[str, Any]:
    return body(event_subscription())["properties"]["filter"]


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
    assert set(subscription_filter()) == {"includedEventTypes", "advancedFilters", "enableAdvancedFilteringOnArrays"}
    assert subscription_filter()["enableAdvancedFilteringOnArrays"] is False


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
    assert admitted(event_type, operation) == isinstance(outcome, PlanEvent)
    if not admitted(event_type, operation):
        assert isinstance(outcome, IgnoredEvent)


def test_destination_is_the_event_grid_function_the_app_registers():
    destination = body(event_subscription())["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    props = destination["properties"]
    assert props["resourceId"] == "${functionAppId}/functions/${functionName}"
    name = eventgrid()["parameters"]["functionName"]["default"]
    functions = registered_functions()
    assert functions[name]["type"] == "eventGridTrigger"
    assert [n for n, t in functions.items() if t["type"] == "eventGridTrigger"] == [name]
    assert props["maxEventsPerBatch"] == 1
    main_params = body(main()["modules"]["eventGrid"])["params"]
    assert accessor_path(main_params["functionAppId"]) == ["functionApp", "outputs", "functionAppId"]


def test_timer_function_reads_the_schedule_setting_the_template_sets():
    timers = [t for t in registered_functions().values() if t["type"] == "timerTrigger"]
    assert [t["schedule"] for t in timers] == ["%LABGUARD_SCHEDULE%"]
    assert "LABGUARD_SCHEDULE" in main()["variables"]["appSettings"]["value"]


def test_retries_then_dead_letters_to_the_blob_container():
    props = body(event_subscription())["properties"]
    retry = props["retryPolicy"]
    for key, bounds in (("maxDeliveryAttempts", (1, 30)), ("eventTimeToLiveInMinutes", (1, 1440))):
        kind, param = resolve_name(eventgrid(), retry[key])
        assert kind == "param"
        assert bounds[0] <= param["default"] <= bounds[1]
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    destination = dead_letter["deadLetterDestination"]
    assert destination["endpointType"] == "StorageBlob"
    assert destination["properties"]["blobContainerName"] == "deadLetterContainerName"
    # main passes the container the storage module creates.
    passed = body(main()["modules"]["eventGrid"])["params"]["deadLetterContainerName"]
    assert passed["operator"]["operands"]["operand_1"] == "storage"
    storage = module("storage")
    (container,) = [
        c
        for c in resources_of_type(storage, "Microsoft.Storage/storageAccounts/blobServices/containers").values()
        if body(c)["name"] == "deadLetterContainerName"
    ]
    assert body(container)["properties"]["publicAccess"] == "None"


def test_topic_identity_may_write_dead_letters_to_that_container_only():
    (assignment,) = resources_of_type(eventgrid(), "Microsoft.Authorization/roleAssignments").values()
    assert body(assignment)["scope"] == "deadLetterContainer"
    assert "deadLetterAccess" in body(event_subscription())["dependsOn"]


def test_event_subscription_waits_for_the_deployed_function():
    # Event Grid validates an AzureFunction endpoint when the subscription is created, so it is
    # created only once the code is deployed (azure.yaml's postdeploy hook provisions again).
    assert condition(event_subscription()) == "deployEventSubscription"
    assert eventgrid()["parameters"]["deployEventSubscription"]["default"] is False
    passed = body(main()["modules"]["eventGrid"])["params"]["deployEventSubscription"]
    kind, param = resolve_name(main(), passed)
    assert kind == "param" and param["default"] is False
    fed = load_json(INFRA / "main.parameters.json")["parameters"]["deployEventSubscription"]["value"]
    assert fed == "${LABGUARD_EVENT_SUBSCRIPTION=false}"
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        text = (INFRA / "hooks" / hook).read_text(encoding="utf-8")
        assert "azd env set LABGUARD_EVENT_SUBSCRIPTION true" in text
        assert "azd provision --no-prompt" in text
    assert (ROOT / "azure.yaml").is_file()
