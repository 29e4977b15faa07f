"""Least privilege: the identity may do what the ARM adapter does, and nothing more.

``shared.edge.arm.ARM_ACTIONS`` lists the RBAC actions of every ARM request the adapter needs. The custom
role (infra/roles/lab-plan-operator.json, loaded by main.bicep) must cover each of them and grant
nothing beyond them; every action must exist in the provider's catalog, or ARM rejects the whole role.
A write is waited for by reading the plan, so no operation-results role is granted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from infra_support import (
    INFRA,
    accessor_path,
    action_matches,
    bicep_files,
    body,
    function_call,
    load_json,
    main,
    module,
    parse,
    resources_of_type,
)

from shared.edge.arm import ARM_ACTIONS as PLAN_ARM_ACTIONS
from shared.edge.lab_arm import LAB_ARM_ACTIONS

ARM_ACTIONS = PLAN_ARM_ACTIONS | LAB_ARM_ACTIONS  # plans and labs: the role grows by exactly the lab actions

ROLES = {
    "labPlanOperator": INFRA / "roles" / "lab-plan-operator.json",
}
CATALOG = Path(__file__).with_name("labservices_operations.txt")

# Built-in roles the template may assign inside labguard's own resource group, each on one resource.
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


def role(symbol: str) -> dict[str, Any]:
    return load_json(ROLES[symbol])


def granted_actions() -> set[str]:
    return {action for symbol in ROLES for action in role(symbol)["actions"]}


def catalog() -> set[str]:
    lines = CATALOG.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_roles_cover_every_action_the_adapter_performs():
    uncovered = {a for a in ARM_ACTIONS if not any(action_matches(g, a) for g in granted_actions())}
    assert not uncovered, f"the adapter needs actions no role grants: {sorted(uncovered)}"


def test_roles_grant_nothing_the_adapter_does_not_perform():
    unused = {g for g in granted_actions() if not any(action_matches(g, a) for a in ARM_ACTIONS)}
    assert not unused, f"roles grant actions the adapter never uses: {sorted(unused)}"


@pytest.mark.parametrize("symbol", sorted(ROLES))
def test_each_role_is_exact_actions_only(symbol: str):
    definition = role(symbol)
    assert definition["actions"], "an empty role is a mistake"
    assert all("*" not in a for a in definition["actions"]), "no wildcards: every action is named"
    assert definition["notActions"] == definition["dataActions"] == definition["notDataActions"] == []
    assert all(a.startswith("Microsoft.LabServices/") for a in definition["actions"])


def test_every_granted_action_exists_in_the_provider_catalog():
    # ARM answers InvalidActionOrNotAction (and creates no role) for an action it does not know.
    unknown = granted_actions() - catalog()
    assert not unknown, f"not in the Microsoft.LabServices catalog: {sorted(unknown)}"


def test_no_operation_results_role_waiting_reads_the_plan():
    # The operation URL is only a hint (a 403 from it never fails a fix): no role names it.
    assert sorted(INFRA.joinpath("roles").glob("*.json")) == [ROLES["labPlanOperator"]]
    assert role("labPlanOperator")["actions"] == [
        "Microsoft.LabServices/labPlans/read",
        "Microsoft.LabServices/labPlans/write",
        "Microsoft.LabServices/labs/read",
        "Microsoft.LabServices/labs/write",
    ]
    assert "operationReader" not in main()["resources"]


@pytest.mark.parametrize("symbol", sorted(ROLES))
def test_main_builds_each_role_definition_from_its_json_file(symbol: str):
    tree = main()
    definition = body(tree["resources"][symbol])
    assert tree["resources"][symbol]["type"] == "Microsoft.Authorization/roleDefinitions"
    properties = definition["properties"]
    assert properties["type"] == "CustomRole"
    (permission,) = properties["permissions"]
    for key in ("actions", "notActions", "dataActions", "notDataActions"):
        path = accessor_path(permission[key])
        assert path is not None and path[1:] == [key]
        loader = function_call(tree["variables"][path[0]]["value"])
        assert loader == (
            "load_json_content",
            {"file_path": f"roles/{ROLES[symbol].name}", "json_path": None, "encoding": None},
        )


def module_loops(target: str) -> dict[str, dict[str, Any]]:
    return {
        name: m
        for name, m in main()["modules"].items()
        if m["detail"]["path"] == f"modules/{target}.bicep" and m["config"].get("loop_type")
    }


def assigned_role(module_body: dict[str, Any]) -> str:
    """The role symbol a role-assignment module call assigns (from its roleDefinitionId string)."""
    role_id = module_body["params"]["roleDefinitionId"]
    assert (
        role_id.startswith("/subscriptions/${") and "/providers/Microsoft.Authorization/roleDefinitions/${" in role_id
    )
    symbol = role_id.rsplit("${", 1)[1].removesuffix(".name}")
    assert symbol in ROLES
    return symbol


def loop_array(m: dict[str, Any]) -> Any:
    return m["config"]["loop_type"]["detail"]["array_name"]


def test_lab_plan_role_is_assigned_on_watched_subscriptions_or_listed_resource_groups():
    on_subscriptions = {assigned_role(body(m)): m for m in module_loops("role-assignment-subscription").values()}
    on_groups = {assigned_role(body(m)): m for m in module_loops("role-assignment-resourcegroup").values()}
    assert set(on_subscriptions) == set(on_groups) == {"labPlanOperator"}
    # Lab plans: every watched subscription, unless resource groups are listed; then those only.
    assert loop_array(on_subscriptions["labPlanOperator"]) == {
        "operator": {
            "type": "conditional",
            "operands": {"condition": "resourceGroupMode", "true_value": [], "false_value": "watchedSubscriptions"},
        }
    }
    assert loop_array(on_groups["labPlanOperator"]) == "scopeResourceGroupIds"


@pytest.mark.parametrize("target", ["role-assignment-subscription", "role-assignment-resourcegroup"])
def test_assignment_modules_assign_to_the_app_identity_only(target: str):
    tree = module(target)
    (assignment,) = resources_of_type(tree, "Microsoft.Authorization/roleAssignments").values()
    props = body(assignment)["properties"]
    assert props["principalType"] == "ServicePrincipal"
    assert props["principalId"] == "principalId"
    for m in module_loops(target).values():
        assert accessor_path(body(m)["params"]["principalId"]) == ["functionApp", "outputs", "principalId"]


def all_role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in bicep_files():
        for name, r in resources_of_type(parse(path), "Microsoft.Authorization/roleAssignments").items():
            found.append((path, name, body(r)))
    return found


def test_built_in_roles_are_only_the_data_roles_each_on_one_resource():
    # Identity-based AzureWebJobsStorage: blob, queue and table data roles on labguard's own storage
    # account, as the official Flex Consumption azd samples assign them (no account keys).
    expected = {
        ("functionapp.bicep", STORAGE_BLOB_DATA_OWNER, "storage"),
        ("functionapp.bicep", STORAGE_QUEUE_DATA_CONTRIBUTOR, "storage"),
        ("functionapp.bicep", STORAGE_TABLE_DATA_CONTRIBUTOR, "storage"),
        ("functionapp.bicep", KEY_VAULT_SECRETS_USER, "vault"),
        ("functionapp.bicep", MONITORING_METRICS_PUBLISHER, "appInsights"),
        ("eventgrid.bicep", STORAGE_BLOB_DATA_CONTRIBUTOR, "deadLetterContainer"),
    }
    seen = set()
    for path, _, assignment in all_role_assignments():
        if path.parent.name != "modules" or path.stem.startswith("role-assignment-"):
            continue
        role_id = function_call(assignment["properties"]["roleDefinitionId"])
        assert role_id is not None and role_id[0] == "subscription_resource_id"
        role_var = role_id[1]["resource_name_1"]
        guid = parse(path)["variables"][role_var]["value"]
        seen.add((path.name, guid, assignment["scope"]))
    assert seen == expected


def test_role_definitions_are_assignable_only_where_labguard_watches():
    expected_watched = {
        "labPlanOperator": {
            "operator": {
                "type": "conditional",
                "operands": {
                    "condition": "resourceGroupMode",
                    "true_value": "scopeResourceGroupIds",
                    "false_value": "watchedSubscriptionScopes",
                },
            }
        },
    }
    for symbol, watched in expected_watched.items():
        scopes = body(main()["resources"][symbol])["properties"]["assignableScopes"]
        call = function_call(scopes)
        assert call is not None and call[0] == "union"
        (home,) = call[1]["arg_1"]  # the deployment subscription, where the definition is created
        assert accessor_path(home) == [
            {"function": {"type": "subscription", "parameters": {"subscription_id": None}}},
            "id",
        ]
        assert call[1]["arg_2"] == watched
