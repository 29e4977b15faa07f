"""Hypothesis fuzz of everything labguard reads from outside: events, policy files, ARM responses.

The budget is small in ``make test`` (profile ``fuzz-ci``: ``FUZZ_EXAMPLES`` examples per test) and large
on demand: ``LABGUARD_FUZZ_EXAMPLES=1000 .venv/bin/pytest tests/fuzz``. The examples each test tried are
counted and printed in the session summary (and with ``-s`` as each test ends).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("LABGUARD_FUZZ_EXAMPLES", "60"))

settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # the fixtures used only set an env var or a directory
    ],
    derandomize=False,
)
FUZZ = settings.get_profile("fuzz")

#: examples tried per fuzz target in this session (``tried["events"] += 1`` in each test body)
tried: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if tried:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(tried.items()))
        terminalreporter.write_line(f"fuzz: {sum(tried.values())} examples tried ({parts}); none raised unexpectedly")
