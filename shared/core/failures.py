"""A failed plan's identity: one key per failure (plan id, error timestamp, error code).

The notice ledger sends each failure's notice once per channel under this key; the compliance page and the
digest name a failure by the same key, so all three agree on what is one failure. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from shared.core.plans import LabPlan
from shared.core.text import clean_line

__all__ = ["CAP_CODE", "CAP_TIMESTAMP", "failure_digest", "failure_key", "normalise_timestamp"]

CAP_CODE = 128  # characters of an error code kept (after cleaning)
CAP_TIMESTAMP = 64


def normalise_timestamp(value: str | None) -> str:
    """ARM timestamps in one canonical UTC form, so the event path and the sweep agree on the key."""
    raw = clean_line(value, CAP_TIMESTAMP)
    if not raw:
        return ""
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    # .NET writes 7 fractional digits; datetime takes at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return raw
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def failure_key(plan: LabPlan) -> str:
    """plan id + error timestamp + code: one notice per key and channel."""
    error = plan.error
    stamp = normalise_timestamp(error.timestamp if error else None) or "no-timestamp"
    code = clean_line(error.code if error else None, CAP_CODE).casefold() or "no-code"
    return f"{plan.id.key}|{stamp}|{code}"


def failure_digest(key: str) -> str:
    """A short, stable, table-key-safe digest of a failure key (also the CloudEvent id)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
