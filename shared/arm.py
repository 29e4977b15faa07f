"""The one adapter between labguard and Azure Resource Manager for lab plans.

Why raw JSON through the SDK client's own pipeline (``client._send_request``, azure-core's documented
route) instead of the typed operations: the SDK's models drop ``resourceOperationError`` and raise
DeserializationError on ``00:05``-style delays, which the official examples use. The pipeline still
does authentication, ARM's policies and azure-core's retries (429 with Retry-After, 5xx on reads).

Why the async client: a sweep reads and patches thousands of plans whose cost is ARM's round trip,
not CPU; asyncio with a bounded number of requests in flight gives that concurrency on one thread,
and the Functions Python worker runs ``async def`` functions natively.

Everything SDK-shaped stops here: callers get :class:`shared.lab_plans.LabPlan` and plain errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from shared.lab_plans import PROVIDER, LabPlan, PlanId
from shared.logs import quiet_sdk_http_logging
from shared.pacing import Pacer, request_kind, subscription_of
from shared.settings import Settings
from shared.tls import ssl_context

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest, PipelineResponse

API_VERSION = "2023-06-07"

# The RBAC actions the adapter performs: reading plans (get, list) and updating them (PATCH), plus
# reading the long-running operation's status that a PATCH returns. The infra tests check that the
# custom role grants exactly these.
ARM_ACTIONS = frozenset(
    {
        "Microsoft.LabServices/labPlans/read",
        "Microsoft.LabServices/labPlans/write",
        "Microsoft.LabServices/locations/operationResults/read",
    }
)

TERMINAL_OPERATION_STATES = frozenset({"succeeded", "failed", "canceled"})

log = logging.getLogger("labguard.arm")


class ArmError(Exception):
    """ARM answered with an error labguard cannot act on. ``transient`` errors are worth retrying later."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class PlanGone(ArmError):
    """The plan no longer exists (404): nothing to enforce, nothing to retry."""

    def __init__(self, plan_id: PlanId) -> None:
        super().__init__(f"lab plan {plan_id} not found", status=404, code="ResourceNotFound", transient=False)


class ProviderNotRegistered(ArmError):
    """The subscription has not registered Microsoft.LabServices (409 MissingSubscriptionRegistration).

    Not an error for labguard: such a subscription holds no lab plans, so a sweep says so and goes on.
    """

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"{scope}: {PROVIDER} is not registered in this subscription, so it holds no lab plans",
            status=409,
            code="MissingSubscriptionRegistration",
            transient=False,
        )
        self.scope = scope


class OperationTimeout(ArmError):
    """ARM accepted the PATCH but its operation did not finish in time; never polled forever."""


@dataclass(frozen=True)
class BadPlan:
    """A plan in a list whose JSON could not be mapped (kept so a sweep reports it instead of crashing)."""

    id: str
    reason: str


@dataclass(frozen=True)
class ArmReply:
    """One raw ARM answer, for probes that must see the status and headers (``labguard doctor``)."""

    status: int
    headers: Mapping[str, str]
    body: dict[str, Any]


class CallCounter:
    """Counts the HTTP requests labguard sends to ARM, by kind, retries included (an azure-core policy)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.throttled = 0

    def on_request(self, request: PipelineRequest[Any]) -> None:
        http = request.http_request
        path = urlsplit(http.url).path.lower()
        if "/operationresults/" in path or "/operationstatuses/" in path:
            kind = "poll"
        elif http.method == "GET":
            kind = "get" if "/labplans/" in path else "list"
        else:
            kind = http.method.lower()
        self.by_kind[kind] += 1

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        if response.http_response.status_code == 429:
            self.throttled += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def _counting_policy(counter: CallCounter) -> Any:
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _Counting(SansIOHTTPPolicy[Any, Any]):
        def on_request(self, request: PipelineRequest[Any]) -> None:
            counter.on_request(request)

        def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
            counter.on_response(request, response)

    return _Counting()


def _pacing_policy(pacer: Pacer) -> Any:
    """Waits for the subscription's ARM budget before each attempt (retries included) and reads ARM's answer."""
    from azure.core.pipeline.policies import AsyncHTTPPolicy

    class _Pacing(AsyncHTTPPolicy[Any, Any]):
        async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
            http = request.http_request
            subscription = subscription_of(http.url)
            if subscription is None:  # tenant-level request: not a subscription budget
                return await self.next.send(request)
            ticket = await pacer.acquire(subscription, request_kind(http.method))
            response = await self.next.send(request)
            pacer.observe(ticket, response.http_response.status_code, response.http_response.headers)
            return response

    return _Pacing()


class LabPlansArm:
    """Reads and patches lab plans. The SDK client is passed in (no module-level singleton)."""

    def __init__(
        self,
        client: Any,
        *,
        arm_endpoint: str,
        counter: CallCounter | None = None,
        operation_timeout_s: float = 300.0,
        poll_interval_s: float = 5.0,
    ) -> None:
        self._client = client
        self._host = urlsplit(arm_endpoint).netloc.lower()
        self.counter = counter or CallCounter()
        self._operation_timeout_s = operation_timeout_s
        self._poll_interval_s = poll_interval_s

    async def get_plan(self, plan_id: PlanId) -> LabPlan:
        """Fresh read of one plan. Raises PlanGone on 404, ArmError otherwise."""
        body = await self._json("GET", _plan_url(plan_id), plan_id=plan_id)
        try:
            return LabPlan.from_arm(body)
        except ValueError as exc:
            raise ArmError(f"GET {plan_id}: ARM answered with an unreadable lab plan ({exc})", transient=False) from exc

    async def list_plans(
        self, subscription_id: str, resource_group: str | None = None
    ) -> AsyncIterator[LabPlan | BadPlan]:
        """Every plan in a subscription (or one resource group), following ``nextLink`` page by page."""
        base = f"/subscriptions/{quote(subscription_id)}"
        if resource_group:
            base += f"/resourceGroups/{quote(resource_group)}"
        url: str | None = f"{base}/providers/{PROVIDER}/labPlans?api-version={API_VERSION}"
        while url:
            try:
                page = await self._json("GET", url)
            except ArmError as exc:
                if exc.status == 409 and exc.code == "MissingSubscriptionRegistration":
                    raise ProviderNotRegistered(base) from None
                raise
            items = page.get("value") or []
            if not isinstance(items, list):
                raise ArmError(f"listing {base}: the page has no 'value' list", transient=True)
            for item in items:
                if not isinstance(item, Mapping):
                    yield BadPlan(id="?", reason="list item is not an object")
                    continue
                try:
                    yield LabPlan.from_arm(item)
                except ValueError as exc:
                    yield BadPlan(id=str(item.get("id", "?")), reason=str(exc))
            next_link = page.get("nextLink")
            url = self._checked_url(next_link) if isinstance(next_link, str) and next_link else None

    async def patch_plan(self, plan_id: PlanId, patch: Mapping[str, Any]) -> None:
        """Send one merge-patch (all drifted fields at once, so never half-applied) and wait, bounded, for it."""
        from azure.core.rest import HttpRequest

        response = await self._send(HttpRequest("PATCH", _plan_url(plan_id), json=dict(patch)))
        status = response.status_code
        if status == 404:
            raise PlanGone(plan_id)
        if status not in (200, 201, 202):
            raise _error_from(response, f"PATCH {plan_id}")
        if status == 202:
            poll_url = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
            if poll_url:
                await self._wait_for_operation(plan_id, self._checked_url(poll_url), response.headers)

    async def _wait_for_operation(self, plan_id: PlanId, url: str, headers: Mapping[str, str]) -> None:
        from azure.core.rest import HttpRequest

        deadline = time.monotonic() + self._operation_timeout_s
        delay = _retry_after(headers, self._poll_interval_s)
        while True:
            if time.monotonic() + delay > deadline:
                raise OperationTimeout(
                    f"PATCH {plan_id}: ARM's operation still running after {self._operation_timeout_s:.0f} s; "
                    "the next sweep checks the plan again",
                    transient=True,
                )
            await asyncio.sleep(delay)
            response = await self._send(HttpRequest("GET", url))
            if response.status_code == 204:  # Location polling: done, no body
                return
            if response.status_code not in (200, 202):
                raise _error_from(response, f"polling {plan_id}")
            body = _body(response)
            state = str(body.get("status") or body.get("properties", {}).get("provisioningState") or "")
            if response.status_code == 200 and (not state or state.lower() in TERMINAL_OPERATION_STATES):
                if state.lower() in ("failed", "canceled"):
                    error = body.get("error")
                    code, message = (
                        (error.get("code"), error.get("message")) if isinstance(error, Mapping) else (None, None)
                    )
                    raise ArmError(
                        f"PATCH {plan_id}: operation {state}: {code or ''} {message or ''}".strip(),
                        code=str(code or state),
                        transient=False,
                    )
                return
            delay = _retry_after(response.headers, self._poll_interval_s)

    async def _send(self, request: Any) -> Any:
        """One request through the SDK pipeline; transport failures become transient ArmErrors."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        try:
            return await self._client._send_request(request)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise ArmError(f"{request.method} {request.url.split('?')[0]}: {exc}", transient=True) from exc

    async def _json(self, method: str, url: str, *, plan_id: PlanId | None = None) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        response = await self._send(HttpRequest(method, url))
        if response.status_code == 404 and plan_id is not None:
            raise PlanGone(plan_id)
        if response.status_code != 200:
            raise _error_from(response, f"{method} {url.split('?')[0]}")
        return _body(response)

    async def request(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> ArmReply:
        """One ARM request as is, no interpretation: a path on the endpoint or a URL ARM returned (checked)."""
        from azure.core.rest import HttpRequest

        target = url if url.startswith("/") else self._checked_url(url)
        request = HttpRequest(method, target, json=dict(body)) if body is not None else HttpRequest(method, target)
        response = await self._send(request)
        return ArmReply(int(response.status_code), dict(response.headers), _body(response))

    def _checked_url(self, url: str) -> str:
        """Follow only URLs on the ARM host we were configured with: a bearer token never goes elsewhere."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc.lower() != self._host:
            raise ArmError(
                f"ARM returned a link to {parts.scheme}://{parts.netloc}, not the configured endpoint; not followed",
                transient=False,
            )
        return url


def _plan_url(plan_id: PlanId) -> str:
    return (
        f"/subscriptions/{quote(plan_id.subscription_id)}/resourceGroups/{quote(plan_id.resource_group)}"
        f"/providers/{PROVIDER}/labPlans/{quote(plan_id.name)}?api-version={API_VERSION}"
    )


def _body(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else default
    except ValueError:
        return default


def _error_from(response: Any, what: str) -> ArmError:
    status = int(response.status_code)
    error = _body(response).get("error")
    code = str(error.get("code")) if isinstance(error, Mapping) and error.get("code") else None
    message = str(error.get("message")) if isinstance(error, Mapping) and error.get("message") else ""
    transient = status in (408, 429) or status >= 500
    return ArmError(
        f"{what}: HTTP {status} {code or ''} {message}".strip(), status=status, code=code, transient=transient
    )


def principal_from_token(token: str) -> str | None:
    """The object id (``oid``) in our own access token, used to recognise our own writes in events.

    The token is ours and only read, never trusted for authorization, so its signature is not checked.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return str(oid).lower() if oid else None


def _without_provider_registration(client: Any) -> None:
    """Take azure-mgmt-core's auto-registration policy out of the client's pipeline.

    On a 409 MissingSubscriptionRegistration that policy POSTs ``.../providers/<namespace>/register`` and
    retries: with an admin's credentials, an audit would register Microsoft.LabServices in their
    subscription, a write nobody asked for. labguard reports "not registered, no plans here" instead.
    (azure-mgmt-core adds the policy whenever no full policy list is given; the versions are pinned.)
    """
    from azure.mgmt.core.policies import AsyncARMAutoResourceProviderRegistrationPolicy

    policies: list[Any] = client._client._pipeline._impl_policies
    for index, policy in enumerate(policies):
        if isinstance(policy, AsyncARMAutoResourceProviderRegistrationPolicy):
            if index:
                policies[index - 1].next = policy.next
            del policies[index]
            return
    raise RuntimeError("azure-mgmt-core's provider auto-registration policy was not found: check the pinned SDK")


@dataclass
class ArmSession:
    """What one run needs from Azure: the adapter, and who we are (to recognise our own writes)."""

    plans: LabPlansArm
    credential: Any
    scope: str

    async def own_principal_id(self) -> str | None:
        token = await self.credential.get_token(self.scope)
        return principal_from_token(token.token)


@asynccontextmanager
async def open_arm(
    settings: Settings,
    *,
    credential: Any | None = None,
    operation_timeout_s: float = 300.0,
    poll_interval_s: float = 5.0,
    pacer: Pacer | None = None,
) -> AsyncIterator[ArmSession]:
    """Build the async SDK client and credential for one run and close both afterwards.

    Credentials come from DefaultAzureCredential (managed identity in Azure, ``az login`` on a laptop,
    AZURE_CLIENT_ID for a user-assigned identity) unless one is passed in. With a ``pacer``, every
    request waits for its subscription's ARM budget first (:mod:`shared.pacing`).
    """
    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.mgmt.labservices.aio import ManagedLabsClient

    quiet_sdk_http_logging()
    # One TLS context and one connection pool for the whole run. (Handing azure-core a CA file
    # instead makes it build a new SSLContext per request, so no connection is ever reused.)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(settings.ca_bundle)))
    own_credential = credential is None
    if credential is None:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(transport=AioHttpTransport(session=session, session_owner=False))
    counter = CallCounter()
    scope = f"{settings.arm_audience}.default"
    client = ManagedLabsClient(
        credential,
        subscription_id=settings.subscriptions[0] if settings.subscriptions else "00000000-0000-0000-0000-000000000000",
        base_url=settings.arm_endpoint,
        api_version=API_VERSION,
        credential_scopes=[scope],
        transport=AioHttpTransport(session=session, session_owner=False),
        per_retry_policies=[_counting_policy(counter)] + ([_pacing_policy(pacer)] if pacer is not None else []),
    )
    _without_provider_registration(client)
    try:
        plans = LabPlansArm(
            client,
            arm_endpoint=settings.arm_endpoint,
            counter=counter,
            operation_timeout_s=operation_timeout_s,
            poll_interval_s=poll_interval_s,
        )
        yield ArmSession(plans=plans, credential=credential, scope=scope)
    finally:
        try:
            await client.close()
            if own_credential:
                await credential.close()
        finally:
            await session.close()
