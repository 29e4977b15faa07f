"""`azd up` on a subscription as a school has it (issue 15): one test per finding, on the parsed template.

- one Event Grid system topic per subscription: use an existing one, create one only when none;
- no storage account keys anywhere;
- Flex Consumption only;
- a Key Vault name that a second `azd up` after `azd down` can take;
- stated tool versions, cost and lifetime, and the first-deploy checklist in the guides.
The hooks' behaviour is in test_infra_hooks.py.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from infra_support import (
    INFRA,
    README,
    ROOT,
    accessor_path,
    bicep_files,
    body,
    condition,
    function_call,
    load_json,
    main,
    module,
    parse,
    resources_of_type,
)

PARAMETERS = INFRA / "main.parameters.json"
NOT_EXISTING = {"operator": {"type": "not", "operands": {"bool_value": "useExistingSystemTopic"}}}


def walk(node: Any) -> Any:
    """Every dict, list and scalar of a pycep tree."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def fed(name: str) -> str:
    return str(load_json(PARAMETERS)["parameters"][name]["value"])


# ------------------------------------------------------------------------------------ 1. one system topic


def test_an_existing_system_topic_is_used_and_one_is_created_only_when_there_is_none():
    params = main()["parameters"]
    assert params["existingSystemTopicName"]["default"] == ""
    assert params["existingSystemTopicResourceGroup"]["default"] == ""
    assert fed("existingSystemTopicName") == "${LABGUARD_EXISTING_SYSTEM_TOPIC=}"
    assert fed("existingSystemTopicResourceGroup") == "${LABGUARD_EXISTING_SYSTEM_TOPIC_RESOURCE_GROUP=}"
    # The topic module runs only without an existing topic.
    event_grid = main()["modules"]["eventGrid"]
    assert condition(event_grid) == NOT_EXISTING
    use_existing = main()["variables"]["useExistingSystemTopic"]["value"]["operator"]
    assert use_existing["type"] == "not"
    assert function_call(use_existing["operands"]["bool_value"]) == (
        "empty",
        {"item_to_test": "existingSystemTopicName"},
    )
    # The hook subscribes to whichever topic is in use, in its resource group.
    outputs = main()["outputs"]
    assert outputs["LABGUARD_SYSTEM_TOPIC"]["value"] == "systemTopicName"
    chosen = main()["variables"]["systemTopicName"]["value"]["operator"]["operands"]
    assert chosen["condition"] == "useExistingSystemTopic"
    assert chosen["true_value"] == "existingSystemTopicName"
    group = outputs["LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP"]["value"]["operator"]["operands"]
    assert group["true_value"] == "existingSystemTopicResourceGroup"
    assert accessor_path(group["false_value"]) == ["rg", "name"]
    created = outputs["LABGUARD_SYSTEM_TOPIC_CREATED"]["value"]
    assert created == NOT_EXISTING


def test_only_the_eventgrid_module_creates_a_system_topic():
    # A topic declared anywhere else would be created (and so fail) even when one exists.
    declared = {
        path.name
        for path in bicep_files()
        if resources_of_type(parse(path), "Microsoft.EventGrid/systemTopics")
        and not all(
            r.get("existing") for r in resources_of_type(parse(path), "Microsoft.EventGrid/systemTopics").values()
        )
    }
    assert declared == {"eventgrid.bicep"}


def test_the_guide_shows_how_to_find_the_existing_topic():
    text = README.read_text(encoding="utf-8")
    assert "az eventgrid system-topic list" in text
    assert "Microsoft.Resources.Subscriptions" in text
    assert "LABGUARD_EXISTING_SYSTEM_TOPIC" in text and "LABGUARD_EXISTING_SYSTEM_TOPIC_RESOURCE_GROUP" in text


# ------------------------------------------------------------------------------------ 2. no account keys


def test_the_storage_account_allows_no_shared_key():
    (account,) = resources_of_type(module("storage"), "Microsoft.Storage/storageAccounts").values()
    properties = body(account)["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["defaultToOAuthAuthentication"] is True


def test_no_template_reads_an_account_key_or_builds_a_connection_string():
    for path in bicep_files():
        tree = parse(path)
        calls = {
            n["function"]["type"] for n in walk(tree) if isinstance(n, dict) and isinstance(n.get("function"), dict)
        }
        assert not {c for c in calls if c.startswith("list")}, f"{path.name} calls {sorted(calls)}"
        strings = [n for n in walk(tree) if isinstance(n, str)]
        assert not [s for s in strings if "AccountKey=" in s or "SharedAccessSignature=" in s], path.name


def test_the_flex_deployment_package_is_read_with_the_app_identity():
    site = body(module("functionapp")["resources"]["functionApp"])
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}


# ------------------------------------------------------------------------------------ 4. Flex Consumption only


def test_labguard_deploys_on_flex_consumption_only():
    (plan,) = resources_of_type(module("functionapp"), "Microsoft.Web/serverfarms").values()
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert "hostingPlan" not in main()["parameters"] and "hostingPlan" not in module("functionapp")["parameters"]
    assert "LABGUARD_HOSTING_PLAN" not in PARAMETERS.read_text(encoding="utf-8")
    # No Y1/Dynamic remnant (a Consumption app would need WEBSITE_RUN_FROM_PACKAGE and a keyed content share).
    for path in bicep_files():
        strings = {n for n in walk(parse(path)) if isinstance(n, str)}
        assert not strings & {"Y1", "Dynamic", "Python|3.11", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE"}
    site = body(module("functionapp")["resources"]["functionApp"])
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}


def test_the_guides_say_labguard_deploys_on_flex_consumption():
    for text in (README.read_text(encoding="utf-8"), (ROOT / "README.md").read_text(encoding="utf-8")):
        assert "Flex Consumption" in text
    assert "LABGUARD_HOSTING_PLAN" not in README.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ 5. redeploy after azd down


def test_the_key_vault_name_changes_with_a_suffix_the_postdown_hook_rotates():
    name = main()["variables"]["keyVaultName"]["value"]
    assert name == "kv-lg-${uniqueString(subscription().id, environmentName, location, keyVaultSuffix)}"
    assert len("kv-lg-") + 13 <= 24  # uniqueString is 13 characters
    assert body(main()["modules"]["keyVault"])["params"]["keyVaultName"] == "keyVaultName"
    assert main()["parameters"]["keyVaultSuffix"]["default"] == ""
    assert fed("keyVaultSuffix") == "${LABGUARD_KEY_VAULT_SUFFIX=}"
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))["hooks"]
    assert hooks["postdown"]["posix"]["run"] == "./infra/hooks/postdown.sh"
    assert hooks["postdown"]["windows"]["run"] == "./infra/hooks/postdown.ps1"
    assert "LABGUARD_KEY_VAULT_SUFFIX" in (INFRA / "hooks" / "postdown.sh").read_text(encoding="utf-8")


def test_the_vault_keeps_purge_protection():
    (vault,) = resources_of_type(module("keyvault"), "Microsoft.KeyVault/vaults").values()
    assert body(vault)["properties"]["enablePurgeProtection"] is True


# ------------------------------------------------------------------------------------ 6. versions


def test_azure_yaml_requires_the_azd_that_honours_funcignore():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert config["requiredVersions"]["azd"] == ">= 1.23.13"
    assert (ROOT / ".funcignore").is_file()


def test_the_guide_states_the_tool_versions_it_was_written_for():
    text = README.read_text(encoding="utf-8")
    assert re.search(r"azd\)? 1\.23\.13", text)
    assert re.search(r"Azure CLI\)? 2\.\d+", text)


# ------------------------------------------------------------------------------------ 7. cost and lifetime


def test_the_guide_gives_idle_and_busy_monthly_cost_with_the_meters():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Cost", 1)[1].split("\n## ", 1)[0]
    for meter in ("On Demand Execution Time", "On Demand Total Executions", "Analytics Logs", "Operations"):
        assert meter in section, meter
    assert "idle" in section.lower() and "busy" in section.lower()
    assert "4 x 24 x 30 = **2,880 runs**" in section, "a 15-minute timer runs 2,880 times in 30 days"
    assert "**Total**" in section and "East US" in section


def test_the_readme_states_the_retirement_of_lab_services():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "2027-06-28" in text or "28 June 2027" in text
    assert "2024-07" in text or "July 2024" in text


# ------------------------------------------------------------------------------------ 8. first deploy


def test_the_guide_ends_with_the_first_deploy_checklist():
    text = README.read_text(encoding="utf-8")
    last = text.rsplit("\n## ", 1)[1]
    assert last.startswith("First-deploy checklist")
    for step in ("az bicep build", "azd up", "LABGUARD_EXISTING_SYSTEM_TOPIC", "labguard doctor", "--live", "azd down"):
        assert step in last, step
    items = re.split(r"(?m)^\d+\. ", last)[1:]
    assert len(items) >= 6
    assert all("Success:" in item for item in items), "each line says what success looks like"
