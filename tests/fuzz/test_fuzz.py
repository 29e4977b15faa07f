"""Fuzz (issue 13): no event, policy file or ARM response crashes labguard.

* events in both schemas with arbitrary JSON in every field: ``parse_event`` returns a plan event, an
  ignored event or raises ``MalformedEvent``, nothing else; the real Event Grid function acknowledges;
* policy files (arbitrary YAML text, arbitrary JSON trees, valid policies with arbitrary values grafted
  in): the loader raises only ``PolicyError``, one line, capped;
* ARM lab plan bodies (profiles missing or partial, unknown enums, delays as ``1.00:00:00``, ``P1D``,
  ``00:05:00``, negative, huge, junk): ``LabPlan.from_arm`` raises at most ValueError for a bad id, and
  ``evaluate`` never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from hypothesis import given, reject
from hypothesis import strategies as st

from shared.core.drift import evaluate
from shared.core.plans import LabPlan
from shared.core.policy import load_policy, parse_policy
from shared.errors import MESSAGE_CAP, MalformedEvent, PolicyError
from shared.runtime.events import IgnoredEvent, PlanEvent, parse_event
from tests.app.test_functions_e2e import FUNCTIONS
from tests.fuzz.conftest import FUZZ, tried

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
IN_SCOPE_SUB = "99999999-8888-7777-6666-555555555555"  # events name other subscriptions: no ARM call
PLAN = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.LabServices/labPlans/plan1"
WRITE_TYPES = ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceWriteFailure")

# ---- arbitrary JSON -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def sometimes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's right kind of value most of the time, any JSON value the rest."""
    return st.one_of(valid, valid, json_values)


plan_ids = st.one_of(
    st.just(PLAN),
    st.sampled_from(
        [
            PLAN.replace("labPlans", "labPlan\u017f"),
            PLAN.replace("/plan1", "/.."),
            PLAN.replace("/rg1/", "/./"),
            PLAN + "/images/x",
            PLAN.upper(),
            PLAN.replace("plan1", "pl\u0430n1"),  # Cyrillic a
        ]
    ),
    st.text(max_size=60),
)
event_data = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "operationName": sometimes(st.just("Microsoft.LabServices/labPlans/write")),
            "resourceUri": sometimes(plan_ids),
            "claims": sometimes(st.dictionaries(st.sampled_from(["oid", "name"]), json_values, max_size=2)),
            "authorization": json_values,
            "correlationId": json_values,
            "status": json_values,
        },
    ),
)
event_types = sometimes(st.sampled_from(WRITE_TYPES))
subjects = sometimes(plan_ids)


@FUZZ
@given(event_id=json_values, event_type=event_types, subject=subjects, data=event_data)
def test_parse_event_returns_or_raises_malformed_only(event_id: Any, event_type: Any, subject: Any, data: Any) -> None:
    tried["events.parse"] += 1
    try:
        event = parse_event(event_id=event_id, event_type=event_type, subject=subject, data=data)
    except MalformedEvent as exc:
        assert len(str(exc)) < 800
        return
    assert isinstance(event, (PlanEvent, IgnoredEvent))
    if isinstance(event, IgnoredEvent):
        assert len(event.reason) < 800


envelopes = st.one_of(
    st.fixed_dictionaries(  # Event Grid schema
        {"id": json_values, "eventType": event_types, "subject": subjects, "data": event_data},
        optional={"topic": json_values, "dataVersion": json_values, "eventTime": st.just("2026-11-23T10:00:00Z")},
    ),
    st.fixed_dictionaries(  # CloudEvents 1.0
        {"specversion": st.just("1.0"), "id": json_values, "type": event_types, "data": event_data},
        optional={"subject": subjects, "source": json_values, "time": st.just("2026-11-23T10:00:00Z")},
    ),
)


EVENT_FUNCTION = FUNCTIONS["eventgrid_lab_plan"]  # indexed once per session (a second index raises)


@pytest.fixture
def out_of_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABGUARD_SUBSCRIPTIONS", IN_SCOPE_SUB)


@FUZZ
@given(body=envelopes)
def test_the_event_grid_function_acknowledges_every_fuzzed_event(out_of_scope: None, body: dict[str, Any]) -> None:
    """Through the real function, decoded as the Python worker decodes it: returns (acknowledged), no raise."""
    tried["events.function"] += 1
    function = EVENT_FUNCTION.get_user_function()
    event = EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})
    logging.disable(logging.CRITICAL)
    try:
        asyncio.run(function(event))
    finally:
        logging.disable(logging.NOTSET)


# ---- policy files ---------------------------------------------------------------------------------

VALID_POLICY: dict[str, Any] = {
    "mode": "enforce",
    "connection": {"clientRdpAccess": "Public", "webRdpAccess": "None"},
    "autoShutdown": {"shutdownOnDisconnect": "Enabled", "maxIdleDelay": "PT15M", "minShutdownOnIdle": "LowUsage"},
    "overrides": {"subscriptions": {SUB: {"connection": {"clientSshAccess": "Private"}}}},
}


def graft(tree: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with ``value`` placed at ``path`` (keys created as needed)."""
    out = json.loads(json.dumps(tree))
    node = out
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value
    return out


policy_paths = st.lists(
    st.sampled_from(
        [
            "mode",
            "connection",
            "autoShutdown",
            "overrides",
            "subscriptions",
            "resourceGroups",
            SUB,
            "clientRdpAccess",
            "maxIdleDelay",
            "exemptionTag",
            "minShutdownOnIdle",
            f"{SUB}/rg1",
        ]
    ),
    min_size=1,
    max_size=4,
)
policy_trees = st.one_of(json_values, st.builds(graft, st.just(VALID_POLICY), policy_paths, json_values))


def assert_one_capped_line(error: PolicyError) -> None:
    message = str(error)
    assert "\n" not in message and len(message) <= MESSAGE_CAP, message[:300]


@FUZZ
@given(tree=policy_trees)
def test_policy_trees_raise_only_one_capped_policy_error(tree: Any) -> None:
    tried["policy.tree"] += 1
    try:
        parse_policy(tree, "policy.json")
    except PolicyError as error:
        assert_one_capped_line(error)


yaml_texts = st.one_of(
    st.text(max_size=200),
    policy_trees.map(lambda tree: yaml.safe_dump(tree, default_flow_style=False, allow_unicode=True)),
    st.builds(
        lambda tree, junk: yaml.safe_dump(tree) + junk,
        policy_trees,
        st.sampled_from(["\n? [a, b]\n: 1\n", "\nx: &a [*a]\n", "\n" + "[" * 60 + "\n", "\n\t- :\n", "\n'x\n"]),
    ),
)


@pytest.fixture(scope="module")
def policy_dir() -> Any:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@FUZZ
@given(text=yaml_texts)
def test_policy_files_raise_only_one_capped_policy_error(policy_dir: Path, text: str) -> None:
    tried["policy.file"] += 1
    path = policy_dir / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_policy(path)
    except PolicyError as error:
        assert_one_capped_line(error)


# ---- ARM responses ---------------------------------------------------------------------------------

DELAY_FORMS = [
    "PT15M",
    "P1D",
    "PT0S",
    "PT-5M",
    "-PT5M",
    "P99999999D",
    "PT1.5H",
    "P1Y",
    "P1M",
    "PT",
    "P",
    "00:05",
    "00:05:00",
    "1.00:00:00",
    "-00:05:00",
    "99999999.00:00:00",
    "24:00:00",
    "00:60:00",
    "10675199.02:48:05.4775807",
    "0.00:00:00.0000001",
    "00:00",
    "",
    " ",
    "five minutes",
]
delays = st.one_of(st.sampled_from(DELAY_FORMS), st.text(max_size=20), json_values)
enums = st.one_of(
    st.sampled_from(
        ["None", "Private", "Public", "Enabled", "Disabled", "LowUsage", "UserAbsence", "FutureMode", "public", ""]
    ),
    json_values,
)
states = st.one_of(
    st.sampled_from(["Succeeded", "Failed", "Locked", "Updating", "Creating", "Deleting", "succeeded", "Unknown"]),
    json_values,
)


def optional_profile(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), json_values, st.fixed_dictionaries({}, optional=fields))


arm_bodies = st.fixed_dictionaries(
    {"id": st.one_of(st.just(PLAN), plan_ids, json_values)},
    optional={
        "name": json_values,
        "location": json_values,
        "tags": st.one_of(json_values, st.dictionaries(st.text(max_size=20), json_values, max_size=3)),
        "properties": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "provisioningState": states,
                    "defaultConnectionProfile": optional_profile(
                        dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"), enums)
                    ),
                    "defaultAutoShutdownProfile": optional_profile(
                        {
                            "shutdownOnDisconnect": enums,
                            "shutdownWhenNotConnected": enums,
                            "shutdownOnIdle": enums,
                            "disconnectDelay": delays,
                            "noConnectDelay": delays,
                            "idleDelay": delays,
                        }
                    ),
                    "supportInfo": optional_profile(
                        dict.fromkeys(("url", "email", "phone", "instructions"), json_values)
                    ),
                    "resourceOperationError": optional_profile(
                        dict.fromkeys(("action", "code", "message", "timestamp"), json_values)
                    ),
                },
            ),
        ),
    },
)
policies = st.builds(
    lambda conn, shut: {"mode": "enforce", "connection": conn, "autoShutdown": shut},
    st.fixed_dictionaries(
        {"clientRdpAccess": st.just("Public")},
        optional=dict.fromkeys(
            ("webSshAccess", "webRdpAccess", "clientSshAccess"), st.sampled_from(["None", "Private", "Public"])
        ),
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "shutdownOnDisconnect": st.just("Enabled"),
            "shutdownWhenNotConnected": st.just("Enabled"),
            "minShutdownOnIdle": st.sampled_from(["None", "LowUsage", "UserAbsence"]),
            "maxDisconnectDelay": st.sampled_from(["PT5M", "PT15M", "PT1H", "P1D"]),
            "maxNoConnectDelay": st.sampled_from(["PT5M", "PT15M", "PT1H"]),
            "maxIdleDelay": st.sampled_from(["PT5M", "PT30M"]),
        },
    ),
)


@FUZZ
@given(body=arm_bodies, policy_data=policies)
def test_arm_bodies_map_and_evaluate_without_raising(body: dict[str, Any], policy_data: dict[str, Any]) -> None:
    tried["arm"] += 1
    try:
        plan = LabPlan.from_arm(body)
    except ValueError as exc:  # only a missing or malformed id is refused, with a capped message
        assert len(str(exc)) < 800
        reject()
    evaluation = evaluate(plan, parse_policy(policy_data, "policy.yaml"), datetime.now(UTC))
    assert evaluation.status
    json.dumps(evaluation.patch)  # a patch, if any, is plain JSON


LAB = f"/subscriptions/{PLAN.split('/')[2]}/resourceGroups/rg/providers/Microsoft.LabServices/labs/lab1"
lab_bodies = st.fixed_dictionaries(
    {"id": st.one_of(st.just(LAB), plan_ids, json_values)},
    optional={
        "tags": st.one_of(json_values, st.dictionaries(st.text(max_size=20), json_values, max_size=3)),
        "systemData": optional_profile(dict.fromkeys(("lastModifiedBy", "lastModifiedByType"), json_values)),
        "properties": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "provisioningState": states,
                    "labPlanId": st.one_of(st.just(PLAN), json_values),
                    "connectionProfile": optional_profile(
                        dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"), enums)
                    ),
                    "autoShutdownProfile": optional_profile(
                        {
                            "shutdownOnDisconnect": enums,
                            "shutdownWhenNotConnected": enums,
                            "shutdownOnIdle": enums,
                            "disconnectDelay": delays,
                            "noConnectDelay": delays,
                            "idleDelay": delays,
                        }
                    ),
                    "virtualMachineProfile": optional_profile(
                        {
                            "osType": st.one_of(st.sampled_from(["Windows", "Linux", "windows", ""]), json_values),
                            "sku": optional_profile({"name": json_values}),
                            "createOption": enums,
                            "usageQuota": delays,
                            "nonAdminUser": optional_profile({"username": json_values}),
                            "adminUser": optional_profile({"username": json_values}),
                        }
                    ),
                    "resourceOperationError": optional_profile(
                        dict.fromkeys(("action", "code", "message", "timestamp"), json_values)
                    ),
                },
            ),
        ),
    },
)
lab_rules = st.fixed_dictionaries(
    {},
    optional={
        "allowedVmSizes": st.just(["Classic_Fsv2_2_4GB_128_S_SSD"]),
        "templateVm": st.sampled_from(["Allowed", "Forbidden"]),
        "requireNonAdminUser": st.booleans(),
        "maxUsageQuota": st.sampled_from(["PT20H", "PT1H"]),
    },
)


@FUZZ
@given(body=lab_bodies, policy_data=policies, labs=lab_rules)
def test_lab_bodies_map_and_evaluate_without_raising(
    body: dict[str, Any], policy_data: dict[str, Any], labs: dict[str, Any]
) -> None:
    from shared.core.lab_drift import evaluate_lab
    from shared.core.labs import Lab

    tried["arm"] += 1
    try:
        lab = Lab.from_arm(body)
    except ValueError as exc:
        assert len(str(exc)) < 800
        reject()
    evaluation = evaluate_lab(lab, parse_policy({**policy_data, "labs": labs}, "policy.yaml"), datetime.now(UTC))
    assert evaluation.status
    json.dumps(evaluation.patch)
    for finding in evaluation.findings:  # never a client channel turned off on a lab whose OS needs it
        if finding.is_drift and finding.patch_value == "None" and finding.leaf == "clientRdpAccess":
            assert (lab.os_type or "").lower() == "linux"
