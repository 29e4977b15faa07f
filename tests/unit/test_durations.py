"""Delays in both forms the official examples use; ISO-8601 out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.durations import describe, format_iso, parse_delay, parse_iso

M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT15M", 15 * M),  # listLabPlans.json
        ("PT5M", 5 * M),
        ("P0DT1H", 60 * M),
        ("PT1H30M", 90 * M),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P1W", timedelta(days=7)),
        ("PT30S", timedelta(seconds=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT1,5M", timedelta(seconds=90)),
        ("pt15m", 15 * M),
        ("00:05", 5 * M),  # getLabPlan.json disconnectDelay: hh:mm
        ("01:00", 60 * M),  # getLabPlan.json idleDelay: one hour, not one minute
        ("01:00:30", timedelta(hours=1, seconds=30)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("00:00:01.5", timedelta(seconds=1.5)),
        (" PT15M ", 15 * M),
        ("-PT5M", -5 * M),
        ("PT0S", timedelta(0)),
    ],
)
def test_parse_delay_reads_both_arm_forms(text: str, expected: timedelta) -> None:
    assert parse_delay(text) == expected


def test_parse_delay_of_none_is_none() -> None:
    assert parse_delay(None) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "15 minutes",
        "P",
        "PT",
        "P1DT",
        "T5M",
        "PT1H1",
        "15",
        "PT-5M",
        "00:60",
        "00:05:60",
        "5:5",
        "P1M",
        "P1Y",
        "P99999999999D",
    ],
)
def test_parse_delay_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_delay(text)


@pytest.mark.parametrize("text", ["00:15", "01:00:00"])
def test_parse_iso_refuses_timespan_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 duration"):
        parse_iso(text)


def test_months_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="no fixed length"):
        parse_iso("P1M")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (15 * M, "PT15M"),
        (90 * M, "PT1H30M"),
        (timedelta(hours=1), "PT1H"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(0), "PT0S"),
        (timedelta(seconds=1.5), "PT1.5S"),
        (-5 * M, "-PT5M"),
    ],
)
def test_format_iso(delta: timedelta, text: str) -> None:
    assert format_iso(delta) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [(15 * M, "15 minutes"), (61 * M, "1 hour 1 minute"), (timedelta(days=2), "2 days"), (timedelta(0), "no delay")],
)
def test_describe(delta: timedelta, text: str) -> None:
    assert describe(delta) == text


@given(st.timedeltas(min_value=-timedelta(days=9999), max_value=timedelta(days=9999)))
def test_format_then_parse_round_trips(delta: timedelta) -> None:
    assert parse_delay(format_iso(delta)) == delta
    assert parse_iso(format_iso(delta)) == delta


@given(st.text(max_size=30))
def test_parse_delay_only_ever_raises_value_error(text: str) -> None:
    try:
        result = parse_delay(text)
    except ValueError:
        return
    assert isinstance(result, timedelta)
