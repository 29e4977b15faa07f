"""Event Grid events about lab plans, read strictly: which plan, what happened, and who did it.

Pure (no azure imports) so the Event Grid handler stays thin and the rules are unit-testable. Both
schemas are accepted: Event Grid (``eventType``/``topic``) and CloudEvents 1.0 (``type``/``source``).
The event is only a hint: the reconcile core always re-reads the plan from ARM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.lab_plans import PlanId

HANDLED_EVENT_TYPES = frozenset(
    {"Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceWriteFailure"}
)
HANDLED_OPERATIONS = frozenset({"Microsoft.LabServices/labPlans/write"})

_OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"


class MalformedEvent(ValueError):
    """The event cannot be read; it is logged with its id and acknowledged (never retried forever)."""


@dataclass(frozen=True)
class PlanEvent:
    """A lab plan write that labguard must look at."""

    event_id: str
    event_type: str
    plan_id: PlanId
    operation: str
    caller_object_id: str | None
    correlation_id: str | None


@dataclass(frozen=True)
class IgnoredEvent:
    """An event labguard acknowledges and does nothing about, with the reason for the log."""

    event_id: str
    reason: str


def parse_event(
    *, event_id: str | None, event_type: str | None, subject: str | None, data: object
) -> PlanEvent | IgnoredEvent:
    """Read one event (either schema's fields mapped by the caller). Raises MalformedEvent."""
    ident = str(event_id or "?")
    if not event_type:
        raise MalformedEvent(f"event {ident}: no event type")
    if event_type not in HANDLED_EVENT_TYPES:
        return IgnoredEvent(ident, f"event type {event_type} is not handled")
    if not isinstance(data, Mapping):
        raise MalformedEvent(f"event {ident}: data is not an object")
    operation = str(data.get("operationName") or "")
    if operation.lower() not in {op.lower() for op in HANDLED_OPERATIONS}:
        return IgnoredEvent(ident, f"operation {operation or '(none)'} is not a lab plan write")
    uri = data.get("resourceUri") or subject
    if not isinstance(uri, str) or not uri:
        raise MalformedEvent(f"event {ident}: no data.resourceUri or subject")
    try:
        plan_id = PlanId.parse(uri)
    except ValueError:
        return IgnoredEvent(ident, f"{uri[:300]} is not a lab plan")
    if isinstance(subject, str) and subject and isinstance(data.get("resourceUri"), str):
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
        correlation_id=_text(data.get("correlationId")),
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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
