"""Every labPlans and labs example round-trips through the endpoint with the real SDK: our own example
documents always (tests/fixtures/labservices), the official ones too when LABGUARD_REFERENCE_DIR names a copy.

Bodies with ``00:05``-style durations go through azure-core's raw route (``client._send_request``) and
azure-mgmt-core's own ARMPolling, because the SDK's typed models cannot deserialize them; the same
examples with ISO durations also go through the typed operations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.labservices.models import Lab, LabPlan, LabPlanUpdate, LabUpdate

from tests.emulator.emu_support import (
    LAB_ID,
    OWN_EXAMPLES,
    PLAN_ID,
    RG,
    SUB,
    make_client,
    official_examples,
    raw,
    raw_lro,
    typed_safe,
    without,
)
from tests.emulator.emu_support import example as emu_support_example

KINDS = {
    "labPlans": {"dir": "LabPlans", "get": "getLabPlan", "put": "putLabPlan", "patch": "patchLabPlan", "id": PLAN_ID},
    "labs": {"dir": "Labs", "get": "getLab", "put": "putLab", "patch": "patchLab", "id": LAB_ID},
}
LIST_EXAMPLES = {
    ("labPlans", "subscription"): "LabPlans/listLabPlans.json",
    ("labPlans", "resourceGroup"): "LabPlans/listResourceGroupLabPlans.json",
    ("labs", "subscription"): "Labs/listLabs.json",
    ("labs", "resourceGroup"): "Labs/listResourceGroupLabs.json",
}
# Fields the service generates, so a round trip cannot reproduce the example's literal value:
# systemData (caller and clock), a lab's registrationCode (random per lab) and, for putLab, the
# sku capacity the example shows but its request never sent. The labs examples also name the lab
# "testlabplan" although its id ends in /labs/testlab; the endpoint names a PUT resource after its URL.
SERVER_OWNED = ("systemData",)
LAB_PUT_SERVER_OWNED = (
    "systemData",
    "name",
    "properties/securityProfile/registrationCode",
    "properties/virtualMachineProfile/sku/capacity",
)


Example = Callable[[str], dict[str, Any]]


@pytest.fixture(params=["ours", "official"])
def example(request: pytest.FixtureRequest) -> Example:
    """Loads one example document by relative path, from our fixtures or the official copy."""
    root = OWN_EXAMPLES if request.param == "ours" else official_examples()
    return partial(emu_support_example, root=root)


def _resp(example: Example, rel: str, code: str) -> dict[str, Any]:
    return copy.deepcopy(example(rel)["responses"][code]["body"])


def _seed(emu: Any, kind: str, body: dict[str, Any]) -> None:
    (emu.put_plan if kind == "labPlans" else emu.put_lab)(body)


def _filler(kind: str, rg: str, i: int, template: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(template)
    body["id"] = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.LabServices/{kind}/filler-{i:02d}"
    body["name"] = f"filler-{i:02d}"
    return body


@pytest.mark.parametrize("api_version", ["2023-06-07", "2022-08-01"])
@pytest.mark.parametrize("kind", ["labPlans", "labs"])
def test_get_example_verbatim(example: Example, emu: Any, kind: str, api_version: str) -> None:
    k = KINDS[kind]
    ex = example(f"{k['dir']}/{k['get']}.json")
    body = ex["responses"]["200"]["body"]
    _seed(emu, kind, body)
    client = make_client(emu, api_version)
    resp = raw(client, "GET", k["id"], api_version=api_version)
    assert resp.status_code == 200
    assert resp.json() == body  # as written, including 00:05 delays
    assert resp.headers["x-ms-request-id"]


@pytest.mark.parametrize("kind", ["labPlans", "labs"])
def test_get_example_typed(example: Example, emu: Any, kind: str) -> None:
    k = KINDS[kind]
    body = typed_safe(_resp(example, f"{k['dir']}/{k['get']}.json", "200"))
    _seed(emu, kind, body)
    client = make_client(emu)
    got = client.lab_plans.get(RG, "testlabplan") if kind == "labPlans" else client.labs.get(RG, "testlab")
    model = LabPlan if kind == "labPlans" else Lab
    assert got.as_dict() == model.from_dict(body).as_dict()


@pytest.mark.parametrize(("kind", "scope"), list(LIST_EXAMPLES))
def test_list_example_across_pages(example: Example, emu: Any, kind: str, scope: str) -> None:
    ex = example(LIST_EXAMPLES[(kind, scope)])
    item = ex["responses"]["200"]["body"]["value"][0]
    _seed(emu, kind, item)
    template = typed_safe(item)
    for i in range(7):  # same resource group: 8 in RG over pages of 3
        _seed(emu, kind, _filler(kind, RG, i, template))
    for i in range(7, 11):  # another resource group: only in the subscription listing
        _seed(emu, kind, _filler(kind, "otherrg", i, template))
    expected = 12 if scope == "subscription" else 8

    client = make_client(emu)
    base = f"/subscriptions/{SUB}" + (f"/resourceGroups/{RG}" if scope == "resourceGroup" else "")
    # Raw pages: the example item comes back verbatim; nextLink is absolute https with a skip token.
    seen: list[dict[str, Any]] = []
    url = f"{base}/providers/Microsoft.LabServices/{kind}"
    pages = 0
    while url:
        resp = raw(client, "GET", url)
        assert resp.status_code == 200
        page = resp.json()
        assert set(page) == {"value", "nextLink"}
        seen.extend(page["value"])
        pages += 1
        url = page["nextLink"]
        if url:
            assert url.startswith(emu.endpoint + "/") and "$skipToken=" in url
    assert pages == 4 if scope == "subscription" else pages == 3
    assert len(seen) == expected == len({s["id"] for s in seen})
    assert item in seen

    # Typed pager with the example's ISO-duration items: same ids, followed across pages by the SDK.
    emu.put_plan(typed_safe(item)) if kind == "labPlans" else emu.put_lab(typed_safe(item))
    ops = client.lab_plans if kind == "labPlans" else client.labs
    pager = ops.list_by_subscription() if scope == "subscription" else ops.list_by_resource_group(RG)
    ids = [x.id for x in pager]
    assert sorted(ids) == sorted(s["id"] for s in seen)
    listed = [r for r in emu.requests() if r["method"] == "GET" and r["path"].endswith(kind)]
    assert sum("$skipToken" in r["query"] for r in listed) >= 2


@pytest.mark.parametrize("kind", ["labPlans", "labs"])
def test_put_example_create_and_replace(example: Example, emu: Any, kind: str) -> None:
    k = KINDS[kind]
    ex = example(f"{k['dir']}/{k['put']}.json")
    request_body = ex["parameters"]["body"]
    ignore = SERVER_OWNED if kind == "labPlans" else LAB_PUT_SERVER_OWNED
    emu.configure(lro_delay_s=0.3)
    client = make_client(emu)

    initial, poller = raw_lro(client, "PUT", k["id"], request_body, "original-uri")
    assert initial.status_code == 201
    assert without(initial.json(), *ignore) == without(_resp(example, f"{k['dir']}/{k['put']}.json", "201"), *ignore)
    assert "/operationResults/" in initial.headers["Azure-AsyncOperation"]
    assert "/operationResults/" in initial.headers["Location"]
    assert initial.headers["Azure-AsyncOperation"].startswith(emu.endpoint)
    final = poller.result(timeout=10)
    assert poller.status() == "Succeeded"
    assert without(final, *ignore) == without(_resp(example, f"{k['dir']}/{k['put']}.json", "200"), *ignore)
    assert final["systemData"]["createdBy"] == "emulator-tests"

    again, poller = raw_lro(client, "PUT", k["id"], request_body, "original-uri")
    assert again.status_code == 202
    assert without(again.json(), *ignore) == without(_resp(example, f"{k['dir']}/{k['put']}.json", "202"), *ignore)
    poller.result(timeout=10)
    if kind == "labs":  # the service keeps a lab's registration code across a replace
        assert (
            again.json()["properties"]["securityProfile"]["registrationCode"]
            == (final["properties"]["securityProfile"]["registrationCode"])
        )


@pytest.mark.parametrize("kind", ["labPlans", "labs"])
def test_patch_example_to_completion(example: Example, emu: Any, kind: str) -> None:
    k = KINDS[kind]
    rel = f"{k['dir']}/{k['patch']}.json"
    ex = example(rel)
    # State before the PATCH: the example's 200 for the plan (the patch sets what it already has), the
    # getLab example for the lab (the patch turns openAccess on).
    before = _resp(example, rel, "200") if kind == "labPlans" else _resp(example, "Labs/getLab.json", "200")
    _seed(emu, kind, before)
    emu.configure(lro_delay_s=0.3)
    client = make_client(emu)
    initial, poller = raw_lro(client, "PATCH", k["id"], ex["parameters"]["body"], "location")
    assert initial.status_code == 202
    assert without(initial.json(), *SERVER_OWNED) == without(_resp(example, rel, "202"), *SERVER_OWNED)
    assert emu.get_resource(k["id"])["properties"]["provisioningState"] == "Updating"
    final = poller.result(timeout=10)
    expected = _resp(example, rel, "202")
    expected["properties"]["provisioningState"] = "Succeeded"
    assert without(final, *SERVER_OWNED) == without(expected, *SERVER_OWNED)
    if kind == "labPlans":
        assert without(final, *SERVER_OWNED) == without(_resp(example, rel, "200"), *SERVER_OWNED)


def test_operation_result_matches_example_shape(example: Example, emu: Any) -> None:
    ex = example("OperationResults/getOperationResult.json")["responses"]["200"]["body"]
    emu.put_plan(_resp(example, "LabPlans/getLabPlan.json", "200"))
    emu.configure(lro_delay_s=5)
    client = make_client(emu)
    initial = raw(client, "PATCH", PLAN_ID, {"properties": {"supportInfo": {"email": "x@contoso.com"}}})
    assert initial.status_code == 202
    status = raw(client, "GET", initial.headers["Azure-AsyncOperation"])
    body = status.json()
    assert set(body) == set(ex)
    assert body["status"] == "InProgress"
    assert body["id"] == f"/subscriptions/{SUB}/providers/Microsoft.LabServices/operationresults/{body['name']}"
    assert int(status.headers["Retry-After"]) >= 1
    location = raw(client, "GET", initial.headers["Location"])
    assert location.status_code == 202  # ARM's Location monitor: 202 until done


@pytest.mark.parametrize("lro_delay_s", [0.0, 0.3])
@pytest.mark.parametrize("api_version", ["2023-06-07", "2022-08-01"])
def test_typed_plan_lifecycle(example: Example, emu: Any, lro_delay_s: float, api_version: str) -> None:
    body = typed_safe(example("LabPlans/putLabPlan.json")["parameters"]["body"])
    emu.configure(lro_delay_s=lro_delay_s)
    client = make_client(emu, api_version)
    created = client.lab_plans.begin_create_or_update(RG, "testlabplan", LabPlan.from_dict(body)).result()
    assert created.provisioning_state == "Succeeded"
    assert created.default_auto_shutdown_profile.disconnect_delay.total_seconds() == 300

    patch = typed_safe(example("LabPlans/patchLabPlan.json")["parameters"]["body"])
    update = LabPlanUpdate.from_dict(patch)
    update.support_info = LabPlan.from_dict(body).support_info
    update.support_info.email = "new@contoso.com"
    updated = client.lab_plans.begin_update(RG, "testlabplan", update).result()
    assert updated.support_info.email == "new@contoso.com"
    assert updated.support_info.phone == body["properties"]["supportInfo"]["phone"]  # merge, not replace
    assert updated.provisioning_state == "Succeeded"
    assert client.lab_plans.get(RG, "testlabplan").support_info.email == "new@contoso.com"

    client.lab_plans.begin_delete(RG, "testlabplan").result()
    with pytest.raises(ResourceNotFoundError):
        client.lab_plans.get(RG, "testlabplan")
    assert raw(client, "DELETE", PLAN_ID).status_code == 204


@pytest.mark.parametrize("lro_delay_s", [0.0, 0.3])
def test_typed_lab_lifecycle(example: Example, emu: Any, lro_delay_s: float) -> None:
    body = typed_safe(example("Labs/putLab.json")["parameters"]["body"])
    emu.configure(lro_delay_s=lro_delay_s)
    client = make_client(emu)
    created = client.labs.begin_create_or_update(RG, "testlab", Lab.from_dict(body)).result()
    assert created.provisioning_state == "Succeeded"
    assert created.virtual_machine_profile.os_type == "Windows"
    assert created.security_profile.registration_code
    assert created.state == "Draft"

    update = LabUpdate.from_dict(example("Labs/patchLab.json")["parameters"]["body"])
    updated = client.labs.begin_update(RG, "testlab", update).result()
    assert updated.security_profile.open_access == "Enabled"
    assert updated.title == body["properties"]["title"]

    client.labs.begin_delete(RG, "testlab").result()
    with pytest.raises(ResourceNotFoundError):
        client.labs.get(RG, "testlab")
