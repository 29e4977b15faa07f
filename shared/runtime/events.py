"""Event Grid events about lab plans, read strictly: which plan, what happened, and who did it.

Pure (no azure imports) so the Event Grid handler stays thin and the rules are unit-testable. Both
schemas are accepted: Event Grid (``eventType``/``topic``) and CloudEvents 1.0 (``type``/``source``).
The event is only a hint: the reconcile core always re-reads the plan from ARM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.core.labs import LabId
from shared.core.plans import PlanId
from shared.core.text import shown
from shared.errors import MalformedEvent
from shared.notices.changer_claims import Changer, changer_from_event

HANDLED_EVENT_TYPES = frozenset(
    {"Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceWriteFailure"}
)
HANDLED_OPERATIONS = frozenset({"Microsoft.LabServices/labPlans/write", "Microsoft.LabServices/labs/write"})
LAB_WRITE = "microsoft.labservices/labs/write"

_OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"


@dataclass(frozen=True)
class PlanEvent:
    """A lab plan write that labguard must look at."""

    event_id: str
    event_type: str
    plan_id: PlanId
    operation: str
    caller_object_id: str | None
    correlation_id: str | None
    changer: Changer | None = None  # who the claims say made the write (a person or not, and why)


@dataclass(frozen=True)
class LabEvent:
    """A lab write that labguard must look at (the lab is read fresh; the event is only a hint)."""

    event_id: str
    event_type: str
    lab_id: LabId
    operation: str
    caller_object_id: str | None
    correlation_id: str | None
    changer: Changer | None = None  # who the claims say made the write (a person or not, and why)


@dataclass(frozen=True)
class IgnoredEvent:
    """An event labguard acknowledges and does nothing about, with the reason for the log."""

    event_id: str
    reason: str


def parse_event(
    *, event_id: object, event_type: object, subject: object, data: object
) -> PlanEvent | LabEvent | IgnoredEvent:
    """Read one event (either schema's fields mapped by the caller). Raises MalformedEvent, nothing else.

    Every field is untrusted JSON: any of them may be an object, an array, a number or huge, so each is
    type-checked before use and only capped excerpts ever reach a reason.
    """
    ident = event_label(event_id)
    if event_type is None or event_type == "":
        raise MalformedEvent(f"event {ident}: no event type")
    if not isinstance(event_type, str):
        raise MalformedEvent(f"event {ident}: the event type is {_kind(event_type)}, not a string")
    if event_type not in HANDLED_EVENT_TYPES:
        return IgnoredEvent(ident, f"event type {excerpt(event_type)} is not handled")
    if subject is not None and not isinstance(subject, str):
        raise MalformedEvent(f"event {ident}: the subject is {_kind(subject)}, not a string")
    if not isinstance(data, Mapping):
        raise MalformedEvent(f"event {ident}: data is not an object")
    operation = data.get("operationName")
    if operation is not None and not isinstance(operation, str):
        raise MalformedEvent(f"event {ident}: data.operationName is {_kind(operation)}, not a string")
    operation = operation or ""
    if operation.lower() not in {op.lower() for op in HANDLED_OPERATIONS}:
        return IgnoredEvent(
            ident, f"operation {excerpt(operation) if operation else '(none)'} is not a lab plan or lab write"
        )
    resource_uri = data.get("resourceUri")
    if resource_uri is not None and not isinstance(resource_uri, str):
        raise MalformedEvent(f"event {ident}: data.resourceUri is {_kind(resource_uri)}, not a string")
    uri = resource_uri or subject
    if not uri:
        raise MalformedEvent(f"event {ident}: no data.resourceUri or subject")
    if operation.lower() == LAB_WRITE:
        return _lab_event(ident, event_type, operation, uri, subject, resource_uri, data)
    try:
        plan_id = PlanId.parse(uri)
    except ValueError:  # a lab plan write naming no valid plan id (a child, a look-alike, a ``..`` path)
        raise MalformedEvent(f"event {ident}: {excerpt(uri)} is not a lab plan id in ARM's grammar") from None
    if subject and resource_uri:
        try:
            subject_plan: PlanId | None = PlanId.parse(subject)
        except ValueError:
            subject_plan = None  # subjects of resource-group topics may be shortened; resourceUri is authoritative
        if subject_plan is not None and subject_plan != plan_id:
            raise MalformedEvent(f"event {ident}: subject and data.resourceUri name different plans")
    return PlanEvent(
        event_id=ident,
        event_type=event_type,
        plan_id=plan_id,
        operation=operation,
        caller_object_id=_caller(data),
        correlation_id=_correlation(data.get("correlationId")),
        changer=changer_from_event(data),
    )


CORRELATION_CAP = 100  # characters of an event's correlationId kept (a GUID is 36)


def _lab_event(
    ident: str,
    event_type: str,
    operation: str,
    uri: str,
    subject: str | None,
    resource_uri: object,
    data: Mapping[str, Any],
) -> LabEvent:
    try:
        lab_id = LabId.parse(uri)
    except ValueError:
        raise MalformedEvent(f"event {ident}: {excerpt(uri)} is not a lab id in ARM's grammar") from None
    if subject and resource_uri:
        try:
            subject_lab: LabId | None = LabId.parse(subject)
        except ValueError:
            subject_lab = None
        if subject_lab is not None and subject_lab != lab_id:
            raise MalformedEvent(f"event {ident}: subject and data.resourceUri name different labs")
    return LabEvent(
        event_id=ident,
        event_type=event_type,
        lab_id=lab_id,
        operation=operation,
        caller_object_id=_caller(data),
        correlation_id=_correlation(data.get("correlationId")),
        changer=changer_from_event(data),
    )


EXCERPT = 200  # characters of an untrusted value a reason or log record may show


def excerpt(value: object, cap: int = EXCERPT) -> str:
    """A capped, one-line ``repr`` of an untrusted value (never the whole hostile value)."""
    text = value if isinstance(value, str) else f"<{_kind(value)}>"
    shown = repr(text[:cap])
    return shown + "..." if len(text) > cap else shown


def event_label(event_id: object) -> str:
    """The event id as logged: a string, capped, or ``?``."""
    if isinstance(event_id, str) and event_id:
        return event_id[:100] + ("..." if len(event_id) > 100 else "")
    return "?"


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _caller(data: Mapping[str, Any]) -> str | None:
    claims = data.get("claims")
    if isinstance(claims, Mapping):
        for key in (_OID_CLAIM, "oid"):
            value = claims.get(key)
            if isinstance(value, str) and value:
                return value.lower()
    authorization = data.get("authorization")
    evidence = authorization.get("evidence") if isinstance(authorization, Mapping) else None
    principal = evidence.get("principalId") if isinstance(evidence, Mapping) else None
    return principal.lower() if isinstance(principal, str) and principal else None


def _correlation(value: object) -> str | None:
    """ARM's correlation id (a GUID) goes into every record and change-log row: one capped line, never more."""
    text = _text(value)
    return shown(text, quote=False, limit=CORRELATION_CAP) if text is not None else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
