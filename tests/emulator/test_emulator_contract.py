"""ARM behaviour of the endpoint: auth, errors, api-versions, ids, PATCH, states, faults, throttling, events."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.eventgrid import EventGridEvent
from azure.mgmt.labservices.models import LabPlanUpdate, SupportInfo

from tests.emulator.emu_support import PLAN_ID, RG, SUB, example, make_client, raw, typed_safe


def _plan(name: str = "testlabplan", rg: str = RG, sub: str = SUB) -> dict[str, Any]:
    body = typed_safe(example("LabPlans/getLabPlan.json")["responses"]["200"]["body"])
    body["id"] = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/{name}"
    body["name"] = name
    return body


def _http(emu: Any, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any, Any]:
    """A plain HTTPS request (urllib + the emulator's CA bundle), outside the SDK."""
    ctx = ssl.create_default_context(cafile=emu.ca_file)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.endpoint + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx) as resp:
            raw_body = resp.read()
            return resp.status, json.loads(raw_body) if raw_body else None, resp.headers
    except urllib.error.HTTPError as err:
        raw_body = err.read()
        return err.code, json.loads(raw_body) if raw_body else None, err.headers


PLAN_PATH = PLAN_ID + "?api-version=2023-06-07"


# ---------------------------------------------------------------- security
def test_no_token_is_401_with_arm_error(emu: Any) -> None:
    emu.put_plan(_plan())
    status, body, headers = _http(emu, "GET", PLAN_PATH)
    assert status == 401
    assert body["error"]["code"] == "AuthenticationFailed"
    assert body["error"]["message"]
    assert headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-jwt", "InvalidAuthenticationToken"),
        (jwt.encode({"aud": "https://management.azure.com/", "oid": "x", "tid": "y", "exp": 2**31}, "k" * 32), None),
    ],
)
def test_forged_token_is_401(emu: Any, token: str, code: str | None) -> None:
    status, body, _ = _http(emu, "GET", PLAN_PATH, token=token)
    assert status == 401
    assert body["error"]["code"] == (code or "InvalidAuthenticationToken")


def test_token_for_another_audience_and_expired_token(emu: Any) -> None:
    status, body, _ = _http(emu, "GET", PLAN_PATH, token=emu.token(audience="https://storage.azure.com/"))
    assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationTokenAudience")
    expired = emu.server.issuer.issue("someone", lifetime_s=-10)
    status, body, _ = _http(emu, "GET", PLAN_PATH, token=expired)
    assert (status, body["error"]["code"]) == (401, "ExpiredAuthenticationToken")


def test_real_client_secret_flow_token_carries_identity(emu: Any) -> None:
    cred = emu.credential("labguard-app")
    token = cred.get_token("https://management.azure.com/.default").token
    _header, _payload, signature = token.split(".")
    assert signature
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["appid"] == "labguard-app"
    assert claims["oid"] == emu.principal_id("labguard-app")
    assert claims["tid"] == emu.tenant_id
    assert claims["aud"] == "https://management.azure.com/"
    assert claims["exp"] > time.time() + 3000
    assert emu.principal_id("labguard-app") != emu.principal_id("other-app")
    status, _, _ = _http(emu, "GET", PLAN_PATH, token=token)
    assert status == 404  # authenticated, resource just does not exist
    # The endpoint's own base URL is an accepted audience too (a private ARM's own audience).
    own = cred.get_token(f"{emu.endpoint}/.default").token
    assert jwt.decode(own, options={"verify_signature": False})["aud"] == emu.endpoint + "/"
    assert _http(emu, "GET", PLAN_PATH, token=own)[0] == 404


def test_https_only_with_throwaway_ca(emu: Any) -> None:
    assert emu.endpoint.startswith("https://127.0.0.1:")
    with pytest.raises(urllib.error.URLError):  # not trusted without the CA bundle
        urllib.request.urlopen(emu.endpoint + "/_emulator/health", context=ssl.create_default_context())


# ---------------------------------------------------------------- errors, versions, ids
def test_unknown_resource_is_404_resource_not_found(emu: Any, client: Any) -> None:
    resp = raw(client, "GET", PLAN_ID.replace("testlabplan", "nope"))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "ResourceNotFound"
    assert "nope" in resp.json()["error"]["message"]
    with pytest.raises(ResourceNotFoundError):
        client.lab_plans.get(RG, "nope")


@pytest.mark.parametrize(
    ("version", "code"),
    [
        ("2021-10-01-preview", "NoRegisteredProviderFound"),
        ("2019-01-01", "NoRegisteredProviderFound"),
        ("latest", "InvalidApiVersionParameter"),
        (None, "MissingApiVersionParameter"),
    ],
)
def test_unsupported_api_version_is_400(emu: Any, version: str | None, code: str) -> None:
    emu.put_plan(_plan())
    path = PLAN_ID + (f"?api-version={version}" if version else "")
    status, body, _ = _http(emu, "GET", path, token=emu.token())
    assert status == 400
    assert body["error"]["code"] == code


def test_ids_are_case_insensitive(emu: Any, client: Any) -> None:
    emu.put_plan(_plan("MixedCase"))
    path = f"/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/TESTRG123/providers/microsoft.labservices/labplans/mixedcase"
    resp = raw(client, "GET", path)
    assert resp.status_code == 200
    assert resp.json()["name"] == "MixedCase"
    assert emu.get_plan(path.lower())["name"] == "MixedCase"
    assert client.lab_plans.get("TestRG123", "MIXEDCASE").name == "MixedCase"
    assert [p.name for p in client.lab_plans.list_by_resource_group("TESTRG123")] == ["MixedCase"]


def test_2022_08_01_omits_resource_operation_error(emu: Any) -> None:
    emu.put_plan(_plan())
    error = {"action": "update", "code": "SubnetInUse", "message": "boom", "timestamp": "2024-01-01T00:00:00Z"}
    emu.fail_plan(PLAN_ID, error)
    new = raw(make_client(emu, "2023-06-07"), "GET", PLAN_ID).json()
    assert new["properties"]["provisioningState"] == "Failed"
    assert new["properties"]["resourceOperationError"] == error
    old = raw(make_client(emu, "2022-08-01"), "GET", PLAN_ID, api_version="2022-08-01").json()
    assert old["properties"]["provisioningState"] == "Failed"
    assert "resourceOperationError" not in old["properties"]
    typed = make_client(emu).lab_plans.get(RG, "testlabplan")
    assert typed.provisioning_state == "Failed"


# ---------------------------------------------------------------- writes
def test_put_ignores_read_only_and_stores_delays_as_written(emu: Any, client: Any) -> None:
    body = example("LabPlans/putLabPlan.json")["parameters"]["body"]
    body["properties"]["provisioningState"] = "Locked"
    body["properties"]["resourceOperationError"] = {"code": "x"}
    body["properties"]["defaultAutoShutdownProfile"]["idleDelay"] = "PT15M"
    resp = raw(client, "PUT", PLAN_ID, body)
    assert resp.status_code == 201
    props = emu.get_plan(PLAN_ID)["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert "resourceOperationError" not in props
    assert props["defaultAutoShutdownProfile"]["disconnectDelay"] == "00:05"
    assert props["defaultAutoShutdownProfile"]["idleDelay"] == "PT15M"
    assert raw(client, "PUT", PLAN_ID, {"properties": {}}).json()["error"]["code"] == "LocationRequired"


def test_patch_is_rfc7386_merge(emu: Any, client: Any) -> None:
    plan = _plan()
    plan["tags"] = {"keep": "1", "drop": "2"}
    emu.put_plan(plan)
    patch = {
        "tags": {"drop": None, "new": "3"},
        "properties": {
            "provisioningState": "Deleting",
            "defaultAutoShutdownProfile": {"idleDelay": "00:30", "shutdownOnIdle": None},
            "supportInfo": None,
        },
        "location": "eastus",
    }
    resp = raw(client, "PATCH", PLAN_ID, patch)
    assert resp.status_code == 202
    assert resp.json()["properties"]["provisioningState"] == "Updating"
    assert resp.headers["Retry-After"] == "0"  # lro_delay_s=0: due at once
    got = raw(client, "GET", PLAN_ID).json()
    assert got["tags"] == {"keep": "1", "new": "3"}
    shutdown = got["properties"]["defaultAutoShutdownProfile"]
    assert shutdown["idleDelay"] == "00:30"
    assert "shutdownOnIdle" not in shutdown
    assert shutdown["disconnectDelay"] == "PT5M"
    assert "supportInfo" not in got["properties"]
    assert got["properties"]["provisioningState"] == "Succeeded"
    assert got["location"] == plan["location"]  # the patch cannot move it
    assert raw(client, "PATCH", PLAN_ID.replace("testlabplan", "nope"), {}).status_code == 404


@pytest.mark.parametrize("state", ["Locked", "Creating", "Updating", "Deleting"])
def test_write_on_busy_plan_is_409(emu: Any, client: Any, state: str) -> None:
    emu.put_plan(_plan())
    emu.set_state(PLAN_ID, state)
    resp = raw(client, "PATCH", PLAN_ID, {"properties": {}})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] in {"ResourceLocked", "AnotherOperationInProgress"}
    with pytest.raises(ResourceExistsError):
        client.lab_plans.begin_update(RG, "testlabplan", LabPlanUpdate())
    assert emu.get_plan(PLAN_ID)["properties"]["provisioningState"] == state


def test_lro_shows_updating_until_delay_passes(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    emu.configure(lro_delay_s=1.0)
    poller = client.lab_plans.begin_update(RG, "testlabplan", LabPlanUpdate(support_info=SupportInfo(email="a@b.c")))
    assert emu.get_plan(PLAN_ID)["properties"]["provisioningState"] == "Updating"
    assert client.lab_plans.get(RG, "testlabplan").provisioning_state == "Updating"
    assert emu.events() == []
    result = poller.result(timeout=10)
    assert result.provisioning_state == "Succeeded"
    assert result.support_info.email == "a@b.c"
    assert emu.get_plan(PLAN_ID)["properties"]["provisioningState"] == "Succeeded"
    polled = [r for r in emu.requests() if "operationResults" in r["path"]]
    assert polled and all(r["status"] in (200, 202) for r in polled)


def test_failed_provisioning_on_next_write(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    error = {"code": "SubnetNotFound", "message": "The subnet was deleted."}
    emu.fail_plan(PLAN_ID, error, next_write=True)
    with pytest.raises(HttpResponseError):
        client.lab_plans.begin_update(
            RG, "testlabplan", LabPlanUpdate(support_info=SupportInfo(email="a@b.c"))
        ).result()
    props = emu.get_plan(PLAN_ID)["properties"]
    assert props["provisioningState"] == "Failed"
    assert props["resourceOperationError"]["code"] == "SubnetNotFound"
    assert props["resourceOperationError"]["action"] == "update"
    assert props["resourceOperationError"]["timestamp"]
    assert [e["eventType"] for e in emu.events()] == ["Microsoft.Resources.ResourceWriteFailure"]
    # The next write succeeds and clears the error.
    client.lab_plans.begin_update(RG, "testlabplan", LabPlanUpdate(support_info=SupportInfo(email="x@b.c"))).result()
    props = emu.get_plan(PLAN_ID)["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert "resourceOperationError" not in props


# ---------------------------------------------------------------- faults
def test_429_with_retry_after_is_retried_by_azure_core(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    emu.add_fault(method="GET", path_pattern=r"/labPlans/testlabplan$", status=429, retry_after=1, count=1)
    started = time.monotonic()
    assert client.lab_plans.get(RG, "testlabplan").name == "testlabplan"
    assert time.monotonic() - started >= 0.9  # honoured Retry-After
    statuses = [r["status"] for r in emu.requests() if r["kind"] == "arm"]
    assert statuses == [429, 200]


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_faults_are_retried(emu: Any, client: Any, status: int) -> None:
    emu.put_plan(_plan())
    emu.add_fault(method="PATCH", path_pattern="/subscriptions/*/labPlans/*", status=status, retry_after=0, count=1)
    client.lab_plans.begin_update(RG, "testlabplan", LabPlanUpdate(support_info=SupportInfo(email="a@b.c"))).result()
    assert [r["status"] for r in emu.requests() if r["method"] == "PATCH"] == [status, 202]


def test_connection_reset_fault_is_retried(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    emu.add_fault(method="GET", path_pattern="labPlans/testlabplan", reset=True, count=1)
    assert client.lab_plans.get(RG, "testlabplan").name == "testlabplan"
    assert [r["status"] for r in emu.requests() if r["kind"] == "arm"] == [None, 200]


def test_fault_latency_and_count(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    emu.add_fault(method="GET", path_pattern="labplans", latency_ms=300, count=2)
    durations = []
    for _ in range(3):
        client.lab_plans.get(RG, "testlabplan")
    durations = [r["duration_ms"] for r in emu.requests() if r["kind"] == "arm"]
    assert durations[0] >= 300 and durations[1] >= 300 and durations[2] < 300


async def test_throttling_token_bucket_per_subscription(emu: Any) -> None:
    import aiohttp

    emu.configure(throttle=True)
    headers = {"Authorization": f"Bearer {emu.token()}"}
    url = f"{emu.endpoint}/subscriptions/{SUB}/providers/Microsoft.LabServices/labPlans?api-version=2023-06-07"
    ctx = ssl.create_default_context(cafile=emu.ca_file)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=32)) as session:

        async def get(u: str) -> tuple[int, Any, Any]:
            async with session.get(u, headers=headers) as resp:
                return resp.status, await resp.json(), resp.headers

        results = await asyncio.gather(*(get(url) for _ in range(300)))
        statuses = [r[0] for r in results]
        assert 250 <= statuses.count(200) < 300  # burst 250 plus what refilled at 25/s meanwhile
        throttled = [r for r in results if r[0] == 429]
        assert throttled
        _status, body, resp_headers = throttled[0]
        assert body["error"]["code"] == "TooManyRequests"
        assert int(resp_headers["Retry-After"]) >= 1
        ok = next(r for r in results if r[0] == 200)
        assert int(ok[2]["x-ms-ratelimit-remaining-subscription-reads"]) < 250
        other = url.replace(SUB, SUB[:-1] + "0")
        assert (await get(other))[0] == 200  # another subscription has its own bucket


# ---------------------------------------------------------------- events and request log
def test_events_one_per_write_in_event_grid_schema(emu: Any) -> None:
    client = make_client(emu)
    raw(client, "PUT", PLAN_ID, typed_safe(example("LabPlans/putLabPlan.json")["parameters"]["body"]))
    client.lab_plans.begin_update(RG, "testlabplan", LabPlanUpdate(support_info=SupportInfo(email="a@b.c"))).result()
    client.lab_plans.get(RG, "testlabplan")
    client.lab_plans.begin_delete(RG, "testlabplan").result()
    events = emu.events()
    assert [e["eventType"] for e in events] == [
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Resources.ResourceDeleteSuccess",
    ]
    assert [e["data"]["operationName"] for e in events] == [
        "Microsoft.LabServices/labPlans/write",
        "Microsoft.LabServices/labPlans/write",
        "Microsoft.LabServices/labPlans/delete",
    ]
    oid = emu.principal_id("emulator-tests")
    for e in events:
        parsed = EventGridEvent.from_dict(e)
        assert parsed.subject == PLAN_ID
        assert parsed.topic == f"/subscriptions/{SUB}"
        assert e["dataVersion"] and e["id"] and e["eventTime"].endswith("Z")
        data = e["data"]
        assert data["resourceUri"] == PLAN_ID
        assert data["resourceProvider"] == "Microsoft.LabServices"
        assert data["status"] == "Succeeded"
        assert data["subscriptionId"] == SUB
        assert data["tenantId"] == emu.tenant_id
        assert data["correlationId"]
        assert data["authorization"]["scope"] == PLAN_ID
        assert data["authorization"]["evidence"]["principalId"] == oid
        assert data["claims"]["appid"] == "emulator-tests"
        assert data["claims"]["http://schemas.microsoft.com/identity/claims/objectidentifier"] == oid
        assert all(isinstance(v, str) for v in data["claims"].values())
    emu.clear_events()
    assert emu.events() == []


def test_a_persons_write_names_them_in_system_data_and_in_the_event_claims(emu: Any) -> None:
    """A delegated token (as `az login` gets one): systemData says User and the UPN, the event carries the UPN,
    name and scope under ARM's long claim names, and the role assignment's principal type is User."""
    import requests

    emu.put_plan(_plan())
    emu.clear_events()
    token = emu.user_token("ada@school.example", "Ada Lovelace")
    answer = requests.patch(
        f"{emu.endpoint}{PLAN_ID}?api-version=2023-06-07",
        json={"properties": {"supportInfo": {"email": "a@b.example"}}},
        headers={"Authorization": f"Bearer {token}"},
        verify=emu.ca_file,
        timeout=10,
    )
    assert answer.status_code in (200, 202)
    system = emu.get_plan(PLAN_ID)["systemData"]
    assert (system["lastModifiedBy"], system["lastModifiedByType"]) == ("ada@school.example", "User")
    [event] = [e for e in emu.events() if e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"]
    claims = event["data"]["claims"]
    assert claims["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"] == "ada@school.example"
    assert claims["name"] == "Ada Lovelace" and claims["idtyp"] == "user"
    assert claims["http://schemas.microsoft.com/identity/claims/scope"] == "user_impersonation"
    oid = emu.user_principal_id("ada@school.example")
    assert claims["http://schemas.microsoft.com/identity/claims/objectidentifier"] == oid != emu.principal_id("ada")
    assert event["data"]["authorization"]["evidence"]["principalType"] == "User"
    # an app's write stays an Application's, with no UPN in its event
    emu.clear_events()
    app = requests.patch(
        f"{emu.endpoint}{PLAN_ID}?api-version=2023-06-07",
        json={"properties": {"supportInfo": {"email": "c@d.example"}}},
        headers={"Authorization": f"Bearer {emu.token('deploy-pipeline')}"},
        verify=emu.ca_file,
        timeout=10,
    )
    assert app.status_code in (200, 202)
    assert emu.get_plan(PLAN_ID)["systemData"]["lastModifiedByType"] == "Application"
    [event] = [e for e in emu.events() if e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"]
    assert "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn" not in event["data"]["claims"]
    assert event["data"]["authorization"]["evidence"]["principalType"] == "ServicePrincipal"


def test_request_log_records_principal_and_clears(emu: Any, client: Any) -> None:
    emu.put_plan(_plan())
    client.lab_plans.get(RG, "testlabplan")
    log = [r for r in emu.requests() if r["kind"] == "arm"]
    assert len(log) == 1
    entry = log[0]
    assert entry["method"] == "GET"
    assert entry["path"] == PLAN_ID
    assert entry["query"] == {"api-version": "2023-06-07"}
    assert entry["status"] == 200
    assert entry["principal"] == "emulator-tests"
    assert entry["body"] is None
    assert entry["duration_ms"] >= 0
    emu.clear_requests()
    assert emu.requests() == []


def test_latency_is_concurrent_not_serialized(emu: Any) -> None:
    import concurrent.futures

    emu.put_plan(_plan())
    emu.configure(latency_ms=300)
    token = emu.token()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _http(emu, "GET", PLAN_PATH, token=token)[0], range(8)))
    assert statuses == [200] * 8
    assert time.monotonic() - started < 1.5  # 8 x 300 ms would be 2.4 s if serialized


# ---------------------------------------------------------------- control surface over HTTP
def test_control_surface_over_http(emu: Any) -> None:
    plan = _plan()
    status, body, _ = _http(emu, "POST", "/_emulator/seed", body={"labPlans": [plan], "labs": []})
    assert (status, body) == (200, {"seeded": 1})
    status, body, _ = _http(
        emu, "POST", "/_emulator/faults", body={"method": "GET", "path_pattern": "x", "status": 503}
    )
    assert status == 201 and body["status"] == 503
    assert len(_http(emu, "GET", "/_emulator/faults")[1]["value"]) == 1
    assert _http(emu, "DELETE", "/_emulator/faults")[0] == 204
    _http(emu, "POST", "/_emulator/state", body={"id": PLAN_ID, "provisioningState": "Locked"})
    assert emu.get_plan(PLAN_ID)["properties"]["provisioningState"] == "Locked"
    error = {"code": "E", "message": "m"}
    _http(emu, "POST", "/_emulator/fail", body={"id": PLAN_ID, "error": error})
    assert emu.get_plan(PLAN_ID)["properties"]["resourceOperationError"]["code"] == "E"
    token = _http(emu, "POST", "/_emulator/token", body={"client_id": "curl"})[1]["access_token"]
    assert _http(emu, "GET", PLAN_PATH, token=token)[0] == 200
    log = _http(emu, "GET", "/_emulator/requests")[1]["value"]
    assert [(r["method"], r["status"], r["principal"]) for r in log] == [("GET", 200, "curl")]
    assert not any(r["path"].startswith("/_emulator") for r in log)
    assert _http(emu, "DELETE", "/_emulator/requests")[0] == 204
    assert _http(emu, "GET", "/_emulator/requests")[1]["value"] == []
    assert _http(emu, "GET", "/_emulator/events")[1] == {"value": []}
    cfg = _http(emu, "POST", "/_emulator/config", body={"page_size": 7})[1]
    assert cfg["page_size"] == 7 and cfg["endpoint"] == emu.endpoint
