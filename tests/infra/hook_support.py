"""Running the azd hooks (infra/hooks/*.sh) for real, with stand-in `az` and `azd` commands on PATH.

The stand-ins are one small Python program (written per test into a bin/ folder) that appends each
call's argv to calls.jsonl and answers from state.json: how many more times the function is "not
found yet", how many more creates Event Grid refuses, the event subscription's provisioning state,
the topic's identity, the azd environment. The hooks are plain POSIX sh and run under /bin/sh, as
azd runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra_support import INFRA

STANDIN = r"""
import json, os, sys
from pathlib import Path

here = Path(os.environ["LABGUARD_STANDIN_DIR"])
tool = Path(sys.argv[0]).name
args = sys.argv[1:]
with (here / "calls.jsonl").open("a") as log:
    log.write(json.dumps([tool, *args]) + "\n")
state_file = here / "state.json"
state = json.loads(state_file.read_text())


def save():
    state_file.write_text(json.dumps(state))


def flag(name):
    return args[args.index(name) + 1] if name in args else None


def not_found(what):
    sys.stderr.write(f"ERROR: (ResourceNotFound) {what} was not found.\n")
    sys.exit(3)


if tool == "azd":
    if args[:2] == ["env", "get-value"]:
        value = state["azd_env"].get(args[2])
        if value is None:
            sys.stderr.write(f"ERROR: key '{args[2]}' not found in the environment values\n")
            sys.exit(1)
        print(value)
    elif args[:2] == ["env", "set"]:
        state["azd_env"][args[2]] = args[3]
        save()
    else:
        sys.stderr.write("stand-in azd: unexpected call\n")
        sys.exit(9)
    sys.exit(0)

command = " ".join(a for a in args if not a.startswith("-"))[:200]
if args[:3] == ["functionapp", "function", "show"]:
    if state["not_found_times"] > 0:
        state["not_found_times"] -= 1
        save()
        not_found(f"Function {flag('--function-name')}")
    print(f"{flag('--name')}/{flag('--function-name')}")
elif args[:4] == ["eventgrid", "system-topic", "event-subscription", "show"]:
    if state["subscription"] is None:
        not_found(f"Event subscription {flag('--name')}")
    print(state["subscription"])
elif args[:4] == ["eventgrid", "system-topic", "event-subscription", "delete"]:
    if state["subscription"] is None:
        not_found(f"Event subscription {flag('--name')}")
    state["subscription"] = None
    save()
elif args[:4] == ["eventgrid", "system-topic", "event-subscription", "create"]:
    if state["create_failures"] > 0:
        state["create_failures"] -= 1
        state["subscription"] = "Failed"
        save()
        sys.stderr.write("ERROR: (BadRequest) Destination endpoint validation failed.\n")
        sys.exit(1)
    state["subscription"] = state["create_result"]
    save()
elif args[:3] == ["eventgrid", "system-topic", "show"]:
    print(state["topic_principal"])
elif args[:3] == ["role", "assignment", "create"]:
    pass
else:
    sys.stderr.write(f"stand-in az: unexpected call {command}\n")
    sys.exit(9)
"""

# What `azd provision` leaves in the azd environment (main.bicep outputs), as azd passes it to hooks.
OUTPUTS = {
    "AZURE_SUBSCRIPTION_ID": "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345",
    "AZURE_RESOURCE_GROUP": "rg-labguard",
    "AZURE_FUNCTION_APP_NAME": "func-labguard-abc",
    "LABGUARD_FUNCTION_APP_ID": (
        "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-labguard"
        "/providers/Microsoft.Web/sites/func-labguard-abc"
    ),
    "LABGUARD_SYSTEM_TOPIC": "evgt-labguard-abc",
    "LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-labguard",
    "LABGUARD_SYSTEM_TOPIC_CREATED": "true",
    "LABGUARD_DEAD_LETTER_CONTAINER_ID": (
        "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-labguard/providers"
        "/Microsoft.Storage/storageAccounts/stlabguardabc/blobServices/default/containers/eventgrid-deadletter"
    ),
}


@dataclass
class HookRun:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]
    state: dict[str, Any]

    def az(self, *prefix: str) -> list[list[str]]:
        """The az calls whose arguments start with prefix (argv without the tool name)."""
        return [c[1:] for c in self.calls if c[0] == "az" and c[1 : 1 + len(prefix)] == list(prefix)]

    def azd(self) -> list[list[str]]:
        return [c[1:] for c in self.calls if c[0] == "azd"]


@dataclass
class Sandbox:
    """A bin/ folder with the stand-ins and their state; run hooks in it (state carries over between runs)."""

    root: Path
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in ("az", "azd"):
            path = bin_dir / tool
            path.write_text(f"#!{sys.executable} -SE\n{STANDIN}")  # -S -E: fast start, no site
            path.chmod(0o755)
        defaults: dict[str, Any] = {
            "not_found_times": 0,
            "subscription": None,
            "create_result": "Succeeded",
            "create_failures": 0,
            "topic_principal": "",
            "azd_env": {},
        }
        self.state = {**defaults, **self.state}
        self._save()

    def _save(self) -> None:
        (self.root / "state.json").write_text(json.dumps(self.state))

    def set(self, **changes: Any) -> None:
        self.state.update(changes)
        self._save()

    def run(self, hook: str, env: dict[str, str] | None = None) -> HookRun:
        calls_file = self.root / "calls.jsonl"
        calls_file.write_text("")
        base = {k: v for k, v in os.environ.items() if not (k.startswith(("AZURE_", "LABGUARD_")))}
        run_env = {
            **base,
            "PATH": f"{self.root / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "LABGUARD_STANDIN_DIR": str(self.root),
            **(env or {}),
        }
        done = subprocess.run(
            ["/bin/sh", str(INFRA / "hooks" / hook)],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        calls = [json.loads(line) for line in calls_file.read_text().splitlines() if line.strip()]
        self.state = json.loads((self.root / "state.json").read_text())
        return HookRun(done.returncode, done.stdout, done.stderr, calls, self.state)


def quick(**extra: str) -> dict[str, str]:
    """Provision outputs plus a short bounded wait, as the process environment of a hook."""
    return {**OUTPUTS, "LABGUARD_HOOK_ATTEMPTS": "5", "LABGUARD_HOOK_WAIT_SECONDS": "0", **extra}


def option_values(argv: list[str], name: str) -> list[str]:
    """The values after `name` up to the next --option (az takes space-separated lists)."""
    if name not in argv:
        return []
    values = []
    for arg in argv[argv.index(name) + 1 :]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values
