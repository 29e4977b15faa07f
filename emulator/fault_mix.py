"""A probability-based fault mix: each ARM request draws a fault (429, 500, 503, a reset) at random.

The count-limited rules of ``/_emulator/faults`` say "the next N requests fail"; a chaos run needs
"this share of all requests fails", reproducibly, so the draws come from one seeded generator and
every injected fault is counted by kind. Only requests of ``client_ids`` are drawn for (empty: all),
so a test's own setup requests (a lab owner's writes, say) need not suffer the mix.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("429", "500", "503", "reset")


@dataclass
class FaultMix:
    """``rates``: fault kind -> probability per request (429, 500, 503, reset; their sum at most 1)."""

    rates: dict[str, float]
    seed: int = 0
    client_ids: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()  # empty: every method
    path_pattern: str = ".*"
    retry_after: float | None = None  # the Retry-After of an injected 429 (None: no header)
    injected: Counter[str] = field(default_factory=Counter)
    drawn: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"fault kinds are {FAULT_KINDS}, not {sorted(unknown)}")
        if any(not 0.0 <= float(p) <= 1.0 for p in self.rates.values()) or sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("each rate is in [0, 1] and they sum to at most 1")
        self.rates = {k: float(v) for k, v in self.rates.items()}
        self.client_ids = tuple(self.client_ids)
        self.methods = tuple(m.upper() for m in self.methods)
        self._re = re.compile(self.path_pattern, re.I)
        self._random = random.Random(self.seed)

    def draw(self, method: str, path: str, client_id: str | None) -> str | None:
        """The fault this request gets (a kind of ``FAULT_KINDS``), or None."""
        if self.client_ids and client_id not in self.client_ids:
            return None
        if self.methods and method.upper() not in self.methods:
            return None
        if not self._re.search(path):
            return None
        self.drawn += 1
        roll = self._random.random()
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind, 0.0)
            if roll < rate:
                self.injected[kind] += 1
                return kind
            roll -= rate
        return None

    def public(self) -> dict[str, Any]:
        return {
            "rates": dict(self.rates),
            "seed": self.seed,
            "client_ids": list(self.client_ids),
            "methods": list(self.methods),
            "path_pattern": self.path_pattern,
            "retry_after": self.retry_after,
            "drawn": self.drawn,
            "injected": dict(self.injected),
        }
