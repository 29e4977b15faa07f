"""Fixtures for end-to-end tests of the Functions app over real HTTPS against the local endpoint.

The app runs exactly as the host would run it: settings come from the environment, credentials from
DefaultAzureCredential (its environment credential, pointed at the emulator's token endpoint), and
the functions are the ones ``app.get_functions()`` indexes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.testing import start_emulator
from shared.runtime import runs

FAST_RETRY = {"retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "labservices"  # ours: fixtures/labservices/README.md
SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
OTHER_SUB = "11111111-2222-3333-4444-555555555555"
LABGUARD_CLIENT = "labguard-app"
OWNER_CLIENT = "lab-owner"

POLICY = """
mode: audit
connection:
  webSshAccess: None
  webRdpAccess: Private
  clientSshAccess: Public
  clientRdpAccess: Public
autoShutdown:
  shutdownOnDisconnect: Enabled
  shutdownWhenNotConnected: Enabled
  minShutdownOnIdle: UserAbsence
  maxDisconnectDelay: PT15M
  maxNoConnectDelay: PT30M
  maxIdleDelay: PT30M
"""


def example_plan() -> dict[str, Any]:
    """The getLabPlan example body (delays written as 00:05 / 01:00)."""
    body = json.loads((EXAMPLES / "LabPlans" / "getLabPlan.json").read_text())["responses"]["200"]["body"]
    return copy.deepcopy(body)


def plan_body(name: str, *, rg: str = "testrg123", sub: str = SUB, **shutdown: str) -> dict[str, Any]:
    body = example_plan()
    body["id"] = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/{name}"
    body["name"] = name
    body["properties"]["defaultAutoShutdownProfile"].update(shutdown)
    return body


def compliant_plan(name: str, **kw: Any) -> dict[str, Any]:
    return plan_body(name, noConnectDelay="PT15M", idleDelay="PT15M", **kw)


@pytest.fixture
def emu(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The local endpoint; PATCH merges (RFC 7386) unless a test asks for both modes with
    ``@pytest.mark.parametrize("emu", PATCH_MODES, indirect=True)``."""
    with start_emulator(lro_delay_s=0.0, patch_mode=getattr(request, "param", "merge")) as emulator:
        yield emulator


@pytest.fixture
def configure(emu: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Point the app at the emulator, as an admin's app settings would; returns a function to change them."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    def apply(**settings: str) -> None:
        values = {
            "LABGUARD_ARM_ENDPOINT": emu.endpoint,
            "LABGUARD_ARM_AUDIENCE": "https://management.azure.com/",
            "LABGUARD_CA_BUNDLE": emu.ca_file,
            "LABGUARD_SUBSCRIPTIONS": SUB,
            "LABGUARD_RESOURCE_GROUPS": "",
            "LABGUARD_MODE": "enforce",
            "LABGUARD_POLICY_FILE": str(policy),
            "LABGUARD_CONCURRENCY": "8",
            # The plan tests count the plan calls exactly; the lab tests (test_labs_e2e.py) turn labs on.
            "LABGUARD_LABS": "off",
            "AZURE_TENANT_ID": emu.tenant_id,
            "AZURE_CLIENT_ID": LABGUARD_CLIENT,
            "AZURE_CLIENT_SECRET": "local-test-secret",
            "AZURE_AUTHORITY_HOST": emu.authority,
        }
        values.update(settings)
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    apply()
    # Retries keep azure-core's counts but not its backoff sleeps (0.8 s doubling): the tests see the same
    # requests, sooner. A Retry-After from the endpoint is still honoured.
    monkeypatch.setitem(runs.WORKER_ARM_OPTIONS, "retry", FAST_RETRY)
    return apply


@pytest.fixture(autouse=True)
async def _close_runtimes() -> AsyncIterator[None]:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()
