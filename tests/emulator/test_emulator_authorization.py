"""The endpoint's Microsoft.Resources and Microsoft.Authorization answers that `labguard doctor` reads:
provider registration (and ARM's 409 where it is missing) and the caller's permissions."""

from __future__ import annotations

from typing import Any

import requests

from emulator.testing import Emulator

from .emu_support import PLAN_ID, RG, SUB, example

PROVIDER_PATH = f"/subscriptions/{SUB}/providers/Microsoft.LabServices"


def get(emu: Emulator, path: str, client_id: str = "doctor-tests", **params: str) -> tuple[int, Any]:
    response = requests.get(
        emu.endpoint + path,
        params=params,
        headers={"Authorization": f"Bearer {emu.token(client_id)}"},
        verify=emu.ca_file,
        timeout=10,
    )
    return response.status_code, response.json() if response.content else None


def test_registration_state_and_the_409_of_an_unregistered_subscription(emu: Emulator) -> None:
    emu.put_plan(example("LabPlans/getLabPlan.json")["responses"]["200"]["body"])
    status, provider = get(emu, PROVIDER_PATH, **{"api-version": "2021-04-01"})
    assert status == 200 and provider["registrationState"] == "Registered"
    emu.set_registered(SUB, False)
    assert get(emu, PROVIDER_PATH, **{"api-version": "2021-04-01"})[1]["registrationState"] == "NotRegistered"
    for path in (
        f"{PROVIDER_PATH}/labPlans",
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labPlans",
        PLAN_ID,
    ):
        status, body = get(emu, path, **{"api-version": "2023-06-07"})
        assert status == 409 and body["error"]["code"] == "MissingSubscriptionRegistration", path
        assert body["error"]["details"][0]["target"] == "Microsoft.LabServices"
    other = "11111111-2222-3333-4444-555555555555"
    assert (
        get(emu, f"/subscriptions/{other}/providers/Microsoft.LabServices/labPlans", **{"api-version": "2023-06-07"})[0]
        == 200
    )
    emu.reset()
    assert get(emu, f"{PROVIDER_PATH}/labPlans", **{"api-version": "2023-06-07"})[0] == 200


def test_permissions_default_to_contributor_and_can_be_set_per_caller(emu: Emulator) -> None:
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Authorization/permissions"
    status, body = get(emu, path, **{"api-version": "2022-04-01"})
    assert status == 200 and body["value"][0]["actions"] == ["*"]
    assert "Microsoft.Authorization/*/Write" in body["value"][0]["notActions"]
    reader = [{"actions": ["*/read"], "notActions": []}]
    emu.set_permissions(reader, client_id="auditor")
    assert get(emu, path, "auditor", **{"api-version": "2022-04-01"})[1]["value"] == [
        {"actions": ["*/read"], "notActions": [], "dataActions": [], "notDataActions": []}
    ]
    assert get(emu, path, **{"api-version": "2022-04-01"})[1]["value"][0]["actions"] == ["*"]  # others unchanged
    sub_scope = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/permissions"
    assert get(emu, sub_scope, "auditor", **{"api-version": "2022-04-01"})[1]["value"][0]["actions"] == ["*/read"]
    assert get(emu, sub_scope)[0] == 400  # no api-version: ARM's MissingApiVersionParameter
