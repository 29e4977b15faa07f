"""The policy file: the bundled one loads, bad ones are refused with one clear line, scopes resolve."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from unit_support import FULL, OTHER_SUB, REPO, SUB, policy

from shared.core.plans import PlanId
from shared.core.policy import Rules, load_policy, parse_policy, schema_text
from shared.errors import PolicyError

RG_KEY = f"{SUB}/rg-course"


def pid(rg: str = "rg-other", sub: str = SUB) -> PlanId:
    return PlanId(sub, rg, "plan")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- the bundled files ------------------------------------------------------------------------


def test_bundled_policy_loads_in_audit_mode() -> None:
    loaded = load_policy(REPO / "policy.yaml")
    assert loaded.mode == "audit"
    assert loaded.baseline.get("maxIdleDelay") == timedelta(minutes=30)
    assert loaded.exemption_tag == "labguard:exempt"


def test_bundled_schema_is_up_to_date() -> None:
    """Regenerate with: make schema (labguard check-policy --write-schema policy.schema.json)"""
    assert (REPO / "policy.schema.json").read_text(encoding="utf-8") == schema_text()


def test_schema_forbids_unknown_keys_and_lists_enum_values() -> None:
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False
    conn = schema["$defs"]["ConnectionBounds"]
    assert conn["additionalProperties"] is False
    assert conn["properties"]["clientRdpAccess"]["anyOf"][0]["enum"] == ["None", "Private", "Public"]


# ---- refused at load: one line naming the file and the field path -------------------------------

BAD: list[tuple[str, str, str]] = [
    # (policy text, field path, words in the problem)
    ("connection: {clientRdpAcess: Public}", "connection.clientRdpAcess", "unknown key; allowed here: webSshAccess"),
    ("colour: blue", "colour", "unknown key"),
    (
        "autoShutdown: {maxIdleDelay: 15 minutes}",
        "autoShutdown.maxIdleDelay",
        "'15 minutes' is not an ISO-8601 duration; write e.g. PT15M",
    ),
    ('autoShutdown: {maxIdleDelay: "00:15"}', "autoShutdown.maxIdleDelay", "write PT15M"),
    ("autoShutdown: {maxIdleDelay: 15}", "autoShutdown.maxIdleDelay", "not an ISO-8601 duration"),
    ("autoShutdown: {maxIdleDelay: PT0M}", "autoShutdown.maxIdleDelay", "must be longer than zero"),
    ("autoShutdown: {maxNoConnectDelay: -PT5M}", "autoShutdown.maxNoConnectDelay", "must be longer than zero"),
    ("autoShutdown: {maxDisconnectDelay: P1M}", "autoShutdown.maxDisconnectDelay", "no fixed length"),
    (
        "connection: {webRdpAccess: Everyone}",
        "connection.webRdpAccess",
        "'Everyone' is not allowed; write None, Private or Public",
    ),
    ("connection: {webRdpAccess: public}", "connection.webRdpAccess", "write None, Private or Public"),
    (
        "autoShutdown: {minShutdownOnIdle: Sometimes}",
        "autoShutdown.minShutdownOnIdle",
        "write None, LowUsage or UserAbsence",
    ),
    (
        "autoShutdown: {shutdownOnDisconnect: Disabled}",
        "autoShutdown.shutdownOnDisconnect",
        "write Enabled, or leave the key out",
    ),
    ("mode: strict", "mode", "write audit or enforce"),
    ("connection: Public", "connection", "expected a mapping of keys"),
    (
        "connection: {clientSshAccess: Private, clientRdpAccess: None}",
        "connection",
        "both forbid Public in this scope, so no lab could be created",
    ),
    (
        f"overrides: {{resourceGroups: {{'{RG_KEY}': {{autoShutdown: {{maxIdleDelay: 15 minutes}}}}}}}}",
        f'overrides.resourceGroups["{RG_KEY}"].autoShutdown.maxIdleDelay',
        "not an ISO-8601 duration",
    ),
    (
        f"overrides: {{subscriptions: {{'{SUB}': {{connection: {{bogus: 1}}}}}}}}",
        f'overrides.subscriptions["{SUB}"].connection.bogus',
        "unknown key; allowed here: webSshAccess, webRdpAccess, clientSshAccess, clientRdpAccess",
    ),
    ("overrides: {subscriptions: {not-a-guid: {}}}", 'overrides.subscriptions["not-a-guid"]', "not a subscription id"),
    (
        f"overrides: {{resourceGroups: {{'{SUB}': {{}}}}}}",
        f'overrides.resourceGroups["{SUB}"]',
        "<subscription id>/<resource group name>",
    ),
    (
        f"overrides: {{subscriptions: {{'{SUB}': {{}}, '{SUB.upper()}': {{}}}}}}",
        f'overrides.subscriptions["{SUB.upper()}"]',
        "listed twice",
    ),
    ("overrides: {resourceGroups: {x: 5}}", 'overrides.resourceGroups["x"]', "expected a mapping of keys"),
    ("exemptionTag: 'a/b'", "exemptionTag", "Azure tag names cannot hold"),
    ("exemptionTag: ''", "exemptionTag", "at least 1 character"),
]


@pytest.mark.parametrize(("text", "path", "words"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_policy_is_refused_naming_file_and_field(tmp_path: Path, text: str, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'policy.yaml'}: {path}: "), message
    assert words in message
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "the policy is empty"),
        ("# only comments\n", "the policy is empty"),
        ("- a\n- b\n", "must be a mapping of keys, not list"),
        ("connection: [\n", "not valid YAML: line 2"),
        ("mode: audit\nmode: enforce\n", "duplicate key 'mode'"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        load_policy(write(tmp_path, text))


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the policy file"):
        load_policy(tmp_path / "missing.yaml")


def test_client_rule_applies_to_the_effective_scope_after_inheritance() -> None:
    data: dict[str, Any] = {
        "connection": {"clientSshAccess": "Private", "clientRdpAccess": "Public"},
        "overrides": {"subscriptions": {SUB: {"connection": {"clientRdpAccess": "Private"}}}},
    }
    with pytest.raises(PolicyError, match=rf'overrides\.subscriptions\["{SUB}"\]\.connection: clientSshAccess'):
        parse_policy(data, "p.yaml")


def test_client_rule_checks_a_resource_group_under_its_subscription_override() -> None:
    data: dict[str, Any] = {
        "connection": {"clientSshAccess": "Public", "clientRdpAccess": "Public"},
        "overrides": {
            "subscriptions": {SUB: {"connection": {"clientSshAccess": "None"}}},
            "resourceGroups": {RG_KEY: {"connection": {"clientRdpAccess": "Private"}}},
        },
    }
    with pytest.raises(PolicyError, match=r"resourceGroups.*both forbid Public"):
        parse_policy(data, "p.yaml")


# ---- meaning ------------------------------------------------------------------------------------


def test_mode_defaults_to_audit_and_the_setting_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: enforce\nconnection: {webSshAccess: None}\n")
    assert load_policy(path).mode == "enforce"
    assert load_policy(path, mode_override="audit").mode == "audit"
    assert parse_policy({"connection": {}}, "p").mode == "audit"


def test_unset_keys_are_not_governed() -> None:
    rules = parse_policy({"autoShutdown": {"maxIdleDelay": "PT15M"}}, "p").baseline
    assert rules == Rules.of(maxIdleDelay=timedelta(minutes=15))


def test_rules_for_prefers_resource_group_then_subscription_then_baseline() -> None:
    data: dict[str, Any] = {
        **FULL,
        "overrides": {
            "subscriptions": {SUB: {"autoShutdown": {"maxIdleDelay": "PT1H"}}},
            "resourceGroups": {RG_KEY: {"autoShutdown": {"maxIdleDelay": "PT2H"}}},
        },
    }
    loaded = parse_policy(data, "p")
    assert loaded.rules_for(pid("rg-course")).get("maxIdleDelay") == timedelta(hours=2)
    assert loaded.rules_for(pid("rg-other")).get("maxIdleDelay") == timedelta(hours=1)
    assert loaded.rules_for(pid("rg-course", OTHER_SUB)).get("maxIdleDelay") == timedelta(minutes=30)


def test_resource_group_override_inherits_the_rest_from_its_subscription() -> None:
    data: dict[str, Any] = {
        **FULL,
        "overrides": {
            "subscriptions": {SUB: {"autoShutdown": {"maxIdleDelay": "PT1H"}}},
            "resourceGroups": {RG_KEY: {"connection": {"clientSshAccess": "Public"}}},
        },
    }
    rules = parse_policy(data, "p").rules_for(pid("rg-course"))
    assert rules.get("clientSshAccess") == "Public"
    assert rules.get("maxIdleDelay") == timedelta(hours=1)
    assert rules.get("maxDisconnectDelay") == timedelta(minutes=15)


def test_overrides_may_tighten_as_well_as_loosen() -> None:
    data: dict[str, Any] = {**FULL, "overrides": {"subscriptions": {SUB: {"autoShutdown": {"maxIdleDelay": "PT5M"}}}}}
    assert parse_policy(data, "p").rules_for(pid()).get("maxIdleDelay") == timedelta(minutes=5)


def test_null_in_an_override_ungoverns_that_field() -> None:
    data: dict[str, Any] = {
        **FULL,
        "overrides": {"resourceGroups": {RG_KEY: {"autoShutdown": {"minShutdownOnIdle": None}}}},
    }
    rules = parse_policy(data, "p").rules_for(pid("rg-course"))
    assert rules.get("minShutdownOnIdle") is None
    assert rules.get("shutdownOnDisconnect") == "Enabled"


def test_null_profile_in_an_override_ungoverns_the_whole_profile() -> None:
    data: dict[str, Any] = {**FULL, "overrides": {"resourceGroups": {RG_KEY: {"autoShutdown": None}}}}
    rules = parse_policy(data, "p").rules_for(pid("rg-course"))
    assert (rules.get("maxIdleDelay"), rules.get("shutdownOnDisconnect")) == (None, None)
    assert rules.get("clientSshAccess") == "Private"


def test_override_keys_are_case_insensitive() -> None:
    data: dict[str, Any] = {
        **FULL,
        "overrides": {"resourceGroups": {f"{SUB.upper()}/RG-Course": {"autoShutdown": {"maxIdleDelay": "PT2H"}}}},
    }
    assert parse_policy(data, "p").rules_for(pid("rg-COURSE")).get("maxIdleDelay") == timedelta(hours=2)


def test_describe_lists_every_scope_with_effective_rules() -> None:
    data: dict[str, Any] = {
        **FULL,
        "overrides": {
            "subscriptions": {SUB: {"autoShutdown": {"maxIdleDelay": "PT1H"}}},
            "resourceGroups": {RG_KEY: {}},
        },
    }
    scopes = parse_policy(data, "p").describe()
    assert list(scopes) == ["baseline", f"subscription {SUB}", f"resource group {RG_KEY}"]
    assert scopes[f"resource group {RG_KEY}"].to_policy_dict()["autoShutdown"]["maxIdleDelay"] == "PT1H"


def test_exemption_tag_is_configurable() -> None:
    loaded = policy(exemptionTag="school:skip")
    assert (loaded.exemption_tag, loaded.exemption_until_tag) == ("school:skip", "school:skip-until")


def test_editors_schema_accepts_the_bundled_policy_and_rejects_what_load_refuses() -> None:
    """What an editor checks with policy.schema.json agrees with what labguard accepts at load."""
    import jsonschema
    import yaml

    schema = json.loads((REPO / "policy.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load((REPO / "policy.yaml").read_text(encoding="utf-8")))) == []
    for text in ("colour: blue", "connection: {clientRdpAccess: Wide}", "autoShutdown: {maxIdleDelay: 15 minutes}"):
        assert list(validator.iter_errors(yaml.safe_load(text))), text
