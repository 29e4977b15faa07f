"""The azd hooks, run for real under /bin/sh with stand-in `az` and `azd` commands (hook_support.py).

postdeploy: waits (bounded) for eventgrid_lab_plan, then creates or updates the event subscription
with exactly the filter shared/runtime/events.py accepts, repairs one left in Failed, provisions nothing.
postdown: a new Key Vault name for the next `azd up`; labguard's subscription removed from a topic
it did not create, the topic never touched. The PowerShell twins are checked for the same commands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hook_support import OUTPUTS, Sandbox, option_values, quick
from infra_support import INFRA

from shared.runtime.events import HANDLED_EVENT_TYPES, HANDLED_OPERATIONS

HOOKS = INFRA / "hooks"
CREATE = ("eventgrid", "system-topic", "event-subscription", "create")
DELETE = ("eventgrid", "system-topic", "event-subscription", "delete")
FUNCTION_SHOW = ("functionapp", "function", "show")


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_waits_until_the_function_is_listed_then_subscribes_it(sandbox: Sandbox):
    sandbox.set(not_found_times=3)
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 0, run.stderr
    assert len(run.az(*FUNCTION_SHOW)) == 4  # three "not found yet", then listed
    assert run.stdout.count("is not listed on func-labguard-abc yet") == 3
    assert "try 1 of 5" in run.stdout and "try 3 of 5" in run.stdout
    (create,) = run.az(*CREATE)
    assert option_values(create, "--endpoint") == [
        f"{OUTPUTS['LABGUARD_FUNCTION_APP_ID']}/functions/eventgrid_lab_plan"
    ]
    assert option_values(create, "--endpoint-type") == ["azurefunction"]
    # Only after the function was listed, and proven by reading it back.
    kinds = [tuple(c[1:5]) for c in run.calls if c[0] == "az"]
    assert kinds.index(CREATE) > max(i for i, k in enumerate(kinds) if k[:3] == FUNCTION_SHOW)
    assert kinds[-1] == ("eventgrid", "system-topic", "event-subscription", "show")
    assert run.state["subscription"] == "Succeeded"


def test_the_subscription_filter_is_exactly_what_the_handler_accepts(sandbox: Sandbox):
    run = sandbox.run("postdeploy.sh", quick())
    (create,) = run.az(*CREATE)
    types = option_values(create, "--included-event-types")
    assert sorted(types) == sorted(set(HANDLED_EVENT_TYPES)) and len(types) == len(set(types))
    key, operator, *values = option_values(create, "--advanced-filter")
    assert (key, operator) == ("data.operationName", "StringIn")
    assert sorted(values) == sorted(HANDLED_OPERATIONS)
    assert create.count("--advanced-filter") == 1  # nothing else narrows or widens it
    assert option_values(create, "--event-delivery-schema") == ["eventgridschema"]
    assert option_values(create, "--max-delivery-attempts") == ["10"]
    assert option_values(create, "--event-ttl") == ["1440"]


def test_gives_up_after_the_bounded_tries_with_a_clear_message(sandbox: Sandbox):
    sandbox.set(not_found_times=1000)
    run = sandbox.run("postdeploy.sh", quick(LABGUARD_HOOK_ATTEMPTS="4"))
    assert run.returncode == 1
    assert len(run.az(*FUNCTION_SHOW)) == 4
    assert run.az(*CREATE) == []
    assert "eventgrid_lab_plan is still not listed on func-labguard-abc after 4 tries" in run.stderr
    assert "azd hooks run postdeploy" in run.stderr
    assert "Traceback" not in run.stderr


def test_never_provisions_again_and_changes_no_app_setting(sandbox: Sandbox):
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 0, run.stderr
    assert not [c for c in run.azd() if c[:1] == ["provision"] or c[:2] == ["env", "set"]]
    assert not [c for c in run.calls if "appsettings" in c or "deployment" in c]
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        assert not re.search(r"(?m)^\s*(if\s+)?azd\s+provision", (HOOKS / hook).read_text())


def test_repairs_a_subscription_left_in_failed(sandbox: Sandbox):
    sandbox.set(subscription="Failed")
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 0, run.stderr
    (delete,) = run.az(*DELETE)
    assert option_values(delete, "--name") == ["labguard-lab-plan-writes"]
    order = [tuple(c[1:5]) for c in run.calls if c[0] == "az" and tuple(c[1:5]) in (DELETE, CREATE)]
    assert order == [DELETE, CREATE]
    assert run.state["subscription"] == "Succeeded"
    assert "is Failed; deleting it to create it again" in run.stdout


def test_running_it_again_converges_without_deleting(sandbox: Sandbox):
    first = sandbox.run("postdeploy.sh", quick())
    second = sandbox.run("postdeploy.sh", quick())
    assert first.returncode == second.returncode == 0
    assert second.az(*DELETE) == []  # a Succeeded subscription is updated in place (PUT), not recreated
    assert first.az(*CREATE) == second.az(*CREATE)


def test_a_refused_subscription_is_repaired_and_retried_in_the_same_run(sandbox: Sandbox):
    sandbox.set(create_failures=2)  # Event Grid refuses twice (validation), then accepts
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 0, run.stderr
    assert len(run.az(*CREATE)) == 3 and len(run.az(*DELETE)) == 2
    assert "try 2 of 3" in run.stdout
    assert run.state["subscription"] == "Succeeded"


def test_fails_loudly_when_event_grid_keeps_refusing(sandbox: Sandbox):
    sandbox.set(create_failures=1000)
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 1
    assert len(run.az(*CREATE)) == 3
    assert "Event Grid refused event subscription labguard-lab-plan-writes 3 times" in run.stderr
    assert run.state["subscription"] == "Failed"
    # The next run repairs it.
    sandbox.set(create_failures=0)
    again = sandbox.run("postdeploy.sh", quick())
    assert again.returncode == 0 and len(again.az(*DELETE)) == 1 and again.state["subscription"] == "Succeeded"


def test_fails_with_a_clear_line_when_the_verification_read_is_not_succeeded(sandbox: Sandbox):
    sandbox.set(create_result="AwaitingManualAction")  # create "succeeds" with a state that is not Succeeded
    run = sandbox.run("postdeploy.sh", quick())
    assert run.returncode == 1
    assert "is 'AwaitingManualAction' after the update" in run.stderr


def test_a_topic_labguard_created_dead_letters_with_its_identity_and_template_role(sandbox: Sandbox):
    run = sandbox.run("postdeploy.sh", quick())
    (create,) = run.az(*CREATE)
    assert option_values(create, "--deadletter-identity") == ["systemassigned"]
    assert option_values(create, "--deadletter-identity-endpoint") == [OUTPUTS["LABGUARD_DEAD_LETTER_CONTAINER_ID"]]
    assert run.az("role", "assignment", "create") == []  # main.bicep assigns it
    assert run.az("eventgrid", "system-topic", "show") == []


def test_an_existing_topic_with_an_identity_gets_the_dead_letter_role_on_the_container_only(sandbox: Sandbox):
    sandbox.set(topic_principal="11111111-2222-3333-4444-555555555555")
    env = quick(
        LABGUARD_SYSTEM_TOPIC="portal-subscription-events",
        LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP="rg-shared",
        LABGUARD_SYSTEM_TOPIC_CREATED="false",
    )
    run = sandbox.run("postdeploy.sh", env)
    assert run.returncode == 0, run.stderr
    (assign,) = run.az("role", "assignment", "create")
    assert option_values(assign, "--assignee-object-id") == ["11111111-2222-3333-4444-555555555555"]
    assert option_values(assign, "--scope") == [OUTPUTS["LABGUARD_DEAD_LETTER_CONTAINER_ID"]]
    assert option_values(assign, "--role") == ["Storage Blob Data Contributor"]
    (create,) = run.az(*CREATE)
    assert option_values(create, "--resource-group") == ["rg-shared"]
    assert option_values(create, "--system-topic-name") == ["portal-subscription-events"]
    assert option_values(create, "--deadletter-identity") == ["systemassigned"]
    # The topic itself is only read, never written or deleted.
    assert not [c for c in run.az("eventgrid", "system-topic") if c[2] in ("create", "update", "delete")]


def test_an_existing_topic_without_an_identity_is_subscribed_without_dead_lettering(sandbox: Sandbox):
    env = quick(LABGUARD_SYSTEM_TOPIC="portal-subscription-events", LABGUARD_SYSTEM_TOPIC_CREATED="false")
    run = sandbox.run("postdeploy.sh", env)
    assert run.returncode == 0, run.stderr
    (create,) = run.az(*CREATE)
    assert "--deadletter-identity" not in create and "--deadletter-identity-endpoint" not in create
    assert "has no system-assigned identity" in run.stdout
    assert run.az("role", "assignment", "create") == []


def test_reads_the_outputs_from_the_azd_environment_when_not_passed(sandbox: Sandbox):
    sandbox.set(azd_env=dict(OUTPUTS))
    run = sandbox.run("postdeploy.sh", {"LABGUARD_HOOK_WAIT_SECONDS": "0"})
    assert run.returncode == 0, run.stderr
    assert ["env", "get-value", "LABGUARD_SYSTEM_TOPIC"] in run.azd()
    assert len(run.az(*CREATE)) == 1


def test_missing_provision_outputs_stop_it_before_any_az_call(sandbox: Sandbox):
    env = quick()
    del env["LABGUARD_FUNCTION_APP_ID"]
    run = sandbox.run("postdeploy.sh", env)
    assert run.returncode == 1
    assert "LABGUARD_FUNCTION_APP_ID is not set: run 'azd provision' first" in run.stderr
    assert [c for c in run.calls if c[0] == "az"] == []


@pytest.mark.parametrize("bad", ["ten", "-1", "3s"])
def test_a_malformed_retry_bound_is_refused(sandbox: Sandbox, bad: str):
    run = sandbox.run("postdeploy.sh", quick(LABGUARD_HOOK_ATTEMPTS=bad))
    assert run.returncode == 1 and "must be whole numbers" in run.stderr
    assert run.az(*FUNCTION_SHOW) == []


# ------------------------------------------------------------------------------------ postdown


def test_postdown_gives_the_next_azd_up_a_new_key_vault_name(sandbox: Sandbox):
    sandbox.set(azd_env={"LABGUARD_KEY_VAULT_SUFFIX": "20260101000000"})
    run = sandbox.run("postdown.sh", {**OUTPUTS})
    assert run.returncode == 0, run.stderr
    suffix = run.state["azd_env"]["LABGUARD_KEY_VAULT_SUFFIX"]
    assert re.fullmatch(r"\d{14}", suffix) and suffix != "20260101000000"
    assert run.az(*DELETE) == []  # labguard's own topic went with its resource group


def test_postdown_removes_only_labguards_subscription_from_a_topic_it_did_not_create(sandbox: Sandbox):
    sandbox.set(subscription="Succeeded")
    env = {
        **OUTPUTS,
        "LABGUARD_SYSTEM_TOPIC": "portal-subscription-events",
        "LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-shared",
        "LABGUARD_SYSTEM_TOPIC_CREATED": "false",
    }
    run = sandbox.run("postdown.sh", env)
    assert run.returncode == 0, run.stderr
    (delete,) = run.az(*DELETE)
    assert option_values(delete, "--name") == ["labguard-lab-plan-writes"]
    assert option_values(delete, "--system-topic-name") == ["portal-subscription-events"]
    assert not [c for c in run.az("eventgrid", "system-topic") if c[2] == "delete"]


# ------------------------------------------------------------------------------------ PowerShell twins


def az_invocations(text: str, continuation: str) -> list[str]:
    """Each `az ...` command of a script, continuation lines joined."""
    joined = re.sub(re.escape(continuation) + r"\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(r"(?m)(?<![\w-])az \w[^\n]*", joined)]


def command_shapes(text: str, continuation: str) -> set[tuple[str, frozenset[str]]]:
    """(subcommand, options) of every az call: what the two shells must agree on."""
    shapes = set()
    for call in az_invocations(text, continuation):
        words = call.split()
        sub = " ".join(w for w in words[1:6] if re.fullmatch(r"[a-z-]+", w) and not w.startswith("-"))
        shapes.add((sub.split(" --")[0], frozenset(re.findall(r"(?<!\S)--[a-z-]+", call))))
    return shapes


@pytest.mark.parametrize("hook", ["postdeploy", "postdown"])
def test_the_powershell_hook_makes_the_same_az_calls_as_the_sh_hook(hook: str):
    # pwsh is not installable here, so the Windows hook cannot run; its az calls (subcommands and
    # options) must match the tested sh hook's, and it must carry the same filter literals.
    sh = (HOOKS / f"{hook}.sh").read_text()
    ps1 = (HOOKS / f"{hook}.ps1").read_text()
    assert command_shapes(sh, "\\") == command_shapes(ps1, "`")
    assert command_shapes(sh, "\\"), "no az calls found: the parser is broken"
    for literal in (*HANDLED_EVENT_TYPES, *HANDLED_OPERATIONS, "labguard-lab-plan-writes", "LABGUARD_KEY_VAULT_SUFFIX"):
        assert (literal in sh) == (literal in ps1), literal
    for setting in sorted(set(re.findall(r"\b(?:AZURE|LABGUARD)_[A-Z_]+", sh))):
        assert setting in ps1, f"{hook}.ps1 does not read {setting}"
