"""What Azure resolves for us before labguard runs: provider registration, sampling, the SDK's HTTP log.

A subscription that never registered Microsoft.LabServices answers ARM's 409 MissingSubscriptionRegistration
to every lab plan request; it holds no plans, so a sweep says so and is not failed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.edge.tls import ssl_context
from shared.runtime.logs import SDK_HTTP_LOGGER
from shared.runtime.runs import build_runtime, load_settings, on_timer

from .conftest import OTHER_SUB, SUB, plan_body

ROOT = Path(__file__).resolve().parents[2]


async def test_the_endpoint_answers_arms_409_for_an_unregistered_subscription(emu: Any) -> None:
    emu.set_registered(OTHER_SUB, False)
    headers = {"Authorization": f"Bearer {emu.token()}"}
    base = f"{emu.endpoint}/subscriptions/{OTHER_SUB}/providers/Microsoft.LabServices"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu.ca_file))) as http:
        async with http.get(f"{base}/labPlans?api-version=2023-06-07", headers=headers) as response:
            assert response.status == 409
            error = (await response.json())["error"]
        async with http.get(f"{base}?api-version=2021-04-01", headers=headers) as response:
            provider = await response.json()
    assert error["code"] == "MissingSubscriptionRegistration"
    assert "not registered to use namespace 'Microsoft.LabServices'" in error["message"]
    assert error["details"] == [
        {"code": "MissingSubscriptionRegistration", "target": "Microsoft.LabServices", "message": error["message"]}
    ]
    assert provider["registrationState"] == "NotRegistered" and provider["namespace"] == "Microsoft.LabServices"


async def test_the_sweep_summary_counts_plans_once_and_unlisted_scopes_apart(
    emu: Any, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.runtime.runs import RunFailed

    exempt = plan_body("exempt-one")
    exempt["tags"] = {"labguard:exempt": "exam week"}
    emu.put_plan(exempt)
    emu.put_plan(plan_body("drifted-one"))
    emu.add_fault(method="GET", path_pattern=f"/subscriptions/{OTHER_SUB}/*", status=403, count=None)
    configure(LABGUARD_SUBSCRIPTIONS=f"{SUB},{OTHER_SUB}", LABGUARD_MODE="audit")
    caplog.set_level(logging.INFO, logger="labguard")
    with pytest.raises(RunFailed, match="1 scope"):  # a scope that cannot be listed still fails the run
        await on_timer(past_due=False)
    done = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep.summary"))
    summary = json.loads(done.split(" ", 1)[1])
    assert (summary["plans"], summary["exempt"], summary["skipped"], summary["failed"]) == (2, 1, 0, 0)
    assert summary["scopes_unlisted"] == [f"/subscriptions/{OTHER_SUB}"]


async def test_a_sweep_reports_an_unregistered_subscription_and_goes_on(
    emu: Any, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emu.put_plan(plan_body("drifted-one"))
    emu.set_registered(OTHER_SUB, False)
    configure(LABGUARD_SUBSCRIPTIONS=f"{SUB},{OTHER_SUB}", LABGUARD_MODE="audit")
    caplog.set_level(logging.INFO, logger="labguard")
    summary = await on_timer(past_due=False)  # raises RunFailed if anything counted as failed
    assert summary.not_registered == [f"/subscriptions/{OTHER_SUB}"]
    assert summary.failed == 0 and summary.list_errors == []
    assert summary.counts["drifted"] == 1  # the registered subscription was swept as usual
    records = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep.not-registered")]
    assert len(records) == 1 and "not registered, no plans here" in records[0] and OTHER_SUB in records[0]
    done = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep.summary"))
    assert json.loads(done.split(" ", 1)[1])["not_registered"] == [f"/subscriptions/{OTHER_SUB}"]
    # azure-mgmt-core would POST .../providers/Microsoft.LabServices/register and retry: labguard never does.
    unregistered = [r for r in emu.requests() if r["kind"] == "arm" and OTHER_SUB in r["path"]]
    assert [(r["method"], r["status"]) for r in unregistered] == [("GET", 409)]


async def test_other_409s_still_fail_the_listing(emu: Any, configure: Any) -> None:
    emu.add_fault(method="GET", path_pattern="/subscriptions/*/providers/Microsoft.LabServices/labPlans", status=409)
    runtime = await build_runtime(load_settings())
    try:
        summary = await runtime.reconciler.sweep([(SUB, None)])
    finally:
        await runtime.close()
    assert summary.not_registered == [] and summary.failed == 1


async def test_the_sdk_never_logs_each_http_request(emu: Any, configure: Any, caplog: pytest.LogCaptureFixture) -> None:
    emu.put_plan(plan_body("one"))
    logging.getLogger(SDK_HTTP_LOGGER).setLevel(logging.NOTSET)  # as a host that logs everything at INFO
    caplog.set_level(logging.INFO)  # root at INFO, as the Functions worker forwards it
    runtime = await build_runtime(load_settings())
    try:
        await runtime.reconciler.sweep([(SUB, None)])
    finally:
        await runtime.close()
    assert logging.getLogger(SDK_HTTP_LOGGER).level == logging.WARNING
    assert [r for r in caplog.records if r.name == SDK_HTTP_LOGGER] == []
    assert any(r.getMessage().startswith("sweep.summary") for r in caplog.records)


def test_host_json_never_samples_away_labguards_records_nor_logs_sdk_requests() -> None:
    logging_config = json.loads((ROOT / "host.json").read_text())["logging"]
    sampling = logging_config["applicationInsights"]["samplingSettings"]
    if sampling.get("isEnabled", True):
        excluded = {part.strip() for part in sampling.get("excludedTypes", "").split(";")}
        assert "Trace" in excluded  # labguard's records are traces: never sampled
    levels = logging_config["logLevel"]
    assert levels["Azure.Core"] == "Warning"
    assert levels[SDK_HTTP_LOGGER] == "Warning"


async def test_the_functions_refuse_an_unresolved_key_vault_reference_before_any_call(
    emu: Any, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.errors import SettingsError

    secret_uri = "https://kv-school.vault.azure.net/secrets/smtp-password/"
    configure(LABGUARD_SMTP_PASSWORD=f"@Microsoft.KeyVault(SecretUri={secret_uri})")
    caplog.set_level(logging.INFO, logger="labguard")
    # What the timer function runs (handlers/timer_sweep.py is this one call).
    with pytest.raises(
        SettingsError, match=r"^LABGUARD_SMTP_PASSWORD holds an unresolved Key Vault reference"
    ) as caught:
        await on_timer(past_due=False)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("settings.refused")]
    assert len(refused) == 1 and "LABGUARD_SMTP_PASSWORD" in refused[0] and "kv-school" not in refused[0]
    assert emu.requests() == []  # refused at start: not even a token request
