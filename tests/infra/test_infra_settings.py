"""App settings: the template, the sample settings file and the code read the same names.

``shared.runtime.settings.KNOWN_SETTINGS`` is the one list of what the code reads. Each name must be an
app setting of the Function App in the template (or be excluded here, with the reason), and a key
of ``local.settings.sample.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra_support import (
    INFRA,
    ROOT,
    accessor_path,
    allowed_values,
    body,
    decorator_types,
    function_call,
    load_json,
    main,
    module,
    resolve_name,
    resources_of_type,
    unquote,
)

from shared.core.policy import load_policy
from shared.runtime.settings import DEFAULT_SCHEDULE, KNOWN_SETTINGS, Settings

# Read by the code but deliberately not set by the template.
EXCLUDED_FROM_TEMPLATE = {
    "AzureWebJobsStorage": (
        "a connection string carries an account key, and the account allows no key (allowSharedKeyAccess "
        "false): in Azure the host and the ledger use AzureWebJobsStorage__* with the app's identity; "
        "the connection string is for Azurite locally and the tests"
    ),
    "AzureWebJobsStorage__accountName": (
        "the template sets the service URIs instead (AzureWebJobsStorage__blobServiceUri, __queueServiceUri, "
        "__tableServiceUri): they carry the cloud's storage suffix, the account name assumes the public cloud"
    ),
    "LABGUARD_LEDGER_TABLE_ENDPOINT": (
        "an override for a ledger outside the app's storage account; in Azure the ledger uses "
        "AzureWebJobsStorage__tableServiceUri"
    ),
    "AZURE_CLIENT_ID": (
        "names a user-assigned identity; the template gives the app a system-assigned identity, "
        "which DefaultAzureCredential finds without a client id (setting it would be wrong)"
    ),
}

# Secrets: @secure() parameters stored in Key Vault; the app setting holds a Key Vault reference.
SECRET_SETTINGS = {
    "LABGUARD_SMTP_PASSWORD": "smtpPassword",
    "LABGUARD_EVENTGRID_TOPIC_KEY": "eventGridTopicKey",
    "LABGUARD_WEBHOOK_URLS": "webhookUrls",
}

# Settings the Flex Consumption plan rejects (runtime and host version live in functionAppConfig).
FLEX_FORBIDDEN = {"FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE"}


def labguard_settings() -> dict[str, Any]:
    """main.bicep's `appSettings` object: labguard's own settings, name -> expression."""
    return main()["variables"]["appSettings"]["value"]


def functionapp_object_var(name: str) -> dict[str, Any]:
    return module("functionapp")["variables"][name]["value"]


def template_setting_names() -> set[str]:
    """Every app setting name the Function App gets, whatever the hosting plan."""
    return set(labguard_settings()) | set(functionapp_object_var("platformSettings"))


def test_every_setting_the_code_reads_is_an_app_setting_in_the_template():
    missing = set(KNOWN_SETTINGS) - set(EXCLUDED_FROM_TEMPLATE) - template_setting_names()
    assert not missing, f"settings the code reads but infra/ never sets: {sorted(missing)}"


def test_excluded_settings_are_really_absent_and_still_read_by_the_code():
    assert set(EXCLUDED_FROM_TEMPLATE) <= set(KNOWN_SETTINGS), "exclusion of a setting the code no longer reads"
    assert not set(EXCLUDED_FROM_TEMPLATE) & template_setting_names()


def test_template_sets_no_labguard_setting_the_code_does_not_read():
    unknown = {n for n in template_setting_names() if n.startswith("LABGUARD_")} - set(KNOWN_SETTINGS)
    assert not unknown, f"typo or stale setting in infra/: {sorted(unknown)}"


def test_sample_settings_file_has_every_setting_the_code_reads():
    sample = load_json(ROOT / "local.settings.sample.json")
    missing = set(KNOWN_SETTINGS) - set(sample["Values"])
    assert not missing, f"local.settings.sample.json lacks: {sorted(missing)}"


def test_the_function_app_gets_main_settings_merged_with_the_platform_settings():
    fa = module("functionapp")
    (config,) = (
        r for r in resources_of_type(fa, "Microsoft.Web/sites/config").values() if body(r)["name"] == "appsettings"
    )
    call = function_call(body(config)["properties"])
    assert call is not None and call[0] == "union"
    merged = list(call[1].values())
    assert merged == ["platformSettings", "appSettings"], "labguard's settings must be merged last (and so win)"
    assert resolve_name(fa, "appSettings")[0] == "param"
    passed = body(main()["modules"]["functionApp"])["params"]["appSettings"]
    assert passed == "appSettings" and resolve_name(main(), passed)[0] == "var"


def test_flex_consumption_gets_none_of_the_settings_it_rejects():
    assert not FLEX_FORBIDDEN & template_setting_names()


def test_host_storage_is_identity_based_and_telemetry_settings_are_present():
    platform = functionapp_object_var("platformSettings")
    assert "AzureWebJobsStorage" not in platform, "a connection string needs an account key"
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    for service in ("blob", "queue", "table"):
        endpoint = platform[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert resolve_name(module("functionapp"), endpoint)[0] == "param"
        passed = body(main()["modules"]["functionApp"])["params"][endpoint]
        assert accessor_path(passed) == ["storage", "outputs", f"{service}Endpoint"]
        output = module("storage")["outputs"][f"{service}Endpoint"]["value"]
        assert accessor_path(output) == ["storage", "properties", "primaryEndpoints", service]
    assert {"APPLICATIONINSIGHTS_CONNECTION_STRING"} <= set(platform)
    assert platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"


def test_the_ledger_finds_its_table_from_the_settings_azure_gets():
    # The app settings the template gives the Function App, as the ledger's settings reader sees them.
    env = {
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__tableServiceUri": "https://stlabguardabc.table.core.windows.net/",
        "LABGUARD_LEDGER_TABLE": "labguardnotices",
    }
    assert set(env) - {"LABGUARD_LEDGER_TABLE"} <= set(functionapp_object_var("platformSettings"))
    settings = Settings.from_env(env)
    assert settings.storage_connection is None
    assert settings.ledger_table_endpoint == "https://stlabguardabc.table.core.windows.net"


@pytest.mark.parametrize(("setting", "param_name"), sorted(SECRET_SETTINGS.items()))
def test_secrets_are_secure_parameters_kept_in_key_vault(setting: str, param_name: str):
    param = main()["parameters"][param_name]
    assert "secure" in decorator_types(param)
    assert param.get("default", "") == "", "a secret must never have a default value"
    path = accessor_path(labguard_settings()[setting])
    assert path is not None and path[:2] == ["keyVault", "outputs"], f"{setting} must be a Key Vault reference"
    kv = module("keyvault")
    assert "secure" in decorator_types(kv["parameters"][param_name])
    output = kv["outputs"][path[2]]["value"]["operator"]["operands"]
    assert output["true_value"] == "", "no secret: the setting is empty (channel off)"
    assert output["false_value"].startswith("@Microsoft.KeyVault(VaultName=")
    assert f"${{{param_name}}}" not in output["false_value"], "the reference must not embed the secret value"


def test_no_secret_parameter_reaches_an_app_setting_directly():
    direct = {name: value for name, value in labguard_settings().items() if value in SECRET_SETTINGS.values()}
    assert not direct


def test_mode_defaults_to_the_policy_file_and_allows_only_audit_or_enforce():
    # One rule (shared.core.policy.load_policy): the setting wins when set, the policy file otherwise. An empty
    # default keeps the file's `mode:` in charge; the bundled policy.yaml says audit.
    (name,) = [v for k, v in labguard_settings().items() if k == "LABGUARD_MODE"]
    param = main()["parameters"][name]
    assert param["default"] == ""
    assert allowed_values(param) == ["", "audit", "enforce"]
    assert load_json(INFRA / "main.parameters.json")["parameters"][name]["value"] == "${LABGUARD_MODE=}"


def test_schedule_is_always_set_and_defaults_to_the_code_default():
    # The timer binding reads %LABGUARD_SCHEDULE%: the host fails to index the function without it.
    value = labguard_settings()["LABGUARD_SCHEDULE"]
    kind, param = resolve_name(main(), value)
    assert kind == "param" and param["default"] == DEFAULT_SCHEDULE


def test_ledger_table_created_is_the_one_the_setting_names():
    path = accessor_path(labguard_settings()["LABGUARD_LEDGER_TABLE"])
    assert path == ["storage", "outputs", "ledgerTableName"]
    storage_params = body(main()["modules"]["storage"])["params"]
    kind, param = resolve_name(main(), storage_params["ledgerTableName"])
    assert kind == "param"
    assert param["default"] == Settings.from_env({}).ledger_table


def template_defaults_as_environment() -> dict[str, str]:
    """App settings as a fresh `azd up` leaves them (deploy-time values filled in realistically)."""
    env: dict[str, str] = {}
    for name, value in labguard_settings().items():
        kind, resolved = resolve_name(main(), value)
        if kind == "param":
            env[name] = resolved.get("default", "")
        elif kind == "literal":
            env[name] = resolved
    # Computed at deploy time; the values are what the template computes by default.
    env["LABGUARD_ARM_ENDPOINT"] = "https://management.azure.com/"  # environment().resourceManager
    env["LABGUARD_SUBSCRIPTIONS"] = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"  # the deployment subscription
    env["LABGUARD_RESOURCE_GROUPS"] = ""  # no resource group narrowing
    env["LABGUARD_LEDGER_TABLE"] = "labguardnotices"
    env["LABGUARD_REPORT_ACCOUNT_URL"] = "https://stlabguardexample.blob.core.windows.net/"  # storage blobEndpoint
    for secret in SECRET_SETTINGS:  # no secret given: empty
        env[secret] = ""
    return env


def test_template_defaults_are_a_valid_safe_configuration():
    env = template_defaults_as_environment()
    assert set(env) == set(labguard_settings()), "every labguard setting got a value above"
    settings = Settings.from_env(env)
    assert settings.mode_override is None  # the policy file decides ...
    assert load_policy(ROOT / "policy.yaml").mode == "audit"  # ... and the bundled one audits
    assert settings.smtp_host is None and settings.webhook_urls == () and settings.eventgrid_topic_endpoint is None


def test_parameters_file_feeds_every_parameter_without_a_default_and_nothing_else():
    params = main()["parameters"]
    fed = set(load_json(INFRA / "main.parameters.json")["parameters"])
    assert fed <= set(params), f"main.parameters.json names unknown parameters: {sorted(fed - set(params))}"
    required = {name for name, p in params.items() if "default" not in p}
    assert required <= fed


def test_azure_yaml_deploys_this_folder_as_a_python_function_to_the_tagged_app():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    ((service_name, service),) = config["services"].items()
    assert service["host"] == "function" and service["language"] == "python" and service["project"] == "."
    site = body(module("functionapp")["resources"]["functionApp"])
    call = function_call(site["tags"])
    assert call is not None and call[0] == "union"
    assert {unquote(k): v for k, v in call[1]["arg_2"].items()} == {"azd-service-name": service_name}
    for hook in config["hooks"].values():
        for shell in hook.values():
            assert (ROOT / shell["run"]).is_file()


def test_the_compliance_page_is_on_by_default_in_a_container_the_app_identity_can_write():
    text = (Path(__file__).resolve().parents[2] / "infra" / "main.bicep").read_text()
    assert "param reportContainer string = 'labguard-reports'" in text
    app = (Path(__file__).resolve().parents[2] / "infra" / "modules" / "functionapp.bicep").read_text()
    # Blob Data Owner on the whole account (not only the deployment container) covers the report container.
    owner = app.index("roleDefinitions', storageBlobDataOwner)")
    assert "scope: storage\n" in app[app.rindex("resource ", 0, owner) : owner]


def test_the_template_spares_each_new_instance_pydantic_s_plugin_scan() -> None:
    """With the platform setting the template gives, a fresh interpreter loads the policy and the settings (what
    the first event does) without pydantic scanning the installed distributions for plugins; without it, it
    scans them (several ms of every new instance's first event)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    probe = (
        "from shared.core.policy import load_policy\n"
        "from shared.runtime.settings import Settings\n"
        "load_policy('policy.yaml'); Settings.from_env({})\n"
        "import pydantic.plugin._loader as loader\n"
        "print('scanned' if loader._plugins is not None else 'not scanned')\n"
    )
    value = functionapp_object_var("platformSettings")["PYDANTIC_DISABLE_PLUGINS"]
    seen = {}
    for label, extra in (("template", {"PYDANTIC_DISABLE_PLUGINS": value}), ("unset", {})):
        env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"} | extra
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        seen[label] = done.stdout.strip()
    assert seen == {"template": "not scanned", "unset": "scanned"}
