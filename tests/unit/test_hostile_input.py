"""Hostile input found by the chaos/fuzz run (issue 13, items 7 and 8): one clear, capped line, never a crash.

Events whose fields are objects or arrays, policy files with list keys, deep nesting, huge values and
YAML aliases that expand without bound, and lab plan ids that only look like ARM's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.core.plans import LabPlan, PlanId
from shared.core.policy import load_policy, parse_policy
from shared.errors import MESSAGE_CAP, MalformedEvent, PolicyError
from shared.runtime.events import IgnoredEvent, PlanEvent, parse_event

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
PLAN = f"/subscriptions/{SUB}/resourceGroups/testrg123/providers/Microsoft.LabServices/labPlans/testlabplan"
WRITE = "Microsoft.Resources.ResourceWriteSuccess"


def data(**overrides: object) -> dict[str, object]:
    return {"operationName": "Microsoft.LabServices/labPlans/write", "resourceUri": PLAN, **overrides}


# ---- events: every field may be any JSON value -----------------------------------------------------


@pytest.mark.parametrize("odd", [{"a": 1}, ["x"], [], {}, 7, 2.5, True])
def test_an_event_type_that_is_not_a_string_is_malformed_not_a_crash(odd: object) -> None:
    with pytest.raises(MalformedEvent, match="e1"):
        parse_event(event_id="e1", event_type=odd, subject=PLAN, data=data())


@pytest.mark.parametrize("odd", [{"a": 1}, ["x"], 7, True])
def test_subject_operation_or_resource_uri_that_is_not_a_string_is_malformed(odd: object) -> None:
    for kwargs in (
        {"subject": odd, "data": data()},
        {"subject": PLAN, "data": data(operationName=odd)},
        {"subject": PLAN, "data": data(resourceUri=odd)},
    ):
        with pytest.raises(MalformedEvent):
            parse_event(event_id="e1", event_type=WRITE, **kwargs)  # type: ignore[arg-type]


def test_reasons_never_echo_a_whole_hostile_value() -> None:
    huge = "x" * 100_000
    ignored = parse_event(event_id="e1", event_type=huge, subject=None, data={})
    assert isinstance(ignored, IgnoredEvent) and len(ignored.reason) < 300
    with pytest.raises(MalformedEvent) as bad:
        parse_event(event_id=huge, event_type=WRITE, subject=None, data=data(resourceUri="/" + huge))
    assert len(str(bad.value)) < 400
    ok = parse_event(event_id={"not": "a string"}, event_type=WRITE, subject=PLAN, data=data())
    assert isinstance(ok, PlanEvent) and ok.event_id == "?"


# ---- lab plan ids: ARM's grammar only -------------------------------------------------------------

ODD_IDS = [
    PLAN.replace("/labPlans/", "/labPlan\u017f/"),  # long s: case-folds to "labPlans"
    PLAN.replace("Microsoft.LabServices", "Micro\u017foft.LabServices"),
    PLAN.replace("resourceGroups", "re\u017fourceGroups"),
    PLAN.replace("/testlabplan", "/."),
    PLAN.replace("/testlabplan", "/.."),
    PLAN.replace("/testrg123/", "/./"),
    PLAN.replace("/testrg123/", "/../"),
    PLAN.replace("/testrg123/", "/rg-ends-with-period./"),
    PLAN.replace("/testlabplan", "/plan-ending-in-hyphen-"),
    PLAN.replace("/testlabplan", "/9starts-with-digit"),
    PLAN.replace("/testlabplan", "/caf\u00e9"),  # non-ASCII letter
    PLAN.replace("/testrg123/", "/gr\u00fcn/"),
    PLAN.replace("/testlabplan", "/" + "a" * 101),
    PLAN.replace("/testrg123/", "/" + "r" * 91 + "/"),
    PLAN.replace("/testlabplan", "/with space"),
    PLAN + "/images/img1",
    PLAN + "//",
    " " + PLAN,
    PLAN.replace(SUB, SUB.replace("a", "\uff41")),  # fullwidth a
    PLAN.replace("/testlabplan", "/test%2e%2e"),
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_ids_outside_arms_grammar_are_refused(odd: str) -> None:
    with pytest.raises(ValueError, match="not a lab plan resource id"):
        PlanId.parse(odd)


@pytest.mark.parametrize("odd", ODD_IDS[:6])
def test_events_naming_odd_ids_are_malformed_and_never_reach_arm(odd: str) -> None:
    with pytest.raises(MalformedEvent, match="not a lab plan id"):
        parse_event(event_id="e1", event_type=WRITE, subject=None, data=data(resourceUri=odd))


@pytest.mark.parametrize(
    "good",
    [
        PLAN,
        PLAN + "/",
        PLAN.lower(),
        PLAN.replace("/testrg123/", "/My_RG.(prod)-1/"),
        PLAN.replace("/testlabplan", "/a"),
        PLAN.replace("/testlabplan", "/Lab.Plan_2-x9"),
        PLAN.replace("/testlabplan", "/" + "a" * 100),
        PLAN.replace("/testrg123/", "/" + "r" * 90 + "/"),
    ],
)
def test_valid_ids_still_parse(good: str) -> None:
    assert PlanId.parse(good).key == good.rstrip("/").lower()


def test_an_arm_body_with_an_odd_id_is_refused_with_a_capped_message() -> None:
    with pytest.raises(ValueError) as refused:
        LabPlan.from_arm({"id": PLAN.replace("/testlabplan", "/" + "x" * 50_000)})
    assert len(str(refused.value)) < 500


# ---- policy files ----------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> PolicyError:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    message = str(refused.value)
    assert "\n" not in message and len(message) <= MESSAGE_CAP, message[:300]
    return refused.value


def test_a_list_as_a_key_is_one_line_not_a_type_error(tmp_path: Path) -> None:
    error = load(tmp_path, "? [a, b]\n: 1\nmode: audit\n")
    assert "key" in str(error)
    error = load(tmp_path, "connection:\n  ? {x: 1}\n  : Public\n")
    assert "key" in str(error)


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    load(tmp_path, "connection: " + "[" * 5000 + "]" * 5000 + "\n")
    load(tmp_path, "overrides:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)) + "  " * 60 + "x: 1\n")
    nested: dict[str, object] = {}
    inner = nested
    for _ in range(3000):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    with pytest.raises(PolicyError) as refused:
        parse_policy(nested, "policy.json")
    assert "deep" in str(refused.value)


def test_huge_values_are_never_echoed_whole(tmp_path: Path) -> None:
    huge = "P" * 100_000
    for text in (
        f"connection: {{clientRdpAccess: {huge}}}\n",
        f"autoShutdown: {{maxIdleDelay: {huge}}}\n",
        f"{huge}: 1\n",
        f"overrides: {{subscriptions: {{{huge}: {{}}}}}}\n",
        f"exemptionTag: '{'<' * 400}'\n",
    ):
        error = load(tmp_path, text)
        assert huge[:1000] not in str(error)


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    started = time.monotonic()
    error = load(tmp_path, "\n".join(lines) + "\n")
    assert "aliases" in str(error)
    assert time.monotonic() - started < 5  # refused while composing, never expanded (it would be 10^9 values)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    error = load(tmp_path, "connection: &loop [*loop]\n")
    assert "alias" in str(error) or "YAML" in str(error)


def test_a_policy_file_too_large_is_refused_without_parsing(tmp_path: Path) -> None:
    error = load(tmp_path, "# " + "x" * 2_000_000 + "\nmode: audit\n")
    assert "larger than" in str(error)


def test_small_aliases_are_still_fine(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "connection: &conn {clientRdpAccess: Public, clientSshAccess: Public}\n"
        f"overrides:\n  subscriptions:\n    {SUB}: {{connection: *conn}}\n",
        encoding="utf-8",
    )
    assert load_policy(path).subscriptions[SUB].get("clientRdpAccess") == "Public"


def test_an_events_correlation_id_is_capped_before_it_reaches_records() -> None:
    from shared.runtime.events import PlanEvent, parse_event

    plan = (
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
        "/providers/Microsoft.LabServices/labPlans/p1"
    )
    event = parse_event(
        event_id="e1",
        event_type="Microsoft.Resources.ResourceWriteSuccess",
        subject=plan,
        data={
            "operationName": "Microsoft.LabServices/labPlans/write",
            "resourceUri": plan,
            "correlationId": "c" * 100_000 + "\n\x1b[31m",
        },
    )
    assert isinstance(event, PlanEvent)
    assert event.correlation_id is not None and len(event.correlation_id) <= 100
    assert "\n" not in event.correlation_id and "\x1b" not in event.correlation_id
    ok = parse_event(
        event_id="e2",
        event_type="Microsoft.Resources.ResourceWriteSuccess",
        subject=plan,
        data={"operationName": "Microsoft.LabServices/labPlans/write", "resourceUri": plan, "correlationId": "3f2a-1"},
    )
    assert isinstance(ok, PlanEvent) and ok.correlation_id == "3f2a-1"
