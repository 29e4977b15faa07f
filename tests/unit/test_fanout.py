"""The fan-out's messages and run summary as plain data: hostile messages refused in one line, the
summary added up from the scopes' rows, the auto setting's threshold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.runtime.fanout import AUTO_MIN_SCOPES, BadMessage, ScopeMessage, assemble, fans_out, run_messages

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"


def test_a_message_round_trips_and_names_its_row() -> None:
    started = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    (message,) = run_messages("20261202T170000Z-1a2b3c4d", [(SUB.upper(), "Labs-East")], started)
    assert ScopeMessage.from_json(message.to_json()) == message
    assert message.scope == f"/subscriptions/{SUB}/resourceGroups/labs-east"
    assert message.row_key == f"scope-{SUB}.labs-east" and "/" not in message.row_key


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1]",
        json.dumps({"run": "a/b", "subscription": SUB, "scopes": 1, "started": "x"}),
        json.dumps({"run": "r1", "subscription": "../../x", "scopes": 1, "started": "x"}),
        json.dumps({"run": "r1", "subscription": SUB, "scopes": True, "started": "x"}),
        json.dumps({"run": "r1", "subscription": SUB, "scopes": 0, "started": "x"}),
        json.dumps({"run": "r1", "subscription": SUB, "resourceGroup": "x" * 91, "scopes": 1, "started": "x"}),
        json.dumps({"run": "r1" * 100, "subscription": SUB, "scopes": 1, "started": "x"}),
    ],
)
def test_a_message_that_is_not_a_scope_is_refused_without_echoing_it(body: str) -> None:
    with pytest.raises(BadMessage) as refused:
        ScopeMessage.from_json(body)
    assert "\n" not in str(refused.value) and "../" not in str(refused.value) and len(str(refused.value)) < 80


def test_the_summary_adds_up_the_scopes_and_names_the_failed_ones() -> None:
    started = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    message = run_messages("r1", [(SUB, None)], started)[0]
    rows = [
        {"Status": "done", "Scope": "/subscriptions/a", "Counts": json.dumps({"fixed": 2, "plans": 5, "arm_calls": 9})},
        {
            "Status": "done",
            "Scope": "/subscriptions/b",
            "Counts": json.dumps({"fixed": 1, "plans": 3, "arm_calls": 4}),
            "NotRegistered": json.dumps(["/subscriptions/b"]),
            "EmptyScopes": json.dumps(["/subscriptions/a"]),
        },
        {"Status": "failed", "Scope": "/subscriptions/c", "Counts": json.dumps({"failed": 1})},
    ]
    summary = assemble(rows, message, started + timedelta(seconds=90))
    assert summary["fixed"] == 3 and summary["plans"] == 8 and summary["arm_calls"] == 13 and summary["failed"] == 1
    assert summary["scopes_failed"] == 1 and summary["failed_scopes"] == ["/subscriptions/c"]
    assert summary["empty_scopes"] == ["/subscriptions/a"]
    assert summary["not_registered"] == ["/subscriptions/b"] and summary["duration_s"] == 90.0


def test_auto_fans_out_from_the_threshold_and_on_off_are_absolute() -> None:
    assert not fans_out("auto", AUTO_MIN_SCOPES - 1) and fans_out("auto", AUTO_MIN_SCOPES)
    assert fans_out("on", 1) and not fans_out("off", 10_000)
