"""Event parsing: which events reach the reconcile core, and which are acknowledged and dropped."""

import pytest

from shared.core.plans import PlanId
from shared.errors import MalformedEvent
from shared.runtime.events import IgnoredEvent, PlanEvent, parse_event

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
PLAN = f"/subscriptions/{SUB}/resourceGroups/testrg123/providers/Microsoft.LabServices/labPlans/testlabplan"
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def data(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "operationName": "Microsoft.LabServices/labPlans/write",
        "resourceUri": PLAN,
        "status": "Succeeded",
        "correlationId": "corr-1",
        "claims": {OID: "AAAA-bbbb"},
    }
    base.update(overrides)
    return base


def test_write_success_names_the_plan_the_caller_and_the_correlation() -> None:
    event = parse_event(event_id="e1", event_type="Microsoft.Resources.ResourceWriteSuccess", subject=PLAN, data=data())
    assert isinstance(event, PlanEvent)
    assert event.plan_id == PlanId.parse(PLAN)
    assert event.caller_object_id == "aaaa-bbbb"
    assert event.correlation_id == "corr-1"


def test_resource_ids_are_read_case_insensitively() -> None:
    lower = PLAN.replace("resourceGroups", "resourcegroups").replace(
        "Microsoft.LabServices/labPlans", "microsoft.labservices/labplans"
    )
    event = parse_event(
        event_id="e1", event_type="Microsoft.Resources.ResourceWriteFailure", subject=None, data=data(resourceUri=lower)
    )
    assert isinstance(event, PlanEvent)
    assert event.plan_id == PlanId.parse(PLAN)


@pytest.mark.parametrize(
    ("event_type", "payload", "why"),
    [
        ("Microsoft.Resources.ResourceDeleteSuccess", data(), "event type"),
        (
            "Microsoft.Resources.ResourceWriteSuccess",
            data(operationName="Microsoft.LabServices/labs/users/write"),
            "operation",
        ),
    ],
)
def test_other_events_are_acknowledged_and_ignored(event_type: str, payload: dict[str, object], why: str) -> None:
    event = parse_event(event_id="e2", event_type=event_type, subject=PLAN, data=payload)
    assert isinstance(event, IgnoredEvent)
    assert why in event.reason


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        (None, data()),
        ("Microsoft.Resources.ResourceWriteSuccess", "not an object"),
        ("Microsoft.Resources.ResourceWriteSuccess", data(resourceUri=None)),
        # a lab plan write naming a child resource is not a plan id: malformed, logged, acknowledged
        ("Microsoft.Resources.ResourceWriteSuccess", data(resourceUri=PLAN + "/images/img1")),
    ],
)
def test_malformed_events_raise_a_clear_error_naming_the_event(event_type: str | None, payload: object) -> None:
    with pytest.raises(MalformedEvent, match="e3"):
        parse_event(event_id="e3", event_type=event_type, subject=None, data=payload)


def test_subject_and_resource_uri_naming_different_plans_is_malformed() -> None:
    other = PLAN.replace("testlabplan", "another")
    with pytest.raises(MalformedEvent, match="different plans"):
        parse_event(event_id="e4", event_type="Microsoft.Resources.ResourceWriteSuccess", subject=other, data=data())


def test_caller_falls_back_to_authorization_evidence() -> None:
    payload = data(claims={}, authorization={"evidence": {"principalId": "CCCC"}})
    event = parse_event(
        event_id="e5", event_type="Microsoft.Resources.ResourceWriteSuccess", subject=PLAN, data=payload
    )
    assert isinstance(event, PlanEvent)
    assert event.caller_object_id == "cccc"
