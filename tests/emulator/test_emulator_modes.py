"""The emulator as a process, with the async SDK, and at 50,000 plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.labservices import ManagedLabsClient
from azure.mgmt.labservices.aio import ManagedLabsClient as AsyncManagedLabsClient
from azure.mgmt.labservices.models import LabPlanUpdate, SupportInfo

from emulator.testing import start_emulator
from tests.emulator.emu_support import PLAN_ID, SUB, example, typed_safe

ROOT = Path(__file__).resolve().parents[2]


def _bulk(n: int, rgs: int = 50) -> dict[str, Any]:
    template = typed_safe(example("LabPlans/getLabPlan.json")["responses"]["200"]["body"])
    plans = []
    for i in range(n):
        body = dict(template)  # the emulator copies what it stores; sharing nested parts here is fine
        rg = f"rg-{i % rgs:03d}"
        body["id"] = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/plan-{i:06d}"
        body["name"] = f"plan-{i:06d}"
        plans.append(body)
    return {"labPlans": plans, "labs": []}


def test_process_prints_one_json_line_and_serves(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"labPlans": [example("LabPlans/getLabPlan.json")["responses"]["200"]["body"]]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--state", str(seed), "--latency-ms", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = json.loads(line)
        assert set(ready) == {"endpoint", "ca_file"}
        assert ready["endpoint"].startswith("https://127.0.0.1:")
        assert Path(ready["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        config = json.loads(
            subprocess.check_output(
                [
                    sys.executable,
                    "-c",
                    "import json,ssl,sys,urllib.request;"
                    "ctx=ssl.create_default_context(cafile=sys.argv[2]);"
                    "print(urllib.request.urlopen(sys.argv[1]+'/_emulator/config',context=ctx).read().decode())",
                    ready["endpoint"],
                    ready["ca_file"],
                ]
            )
        )
        cred = ClientSecretCredential(
            config["tenant_id"],
            "process-client",
            "secret",
            authority=config["authority"],
            connection_verify=ready["ca_file"],
            disable_instance_discovery=True,
        )
        client = ManagedLabsClient(
            cred, SUB, base_url=ready["endpoint"], api_version="2023-06-07", connection_verify=ready["ca_file"]
        )
        resp = client._send_request(
            __import__("azure.core.rest", fromlist=["HttpRequest"]).HttpRequest(
                "GET", PLAN_ID, params={"api-version": "2023-06-07"}
            )
        )
        assert resp.status_code == 200
        assert resp.json()["properties"]["defaultAutoShutdownProfile"]["disconnectDelay"] == "00:05"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stdout.read() == ""  # exactly one line on stdout
    assert not Path(ready["ca_file"]).exists()  # throwaway CA removed on SIGTERM


async def test_async_sdk_client_and_async_credential() -> None:
    with start_emulator(seed=_bulk(7, rgs=1), page_size=3, lro_delay_s=0.2) as emu:
        async with (
            emu.async_credential("async-client") as cred,
            AsyncManagedLabsClient(
                cred,
                SUB,
                base_url=emu.endpoint,
                api_version="2023-06-07",
                connection_verify=emu.ca_file,
                polling_interval=0,
            ) as client,
        ):
            names = [p.name async for p in client.lab_plans.list_by_resource_group("rg-000")]
            assert len(names) == 7
            poller = await client.lab_plans.begin_update(
                "rg-000", "plan-000003", LabPlanUpdate(support_info=SupportInfo(email="async@contoso.com"))
            )
            result = await poller.result()
            assert result.support_info.email == "async@contoso.com"
            assert result.provisioning_state == "Succeeded"
        assert {r["principal"] for r in emu.requests() if r["kind"] == "arm"} == {"async-client"}
        assert emu.events()[0]["data"]["claims"]["appid"] == "async-client"


@pytest.mark.timeout(300)
def test_holds_50000_plans_with_page_cost_independent_of_size() -> None:
    state = _bulk(50_000)
    with start_emulator(page_size=100) as emu:
        started = time.monotonic()
        assert emu.seed(state) == 50_000
        seed_s = time.monotonic() - started
        assert emu.plan_count() == 50_000
        with ManagedLabsClient(
            emu.credential(), SUB, base_url=emu.endpoint, api_version="2023-06-07", connection_verify=emu.ca_file
        ) as client:
            client.lab_plans.get("rg-007", "plan-000007")  # warm up: token + connection
            emu.clear_requests()
            assert client.lab_plans.get("RG-049", "PLAN-049999").name == "plan-049999"
            pager = client.lab_plans.list_by_subscription().by_page()
            first = list(next(pager))
            assert len(first) == 100
            in_rg = list(client.lab_plans.list_by_resource_group("rg-010"))
            assert len(in_rg) == 1_000
        server_ms = [r["duration_ms"] for r in emu.requests() if r["kind"] == "arm"]
        # Server-side cost of a get or a page of 100 stays small with 50k plans stored.
        assert max(server_ms) < 250, server_ms
        assert seed_s < 60
