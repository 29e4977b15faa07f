"""Fixtures for the emulator's own tests: the example documents (ours, or the official ones on request),
SDK clients, raw requests and raw LROs."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.core.polling.arm_polling import ARMPolling
from azure.mgmt.labservices import ManagedLabsClient

from emulator.testing import Emulator, start_emulator

# Our own example documents (tests/fixtures/labservices/README.md); the official ones only on request.
OWN_EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "labservices"
SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
RG = "testrg123"
PLAN_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labPlans/testlabplan"
LAB_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labs/testlab"
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
DURATION_KEYS = {"disconnectDelay", "noConnectDelay", "idleDelay", "usageQuota"}


def example(rel: str, root: Path = OWN_EXAMPLES) -> dict[str, Any]:
    return json.loads((root / rel).read_text(encoding="utf-8"))


def official_examples() -> Path:
    """The official examples' folder from ``LABGUARD_REFERENCE_DIR`` (a copy of the spec's 2023-06-07 folder);
    skips the calling test when it is not set, fails when it is set but holds no examples."""
    where = os.environ.get("LABGUARD_REFERENCE_DIR", "").strip()
    if not where:
        pytest.skip("LABGUARD_REFERENCE_DIR is not set: the official examples run only against an external copy")
    examples = Path(where) / "examples"
    if not (examples / "LabPlans" / "getLabPlan.json").is_file():
        pytest.fail(f"LABGUARD_REFERENCE_DIR={where} holds no examples/LabPlans/getLabPlan.json", pytrace=False)
    return examples


def typed_safe(body: Any) -> Any:
    """The same body with ``HH:MM`` durations written as ISO 8601, which the SDK's typed models can parse
    (its models raise DeserializationError on ``00:05``; the service and the examples use both forms)."""
    if isinstance(body, dict):
        out = {}
        for k, v in body.items():
            m = _HHMM.match(v) if k in DURATION_KEYS and isinstance(v, str) else None
            if m:
                h, mi = int(m[1]), int(m[2])
                v = "PT" + (f"{h}H" if h else "") + (f"{mi}M" if mi or not h else "")
            out[k] = typed_safe(v)
        return out
    if isinstance(body, list):
        return [typed_safe(x) for x in body]
    return body


def without(body: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A deep copy of ``body`` minus the given slash paths (``systemData``, ``properties/x/y``)."""
    out = copy.deepcopy(body)
    for path in paths:
        *parents, leaf = path.split("/")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with start_emulator(page_size=3) as e:
        yield e


def make_client(emu: Emulator, api_version: str = "2023-06-07", **kwargs: Any) -> ManagedLabsClient:
    kwargs.setdefault("polling_interval", 0)
    return ManagedLabsClient(
        emu.credential("emulator-tests"),
        SUB,
        base_url=emu.endpoint,
        api_version=api_version,
        connection_verify=emu.ca_file,
        **kwargs,
    )


@pytest.fixture
def client(emu: Emulator) -> Iterator[ManagedLabsClient]:
    c = make_client(emu)
    yield c
    c.close()


def raw(
    client: ManagedLabsClient, method: str, path: str, body: Any = None, api_version: str = "2023-06-07"
) -> HttpResponse:
    """azure-core's documented raw route through the SDK's pipeline (auth, retries, TLS)."""
    params = {} if "api-version=" in path else {"api-version": api_version}
    request = HttpRequest(method, path, json=body, params=params)
    return client._send_request(request)


def raw_lro(
    client: ManagedLabsClient, method: str, path: str, body: Any, final_state_via: str, api_version: str = "2023-06-07"
) -> tuple[HttpResponse, LROPoller[Any]]:
    """Start a write through the SDK pipeline and poll it with azure-mgmt-core's own ARMPolling, keeping
    bodies as JSON (for example bodies the typed models cannot parse). Returns (initial response, poller)."""
    request = HttpRequest(method, path, json=body, params={"api-version": api_version})
    request.url = client._client.format_url(request.url)
    pipeline_response = client._client._pipeline.run(request)
    initial = pipeline_response.http_response
    initial.read()

    def output(resp: Any) -> Any:
        content = resp.http_response.text()
        return json.loads(content) if content else None

    poller = LROPoller(
        client._client, pipeline_response, output, ARMPolling(0, lro_options={"final-state-via": final_state_via})
    )
    return initial, poller


@pytest.fixture
def raw_get(client: ManagedLabsClient) -> Callable[[str], Any]:
    def get(path: str) -> Any:
        resp = raw(client, "GET", path)
        return resp.status_code, resp.json() if resp.content else None

    return get
