"""Proof after a write: did the plan (or lab) end where the patch meant it to, and nothing else move?

Pure: compares the plan or lab read before the write with the one read after it. Every profile leaf
labguard reads is compared (not only those the policy governs: a service that replaces a nested
profile could reset any of them). Values are compared as the service means them: enum values
case-insensitively, an absent flag or channel as the spec's default, delays by duration (``00:05``
equals ``PT5M``). A leaf present before and absent after is a change: that is a dropped value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from shared.core.durations import parse_delay
from shared.core.governed import Setting


class Governed(Protocol):
    """A plan or a lab as read: its governed settings, where each is kept, and their values."""

    def observed(self, setting: Setting) -> str | None: ...

    def settings(self) -> Sequence[Setting]: ...

    def path_of(self, setting: Setting) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class LeafChange:
    """A leaf the write was not meant to change that did change."""

    field: tuple[str, ...]  # the ARM path, as Finding.field
    before: str | None
    after: str | None

    @property
    def path(self) -> str:
        return ".".join(self.field)

    @property
    def leaf(self) -> str:
        return self.field[-1]

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.path, "before": self.before, "after": self.after}


def _meaning(setting: Setting, raw: str | None) -> str | timedelta | None:
    """The value as the service means it: enum values case-insensitive, absent as the spec's default (a delay
    has none: absent stays absent), delays by duration."""
    default = setting.spec_default
    if raw is None:
        return default.lower() if default is not None else None
    if setting.kind in ("max-delay", "max-duration"):
        try:
            return parse_delay(raw)
        except ValueError:
            return raw
    return raw.strip().lower()


def unexpected_changes(
    before: Governed, after: Governed, written: frozenset[tuple[str, ...]]
) -> tuple[LeafChange, ...]:
    """Governed leaves outside ``written`` (the paths of the drifted fields the patch changed) whose meaning
    changed. Every governed leaf of the resource is compared, not only those its policy governs."""
    changes = []
    for setting in before.settings():
        path = before.path_of(setting)
        if path in written:
            continue
        old, new = before.observed(setting), after.observed(setting)
        if old != new and _meaning(setting, old) != _meaning(setting, new):  # the same text means the same
            changes.append(LeafChange(path, old, new))
    return tuple(changes)
