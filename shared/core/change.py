"""One write labguard made, as its change log records it (:mod:`shared.runtime.changes`).

Apart from :mod:`shared.core.snapshot`, which reads these rows back for the compliance page and the digest
(and re-exports the class): the event path only writes a row after each write, and loading the page's code
for that was about 6 ms of a new worker's first event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Change"]


@dataclass(frozen=True)
class Change:
    """One write labguard made, as its change log recorded it."""

    at: datetime
    plan_id: str
    changes: tuple[tuple[str, str | None, str | None], ...]  # (field, observed, new)
    trigger: str = ""
    correlation_id: str | None = None
    mode: str = "enforce"
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "fixed"  # how the write ended: fixed, or unconverged, proof-deferred, write-failed
    detail: str | None = None  # why it did not end fixed
    kind: str = "plan"  # what was written: "plan", or "lab" (``plan_id`` is then the lab's id)
    lab_plan_id: str | None = None  # a lab's plan (its labPlanId), to show the lab under it
