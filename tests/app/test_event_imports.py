"""What the first event loads: a fresh interpreter handles one Event Grid event through the indexed function.

The first invocation on a new worker pays for every module its path imports and every read of the system
CA store (issue 18 item 6), so what the event does not use stays off it. Checked in a fresh process, as a
new Functions worker starts, against the local endpoint trusted as production trusts ARM (the system store,
which SSL_CERT_FILE points at the endpoint's CA; no LABGUARD_CA_BUNDLE); the event is decoded as the worker
decodes it, and the PATCH it causes shows it ran in full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import plan_body
from .test_functions_e2e import patches, write_event

ROOT = Path(__file__).resolve().parents[2]

ONE_EVENT = """
import asyncio, json, ssl, sys

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from function_app import app

store_reads = []
read_store = ssl.SSLContext.load_default_certs


def counted(self, *args, **kwargs):
    store_reads.append(1)
    return read_store(self, *args, **kwargs)


ssl.SSLContext.load_default_certs = counted  # what ssl.create_default_context() reads the system store with


async def main() -> None:
    function = next(f for f in app.get_functions() if f.get_function_name() == "eventgrid_lab_plan")
    event = EventGridEventInConverter.decode(Datum(sys.stdin.read(), "json"), trigger_metadata={})
    await function.get_user_function()(event)
    loaded = sorted(sys.modules)
    from shared.runtime.runs import close_runtimes

    await close_runtimes()
    print(json.dumps({"modules": loaded, "store_reads": len(store_reads)}))


asyncio.run(main())
"""

# Not on the path of one event for a drifted plan (no notice channel, no storage, the changer mail off):
NOT_ON_THE_EVENT_PATH = {
    "pydantic_settings": "the settings are a dataclass read by hand (pydantic-settings cost the first event ~20 ms)",
    "dotenv": "pydantic-settings' .env reader; no .env file is read",
    "shared.notices.email": "the mail channel, imported only when LABGUARD_SMTP_HOST is set",
    "shared.notices.topic": "the Event Grid topic channel, imported only when its endpoint is set",
    "azure.eventgrid": "the topic channel's client",
    "azure.data.tables": "the table library, imported only when a table is set",
    "shared.notices.changer": "the changer mail, imported only when LABGUARD_NOTIFY_CHANGER is on",
    "shared.notices.delivery": "the notifier, built only when a notice channel is set (it has none to use)",
    "shared.core.snapshot": "the compliance page's snapshot; the change log's row is shared.core.change",
    "shared.notices.changer_message": "the changer mail's text; events read who changed what with changer_claims",
    "shared.notices.message": "the failure notice's text, built only when a notice is sent",
}


def _one_event_in_a_fresh_process(
    emu: Any, body: dict[str, Any], extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AzureWebJobs", "IDENTITY_", "MSI_", *drop))}
    env.update({"PYTHONPATH": str(ROOT), "SSL_CERT_FILE": emu.ca_file, "LABGUARD_CA_BUNDLE": "", **(extra_env or {})})
    done = subprocess.run(
        [sys.executable, "-c", ONE_EVENT],
        input=json.dumps(write_event(body["id"])),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_the_first_event_loads_nothing_it_does_not_use(emu: Any, configure: Any) -> None:
    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_requests()
    seen = _one_event_in_a_fresh_process(emu, body)
    assert len(patches(emu)) == 1  # the event ran in full over verified TLS: read, evaluated, written
    loaded = set(seen["modules"])
    assert "shared.edge.arm" in loaded and "shared.core.policy" in loaded
    imported = {name: why for name, why in NOT_ON_THE_EVENT_PATH.items() if name in loaded}
    assert not imported, f"the first event imported what it does not use: {imported}"
    # aiohttp's own default context (built when it is imported) is the ARM session's: the store is read once
    assert seen["store_reads"] <= 1, f"the first event read the system CA store {seen['store_reads']} times"


def test_with_the_policys_checked_copy_the_first_event_imports_no_pydantic(emu: Any, configure: Any) -> None:
    """The settings are read without pydantic, and a current checked copy of the policy (shipped beside
    policy.yaml) spares the policy's validator: pydantic and PyYAML (about a third of a new instance's first
    event) stay off the path, and the event still reads, writes and proves."""
    from shared.core.policy_check import write_checked_copy

    write_checked_copy(os.environ["LABGUARD_POLICY_FILE"])
    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_requests()
    seen = _one_event_in_a_fresh_process(emu, body)
    assert len(patches(emu)) == 1
    validators = ("pydantic", "pydantic_core", "annotated_types", "yaml")
    assert [name for name in seen["modules"] if name.split(".")[0] in validators] == []


# What azure-identity brings, whichever credential is imported from it (its package imports them all).
AZURE_IDENTITY = ("azure.identity", "msal", "requests", "cryptography")


def test_with_the_hosts_managed_identity_the_first_event_loads_no_azure_identity(emu: Any, configure: Any) -> None:
    """In the Functions host (IDENTITY_ENDPOINT + IDENTITY_HEADER, no service principal configured) the token
    comes from the host's endpoint through shared.edge.identity: azure-identity, msal, requests and cryptography
    (~120 ms of a new instance's first event) stay off the path, and the event still reads, writes and proves."""
    from emulator.host_identity import MANAGED_IDENTITY_HEADER, MANAGED_IDENTITY_PATH

    body = plan_body("drifted")
    emu.put_plan(body)
    emu.clear_requests()
    host = {"IDENTITY_ENDPOINT": emu.endpoint + MANAGED_IDENTITY_PATH, "IDENTITY_HEADER": MANAGED_IDENTITY_HEADER}
    seen = _one_event_in_a_fresh_process(emu, body, host, drop=("AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"))
    assert len(patches(emu)) == 1
    token_requests = [r for r in emu.requests() if r["kind"] == "identity"]
    assert [r["path"] for r in token_requests] == [MANAGED_IDENTITY_PATH]  # one token, from the host's endpoint
    loaded = set(seen["modules"])
    assert not [name for name in AZURE_IDENTITY if name in loaded], sorted(n for n in loaded if n in AZURE_IDENTITY)
