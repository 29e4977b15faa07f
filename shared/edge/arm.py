"""The one adapter between labguard and Azure Resource Manager for lab plans.

Why raw JSON through the SDK client's own pipeline (``client._send_request``, azure-core's documented
route; :meth:`LabPlansArm._send` hands requests to the pipeline client it wraps) instead of the typed
operations: the SDK's models drop ``resourceOperationError`` and raise
DeserializationError on ``00:05``-style delays, which the official examples use. The pipeline still
does authentication, ARM's policies and azure-core's retries (429 with Retry-After, 5xx on reads).

Why the async client: a sweep reads and patches thousands of plans whose cost is ARM's round trip,
not CPU; asyncio with a bounded number of requests in flight gives that concurrency on one thread,
and the Functions Python worker runs ``async def`` functions natively.

Everything SDK-shaped stops here: callers get :class:`shared.core.plans.LabPlan` and plain errors. Labs
(:mod:`shared.edge.lab_arm`) go through the same request, write and wait code below.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

from shared.core.labs import LabId
from shared.core.plans import PROVIDER, LabPlan, PlanId
from shared.core.text import shown
from shared.edge.pacing import Pacer, request_kind, subscription_of
from shared.edge.tls import connector_ssl
from shared.errors import ArmError, PlanGone, ProviderNotRegistered, Throttled
from shared.runtime.logs import quiet_sdk_http_logging, record
from shared.runtime.settings import Settings

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest, PipelineResponse

API_VERSION = "2023-06-07"

# The RBAC actions the adapter needs: reading plans (get, list) and updating them (PATCH). A write is
# waited for by reading the plan (labPlans/read); the operation URL a PATCH may name is only a hint,
# followed when readable and dropped when not, so no role is granted for it. The infra tests check
# that the custom role grants exactly these.
ARM_ACTIONS = frozenset(
    {
        "Microsoft.LabServices/labPlans/read",
        "Microsoft.LabServices/labPlans/write",
    }
)

# After a 202 whose operation cannot be followed, a terminal read earlier than this (or than the
# Retry-After) proves the write only if it shows the written values or a busy state came first.
MIN_202_SETTLE_S = 2.0
TERMINAL_OPERATION_STATES = frozenset({"succeeded", "failed", "canceled"})
BUSY_CODES = frozenset({"AnotherOperationInProgress", "ResourceLocked"})  # a 409 to a write on a busy plan

log = logging.getLogger("labguard.arm")


class _Read(Protocol):
    """What the wait for a write needs of a plan or a lab read back."""

    @property
    def is_terminal(self) -> bool: ...

    @property
    def profiles_as_read(self) -> Mapping[str, Mapping[str, Any]]: ...


_R = TypeVar("_R", bound=_Read)


@dataclass(frozen=True)
class WriteAccepted:
    """ARM took a PATCH: 200 (done at once) or 202 (running; maybe an operation URL and Retry-After)."""

    status: int
    operation_url: str | None = None
    retry_after_s: float | None = None
    # The PATCH body sent: after a 202, a read showing these values proves the write was taken.
    written: Mapping[str, Any] | None = field(default=None, repr=False)


# A write slot already taken from the pacer (see LabPlansArm.write_slot): the pacing policy lets the
# PATCH through without waiting again, so no wait falls between the last read and the write.
_PREPAID_SLOT: ContextVar[Any] = ContextVar("labguard_prepaid_write_slot", default=None)


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
        path = http.url.split("?", 1)[0].lower()  # the scheme and host hold none of the markers below
        if "/operationresults/" in path or "/operationstatuses/" in path:
            kind = "poll"
        elif http.method == "GET":
            kind = "get" if "/labplans/" in path or "/labs/" in path else "list"  # one resource (plan or lab)
        else:
            kind = http.method.lower()
        self.by_kind[kind] += 1

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        if response.http_response.status_code == 429:
            self.throttled += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


REQUEST_ID_HEADER = "x-ms-client-request-id"


def _metering_policy(counter: CallCounter, pacer: Pacer | None, user_agent: str) -> Any:
    """Counts each attempt (retries included) and, with a pacer, waits for the subscription's ARM budget
    before it and reads ARM's answer after it; sets the request id and the SDK's User-Agent. One policy for
    all of it: each policy is a hop, paid on every request of a sweep."""
    from azure.core.pipeline.policies import AsyncHTTPPolicy

    class _Metering(AsyncHTTPPolicy[Any, Any]):
        async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
            counter.on_request(request)
            http = request.http_request
            # What ARM support asks for. uuid4, not azure-core's RequestIdPolicy (uuid1, a clock read
            # and a lock, measurably slower per call); a retry keeps the id it was first given.
            headers = http.headers
            if REQUEST_ID_HEADER not in headers:
                headers[REQUEST_ID_HEADER] = str(uuid.uuid4())
                headers["User-Agent"] = user_agent
            subscription = subscription_of(http.url) if pacer is not None else None
            if pacer is None or subscription is None:  # no pacer, or a tenant-level request: no budget
                response = await self.next.send(request)
            else:
                ticket = _PREPAID_SLOT.get()
                if ticket is None:  # Pacer.acquire, without a coroutine of its own when no wait is due
                    ticket = pacer.reserve(subscription, request_kind(http.method))
                    if ticket.delay > 0:
                        await pacer.sleep(ticket.delay)
                response = await self.next.send(request)
                pacer.observe(ticket, response.http_response.status_code, response.http_response.headers)
            counter.on_response(request, response)
            return response

    return _Metering()


def _pipeline_policies(
    credential: Any, scope: str, counter: CallCounter, pacer: Pacer | None, retry: Mapping[str, float] | None = None
) -> list[Any]:
    """The policies each ARM request goes through: only those labguard relies on.

    azure-core's default list adds ContentDecodePolicy (every body parsed to JSON a second time; the
    adapter parses it once, in :func:`_body`), the redirect policy (ARM does not redirect; a 3xx is an
    error here, so a bearer token never follows one), network-trace and HTTP logging (kept at WARNING
    anyway, see :func:`shared.logs.quiet_sdk_http_logging`), header, proxy and custom-hook policies
    nothing configures, and azure-mgmt-core's provider auto-registration (a write nobody asked for, see
    :func:`_without_provider_registration`). Each costs CPU on every call of a sweep. Distributed tracing
    stays when azure-core's tracing is on.
    """
    from azure.core.pipeline.policies import AsyncRetryPolicy, DistributedTracingPolicy, UserAgentPolicy
    from azure.core.settings import settings as core_settings
    from azure.mgmt.core.policies import AsyncARMChallengeAuthenticationPolicy
    from azure.mgmt.labservices._version import VERSION

    # The SDK's User-Agent (with AZURE_HTTP_USER_AGENT when set), worked out once and set by the metering policy.
    user_agent = UserAgentPolicy(sdk_moniker=f"mgmt-labservices/{VERSION}").user_agent
    policies: list[Any] = [
        AsyncRetryPolicy(**dict(retry or {})),  # 429 with Retry-After, 5xx on reads, connection errors
        AsyncARMChallengeAuthenticationPolicy(credential, scope),
        _metering_policy(counter, pacer, user_agent),  # also x-ms-client-request-id and User-Agent (see there)
    ]
    if core_settings.tracing_enabled():
        policies.append(DistributedTracingPolicy())
    return policies


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
        first_poll_s: float = 0.25,
        pacer: Pacer | None = None,
        follow_operations: bool = True,
    ) -> None:
        self._client = client
        self._host = urlsplit(arm_endpoint).netloc.lower()
        self._base = arm_endpoint.rstrip("/")
        # The pipeline client ``client._send_request`` hands each request to (see :meth:`_send`).
        self._pipeline = client._client
        self.counter = counter or CallCounter()
        self._operation_timeout_s = operation_timeout_s
        self._poll_interval_s = poll_interval_s
        self._first_poll_s = first_poll_s
        self._pacer = pacer
        self._follow_operations = follow_operations
        self._operation_refused: int | None = None

    async def get_plan(self, plan_id: PlanId) -> LabPlan:
        """Fresh read of one plan. Raises PlanGone on 404, ArmError otherwise."""
        body = await self._json("GET", _plan_url(plan_id), gone=lambda: PlanGone(plan_id))
        try:
            return LabPlan.from_arm(body)
        except ValueError as exc:
            raise ArmError(f"GET {plan_id}: ARM answered with an unreadable lab plan ({exc})", transient=False) from exc

    async def list_plans(
        self, subscription_id: str, resource_group: str | None = None
    ) -> AsyncIterator[LabPlan | BadPlan]:
        """Every plan in a subscription (or one resource group), following ``nextLink`` page by page."""
        async for item in self.list_items(subscription_id, resource_group, "labPlans"):
            if type(item) is not dict and not isinstance(item, Mapping):  # JSON objects are dicts: no ABC check
                yield BadPlan(id="?", reason="list item is not an object")
                continue
            try:
                yield LabPlan.from_arm(item)
            except ValueError as exc:  # the id and the reason may carry a whole hostile value: capped
                yield BadPlan(id=capped_id(item), reason=shown(str(exc), quote=False))

    async def list_items(self, subscription_id: str, resource_group: str | None, collection: str) -> AsyncIterator[Any]:
        """The raw items of ``.../providers/Microsoft.LabServices/{collection}``, page by page: one pager for
        plans and labs, so both get the registration check, the page checks and the nextLink loop guard."""
        base = f"/subscriptions/{quote(subscription_id)}"
        if resource_group:
            base += f"/resourceGroups/{quote(resource_group)}"
        first = f"{base}/providers/{PROVIDER}/{collection}?api-version={API_VERSION}"
        seen_pages = {first}
        url: str | None = first
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
                yield item
            next_link = page.get("nextLink")
            url = self._checked_url(next_link) if isinstance(next_link, str) and next_link else None
            if url is not None and url in seen_pages:  # a page pointing back would loop for ever
                raise ArmError(f"listing {base}: nextLink points to a page already read", transient=True)
            if url is not None:
                seen_pages.add(url)

    async def write_slot(self, plan_id: PlanId | LabId, *, max_wait_s: float | None = None) -> Any:
        """Wait for the subscription's write budget *before* the re-read that precedes a write.

        The returned slot is handed to :meth:`send_patch`, which then goes out without a second wait:
        nothing waits between the last read of a plan and the write to it. A wait longer than
        ``max_wait_s`` (a bounded event run) is not sat out: a transient ArmError says try later.
        """
        if self._pacer is None:
            return None
        ticket = self._pacer.reserve(plan_id.subscription_id, "writes")
        if max_wait_s is not None and ticket.delay > max_wait_s:
            raise ArmError(
                f"PATCH {plan_id}: the subscription's write budget is spent for {ticket.delay:.0f} s more",
                status=429,
                code="WriteBudget",
                transient=True,
            )
        if ticket.delay > 0:
            await self._pacer.sleep(ticket.delay)
        return ticket

    async def send_patch(self, plan_id: PlanId, patch: Mapping[str, Any], slot: Any = None) -> WriteAccepted:
        """Send one PATCH of a plan (all drifted fields at once, so never half-applied), exactly once."""
        return await self.patch_resource(_plan_url(plan_id), plan_id, lambda: PlanGone(plan_id), patch, slot)

    async def patch_resource(
        self, url: str, what: object, gone: Callable[[], ArmError], patch: Mapping[str, Any], slot: Any = None
    ) -> WriteAccepted:
        """Send one PATCH of a plan or a lab (``url``), exactly once; ``gone()`` is raised on 404.

        azure-core's retries are off for this request (``retry_total=0``): a 429 or 5xx comes back to
        the caller, which re-reads the resource before it writes again. Raises :class:`Throttled` on 429.
        """
        token = _PREPAID_SLOT.set(slot)
        try:
            response = await self._send("PATCH", url, patch, retry_total=0)
        finally:
            _PREPAID_SLOT.reset(token)
        status = response.status_code
        if status == 404:
            raise gone()
        if status == 429:
            error = _error_from(response, f"PATCH {what}")
            raise Throttled(str(error), retry_after_s=_retry_after(response.headers, 1.0))
        if status not in (200, 201, 202):
            error = _error_from(response, f"PATCH {what}")
            if status == 409 and error.code in BUSY_CODES:  # turned busy after our read: read again, later
                error.transient = True
            raise error
        operation = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
        retry_after = response.headers.get("Retry-After")
        return WriteAccepted(
            status=status,
            operation_url=operation if status == 202 and operation else None,
            retry_after_s=_retry_after(response.headers, 0.0) if retry_after is not None else None,
            written=patch,
        )

    async def wait_for_write(
        self,
        plan_id: PlanId,
        accepted: WriteAccepted,
        *,
        timeout_s: float | None = None,
        gate: asyncio.Semaphore | None = None,
    ) -> LabPlan | None:
        """Wait until the plan's provisioningState is terminal again and return that read of it
        (:meth:`wait_for_resource`)."""
        return await self.wait_for_resource(
            plan_id.key, lambda: self.get_plan(plan_id), accepted, timeout_s=timeout_s, gate=gate
        )

    async def wait_for_resource(
        self,
        key: str,
        read: Callable[[], Awaitable[_R]],
        accepted: WriteAccepted,
        *,
        timeout_s: float | None = None,
        gate: asyncio.Semaphore | None = None,
    ) -> _R | None:
        """Wait until a plan's or a lab's provisioningState is terminal again and return that ``read()`` of it.

        The plan itself is read (GET, which the read role allows). The operation URL a 202 names is
        followed only as a hint of when to read: if it cannot be read (403 without a role for it, 400
        for a URL without api-version, anything else), it is dropped and the plan is read instead;
        a fix never fails because of it. None when the plan is still busy at the deadline.

        Without ``timeout_s`` (a sweep) the first read waits the whole Retry-After the service asked
        for: one read per write instead of a read every few seconds. ``gate`` (a semaphore) is held
        for each request only, never across a wait.
        """
        timeout = self._operation_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        operation = accepted.operation_url if self._follow_operations else None
        if accepted.status == 200:
            delay = 0.0
        elif accepted.retry_after_s is not None:
            limit = self._operation_timeout_s if timeout_s is None else self._poll_interval_s
            delay = min(accepted.retry_after_s, limit)
        else:
            delay = self._first_poll_s
        step = max(self._first_poll_s, 0.05)
        # After a 202 a terminal read is the proof only once the write is known to have been taken: the
        # operation said done, a busy state was seen, the read shows the written values, or a short
        # minimum has passed. Before that, a read may still show the plan as it was before the write.
        started = time.monotonic()
        settle_s = max(accepted.retry_after_s or 0.0, MIN_202_SETTLE_S)
        taken = accepted.status != 202
        unproven: _R | None = None
        while True:
            if time.monotonic() + delay > deadline:
                return unproven  # the deadline: the last terminal read is all there is
            await asyncio.sleep(delay)
            delay = step = min(step * 2, self._poll_interval_s)
            if operation is not None:
                async with gate or contextlib.nullcontext():
                    done = await self._operation_done(key, operation)
                if done is None:
                    operation, delay = None, 0.0
                    continue
                if not done:
                    continue
                taken = True
            async with gate or contextlib.nullcontext():
                read_back = await read()
            if not read_back.is_terminal:
                taken, unproven = True, None
            elif taken or _shows_written(read_back, accepted.written) or time.monotonic() - started >= settle_s:
                return read_back
            else:
                unproven = read_back
            operation = None  # the operation says done but the plan is still busy: read the plan

    async def _operation_done(self, key: str, url: str) -> bool | None:
        """True: the operation ended; False: still running; None: the URL cannot be used (never an error)."""
        if self._operation_refused is not None:
            return None
        try:
            target = self._checked_url(url)
            if "api-version=" not in urlsplit(target).query:
                target += ("&" if urlsplit(target).query else "?") + f"api-version={API_VERSION}"
            response = await self._send("GET", target)
        except ArmError as exc:
            self._refuse_operations(key, None, str(exc))
            return None
        status = response.status_code
        if status == 202:
            return False
        if status == 204:
            return True
        if status == 200:
            body = _body(response)
            state = body.get("status")
            if isinstance(state, str):
                return state.lower() in TERMINAL_OPERATION_STATES
            return True  # Location semantics: the final resource
        self._refuse_operations(key, status, _error_from(response, "operation URL").code)
        return None

    def _refuse_operations(self, key: str, status: int | None, why: str | None) -> None:
        """Stop following operation URLs for this run after one could not be read; say so once."""
        self._operation_refused = status or 0
        record(
            log,
            logging.WARNING,
            "arm.operation-url-unreadable",
            plan_id=key,
            status=status,
            error=why,
            note="waiting by reading the plan instead (labPlans/read); nothing else changes",
        )

    async def _send(self, method: str, url: str, body: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """One request (a path on the endpoint, or a checked URL ARM returned) through the SDK client's pipeline;
        transport failures become transient ArmErrors.

        The request goes to the pipeline client itself, with its URL already whole: ``client._send_request``
        adds only a deep copy of the request and a join of its URL to the base URL (24 µs of CPU a request,
        measured; a sweep sends thousands). Same pipeline, same policies, same answer."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        target = self._base + url if url.startswith("/") else url
        request = HttpRequest(method, target) if body is None else HttpRequest(method, target, json=dict(body))
        try:
            return await self._pipeline.send_request(request, **options)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise ArmError(f"{method} {url.split('?')[0]}: {exc}", transient=True) from exc

    async def _json(self, method: str, url: str, *, gone: Callable[[], ArmError] | None = None) -> dict[str, Any]:
        response = await self._send(method, url)
        if response.status_code == 404 and gone is not None:
            raise gone()
        if response.status_code != 200:
            raise _error_from(response, f"{method} {url.split('?')[0]}")
        return _body(response)

    async def request(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> ArmReply:
        """One ARM request as is, no interpretation: a path on the endpoint or a URL ARM returned (checked)."""
        target = url if url.startswith("/") else self._checked_url(url)
        response = await self._send(method, target, body)
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


def capped_id(item: Mapping[str, Any]) -> str:
    """An unreadable item's id for records and reports: one capped line, never a whole hostile value."""
    raw = item.get("id", "?")
    return shown(raw if isinstance(raw, str) else "?", quote=False, limit=300)


def _plan_url(plan_id: PlanId) -> str:
    return resource_url("labPlans", plan_id.subscription_id, plan_id.resource_group, plan_id.name)


@functools.lru_cache(maxsize=4096)
def resource_url(collection: str, subscription_id: str, resource_group: str, name: str) -> str:
    """The REST path of a plan or a lab, quoted (worked out once per resource: a write reads it four times)."""
    return (
        f"/subscriptions/{quote(subscription_id)}/resourceGroups/{quote(resource_group)}"
        f"/providers/{PROVIDER}/{collection}/{quote(name)}?api-version={API_VERSION}"
    )


def _body(response: Any) -> dict[str, Any]:
    """The response's JSON object, parsed once from the raw bytes (``{}`` for no or unreadable JSON)."""
    try:
        raw = response.body()
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _shows_written(plan: _Read, written: Mapping[str, Any] | None) -> bool:
    """Whether every leaf of the PATCH body is what the read shows (so the read is after the write)."""
    properties = written.get("properties") if written else None
    if not isinstance(properties, Mapping) or not properties:
        return False
    for name, profile in properties.items():
        seen = plan.profiles_as_read.get(name)
        if not isinstance(profile, Mapping) or seen is None:
            return False
        if any(seen.get(leaf) != value for leaf, value in profile.items()):
            return False
    return True


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    """Seconds to wait, capped at 60; ``NaN``, ``inf`` or a negative value means the default
    (``asyncio.sleep(nan)`` never returns, so a hostile header would hang the write)."""
    value = headers.get("Retry-After")
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    if not math.isfinite(seconds) or seconds < 0:
        return default
    return min(seconds, 60.0)


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
    """Make sure azure-mgmt-core's provider auto-registration policy is not in the client's pipeline.

    On a 409 MissingSubscriptionRegistration that policy POSTs ``.../providers/<namespace>/register`` and
    retries: with an admin's credentials, an audit would register Microsoft.LabServices in their
    subscription, a write nobody asked for. labguard reports "not registered, no plans here" instead.
    azure-mgmt-core adds the policy only when no full policy list is given; labguard gives one
    (:func:`_pipeline_policies`), and this check fails loudly if a new SDK version adds it anyway.
    """
    from azure.mgmt.core.policies import AsyncARMAutoResourceProviderRegistrationPolicy

    policies: list[Any] = client._client._pipeline._impl_policies
    if any(isinstance(getattr(p, "_policy", p), AsyncARMAutoResourceProviderRegistrationPolicy) for p in policies):
        raise RuntimeError("azure-mgmt-core's provider auto-registration policy is in the pipeline: check the SDK")


def identities_from_token(token: str) -> frozenset[str]:
    """Every id our own token names us by (object id, application id), lower-case.

    ARM's ``systemData.lastModifiedBy`` names an application by one of these, so a plan last written
    by labguard can be told from one written by its owner.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return frozenset()
    if not isinstance(claims, dict):
        return frozenset()
    return frozenset(str(claims[k]).lower() for k in ("oid", "appid", "azp") if claims.get(k))


@dataclass
class ArmSession:
    """What one run needs from Azure: the adapter, and who we are (to recognise our own writes)."""

    plans: LabPlansArm
    credential: Any
    scope: str

    async def own_principal_id(self) -> str | None:
        token = await self.credential.get_token(self.scope)
        return principal_from_token(token.token)

    async def own_identities(self) -> frozenset[str]:
        token = await self.credential.get_token(self.scope)
        return identities_from_token(token.token)


@asynccontextmanager
async def open_arm(
    settings: Settings,
    *,
    credential: Any | None = None,
    operation_timeout_s: float = 300.0,
    poll_interval_s: float = 5.0,
    pacer: Pacer | None = None,
    retry: Mapping[str, float] | None = None,
) -> AsyncIterator[ArmSession]:
    """Build the async SDK client and credential for one run and close both afterwards.

    Credentials come from :func:`shared.edge.identity.app_credential` (the host's managed identity in Azure,
    AZURE_CLIENT_ID for a user-assigned one; DefaultAzureCredential elsewhere, ``az login`` on a laptop)
    unless one is passed in. With a ``pacer``, every
    request waits for its subscription's ARM budget first (:mod:`shared.edge.pacing`). ``retry`` holds
    azure-core's retry options (``retry_total``, ``retry_backoff_factor``, ``retry_backoff_max``...);
    azure-core's defaults otherwise. A Retry-After from ARM is honoured either way.
    """
    unknown = [key for key in retry or {} if not key.startswith("retry_")]
    if unknown:
        raise TypeError(f"not azure-core retry options: {', '.join(unknown)}")
    import aiohttp
    from azure.mgmt.labservices.aio import ManagedLabsClient

    from shared.edge.transport import LeanAioHttpTransport

    quiet_sdk_http_logging()
    # One TLS context and one connection pool for the whole run. (Handing azure-core a CA file
    # instead makes it build a new SSLContext per request, so no connection is ever reused.)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=connector_ssl(settings.ca_bundle)))
    own_credential = credential is None
    client: Any = None
    try:  # everything built after the session is inside the try: a credential that cannot be built still closes it
        if credential is None:
            from shared.edge.identity import app_credential

            credential = app_credential(session=session)
        counter = CallCounter()
        scope = f"{settings.arm_audience}.default"
        client = ManagedLabsClient(
            credential,
            subscription_id=settings.subscriptions[0]
            if settings.subscriptions
            else "00000000-0000-0000-0000-000000000000",
            base_url=settings.arm_endpoint,
            api_version=API_VERSION,
            credential_scopes=[scope],
            transport=LeanAioHttpTransport(session=session),
            policies=_pipeline_policies(credential, scope, counter, pacer, retry),
        )
        _without_provider_registration(client)
        plans = LabPlansArm(
            client,
            arm_endpoint=settings.arm_endpoint,
            counter=counter,
            operation_timeout_s=operation_timeout_s,
            poll_interval_s=poll_interval_s,
            pacer=pacer,
        )
        yield ArmSession(plans=plans, credential=credential, scope=scope)
    finally:
        try:
            if client is not None:
                await client.close()
        finally:
            try:
                if own_credential and credential is not None:
                    await credential.close()
            finally:
                await session.close()
