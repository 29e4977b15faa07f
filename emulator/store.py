"""State and ARM semantics of the emulated Microsoft.LabServices provider (no I/O here).

Everything in this module runs on the server's event loop thread; the in-process handle
in ``emulator.testing`` hops onto that thread before it touches a Store.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulator.tokens import Caller, event_claims

PROVIDER = "Microsoft.LabServices"
API_VERSIONS = ("2022-08-01", "2023-06-07")
SUPPORTED_API_VERSIONS_TEXT = "2021-10-01-preview, 2021-11-15-preview, 2022-08-01, 2023-06-07"

# url segment (lower) -> (canonical segment, "type" value as the official examples write it)
KINDS: dict[str, tuple[str, str]] = {
    "labplans": ("labPlans", "Microsoft.LabServices/LabPlan"),
    "labs": ("labs", "Microsoft.LabServices/Lab"),
}
# Writes are refused with 409 while a resource is in one of these provisioning states.
BUSY_STATES = {"locked", "creating", "updating", "deleting"}
_INVALID_CONTENT = "The request content was invalid and could not be deserialized."
READ_ONLY_PROPERTIES = ("provisioningState", "resourceOperationError")
UPDATABLE_TOP_LEVEL = ("tags", "identity", "properties")  # LabPlanUpdate / LabUpdate (TrackedResourceUpdate)

ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.labservices/"
    r"(?P<kind>labplans|labs)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def event_time() -> str:
    # Event Grid writes 7 fractional digits.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class ArmError(Exception):
    """An ARM error response: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class MissingRegistration(ArmError):
    """409 MissingSubscriptionRegistration, with the ``details`` entry (``target`` = the namespace) ARM adds."""

    def __init__(self, message: str) -> None:
        super().__init__(409, "MissingSubscriptionRegistration", message)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["details"] = [{"code": self.code, "target": PROVIDER, "message": self.message}]
        return body


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list to send as JSON, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Resource:
    kind: str  # "labPlans" | "labs"
    key: str  # lower-case id
    sub: str  # lower-case
    rg: str  # lower-case
    body: dict[str, Any]
    pending_op: str | None = None
    stale: tuple[float, dict[str, Any]] | None = None  # (until, body): reads lag behind a 202 (stale_read_s)


@dataclass
class Operation:
    id: str
    sub: str  # as the caller wrote it
    kind: str
    key: str
    resource_id: str
    method: str
    api_version: str
    start: str
    done_at: float
    caller: Caller | None
    http: dict[str, str]
    status: str = "InProgress"
    end: str | None = None
    error: dict[str, str] | None = None
    fail_with: dict[str, str] | None = None


@dataclass
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take one token; return 0.0 on success, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


READ_BUCKET = (250.0, 25.0)  # burst, refill per second (ARM, per subscription)
WRITE_BUCKET = (200.0, 10.0)


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.") from exc


def clone(obj: Any) -> Any:
    """Deep copy of JSON data (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


PATCH_REPLIES = ("lro", "200", "spec")
SHUTDOWN_LEAVES = (
    "shutdownOnDisconnect",
    "shutdownWhenNotConnected",
    "shutdownOnIdle",
    "disconnectDelay",
    "noConnectDelay",
    "idleDelay",
)


@dataclass
class WriteModes:
    """How writes complete, where real Azure may answer in more than one way.

    ``patch_reply``: ``lro`` (default: 202 with Azure-AsyncOperation, Location and Retry-After),
    ``200`` (done at once, as recorded real traffic answered), ``spec`` (the 2023-06-07 example: 202
    with only ``Location`` on ``/subscriptions/{sub}/providers/Microsoft.LabServices/operationresults/{id}``,
    no api-version). ``operation_status``: the operationResults route answers this status instead
    (403: the caller's role does not cover it; 400). ``drop_written``: auto-shutdown leaves a write
    silently does not apply (the old value stays), as a service that drops a value would.
    ``stale_read_s``: for this long after a PATCH answered 202, a GET still shows the plan as it was
    before the write (Succeeded, old values), as an eventually consistent read may.
    """

    patch_reply: str = "lro"
    operation_status: int | None = None
    drop_written: frozenset[str] = frozenset()
    stale_read_s: float = 0.0

    def set(self, **modes: Any) -> None:
        if "stale_read_s" in modes:
            self.stale_read_s = max(0.0, float(modes["stale_read_s"] or 0.0))
        if "patch_reply" in modes:
            reply = str(modes["patch_reply"])
            if reply not in PATCH_REPLIES:
                raise ValueError(f"patch_reply must be one of {PATCH_REPLIES}, not {reply!r}")
            self.patch_reply = reply
        if "operation_status" in modes:
            status = modes["operation_status"]
            self.operation_status = None if status in (None, "", 0) else int(status)
        if "drop_written" in modes:
            value = modes["drop_written"] or ()
            names = value.split(",") if isinstance(value, str) else value
            unknown = {str(n).strip() for n in names if str(n).strip()} - set(SHUTDOWN_LEAVES)
            if unknown:
                raise ValueError(f"drop_written: not auto-shutdown leaves: {sorted(unknown)}")
            self.drop_written = frozenset(str(n).strip() for n in names if str(n).strip())

    def public(self) -> dict[str, Any]:
        return {
            "patch_reply": self.patch_reply,
            "operation_status": self.operation_status,
            "drop_written": sorted(self.drop_written),
            "stale_read_s": self.stale_read_s,
        }

    def without_dropped(self, body: Any) -> Any:
        """The write body minus the leaves this service drops (so the old values stay)."""
        if not self.drop_written or not isinstance(body, dict):
            return body
        props = body.get("properties")
        profile = props.get("defaultAutoShutdownProfile") if isinstance(props, dict) else None
        if not isinstance(profile, dict):
            return body
        kept = {k: v for k, v in profile.items() if k not in self.drop_written}
        return {**body, "properties": {**props, "defaultAutoShutdownProfile": kept}}


PATCH_MODES = ("merge", "replace")
# What a nested profile's omitted leaves become when a PATCH replaces it (the spec's defaults; delays have
# none, so they are simply absent).
SPEC_DEFAULTS: dict[str, dict[str, str]] = {
    "defaultConnectionProfile": {
        "webSshAccess": "None",
        "webRdpAccess": "None",
        "clientSshAccess": "None",
        "clientRdpAccess": "None",
    },
    "defaultAutoShutdownProfile": {
        "shutdownOnDisconnect": "Disabled",
        "shutdownWhenNotConnected": "Disabled",
        "shutdownOnIdle": "None",
    },
}
# A lab's own profiles (connectionProfile, autoShutdownProfile) have the same leaves and defaults.
SPEC_DEFAULTS["connectionProfile"] = SPEC_DEFAULTS["defaultConnectionProfile"]
SPEC_DEFAULTS["autoShutdownProfile"] = SPEC_DEFAULTS["defaultAutoShutdownProfile"]
# delay -> (its feature's flag, the flag values that mean "off")
_DELAY_FEATURE = {
    "disconnectDelay": ("shutdownOnDisconnect", ("Disabled",)),
    "noConnectDelay": ("shutdownWhenNotConnected", ("Disabled",)),
    "idleDelay": ("shutdownOnIdle", ("None",)),
}


def replace_patch(target: Any, patch: dict[str, Any]) -> Any:
    """PATCH as a service that replaces nested objects would apply it: top level merged (RFC 7386), but each
    object the patch names inside ``properties`` replaces the stored one wholesale, its omitted leaves taking
    the spec's defaults (``SPEC_DEFAULTS``; delays absent)."""
    result = merge_patch(target, {k: v for k, v in patch.items() if k != "properties"})
    props_patch = patch.get("properties")
    if not isinstance(props_patch, dict):
        return result
    props = dict(result.get("properties") or {})
    for k, v in props_patch.items():
        if v is None:
            props.pop(k, None)
        elif isinstance(v, dict):
            given = {kk: clone(vv) for kk, vv in v.items() if vv is not None}
            props[k] = {**SPEC_DEFAULTS.get(k, {}), **given}
        else:
            props[k] = clone(v)
    result["properties"] = props
    return result


def omit_off_delays(body: dict[str, Any]) -> dict[str, Any]:
    """The body as a read that leaves out the delay of a shutdown feature that is off (absent flags are off)."""
    props = body.get("properties")
    key = (
        "autoShutdownProfile"
        if isinstance(props, dict) and "autoShutdownProfile" in props
        else "defaultAutoShutdownProfile"
    )
    shutdown = props.get(key) if isinstance(props, dict) else None
    if not isinstance(shutdown, dict):
        return body
    drop = [
        delay
        for delay, (flag, off) in _DELAY_FEATURE.items()
        if delay in shutdown and shutdown.get(flag, SPEC_DEFAULTS["defaultAutoShutdownProfile"][flag]) in off
    ]
    if not drop:
        return body
    assert isinstance(props, dict)
    return {
        **body,
        "properties": {
            **props,
            key: {k: v for k, v in shutdown.items() if k not in drop},
        },
    }


def parse_resource_id(resource_id: str) -> tuple[str, str, str, str]:
    """(kind, sub, rg, name) of a lab plan or lab id; ValueError if it is neither."""
    m = ID_RE.match(resource_id)
    if not m:
        raise ValueError(f"not a Microsoft.LabServices labPlans/labs resource id: {resource_id!r}")
    return KINDS[m["kind"].lower()][0], m["sub"], m["rg"], m["name"]


class Store:
    def __init__(
        self,
        *,
        endpoint: str = "",
        tenant_id: str = "",
        page_size: int = 100,
        lro_delay_s: float = 0.0,
        log_limit: int = 200_000,
        patch_mode: str = "merge",
        omit_off_delays: bool = False,
    ) -> None:
        if patch_mode not in PATCH_MODES:
            raise ValueError(f"patch_mode must be one of {PATCH_MODES}, not {patch_mode!r}")
        self.patch_mode = patch_mode
        self.omit_off_delays = omit_off_delays
        self.endpoint = endpoint
        self.tenant_id = tenant_id
        self.page_size = page_size
        self.lro_delay_s = lro_delay_s
        self.resources: dict[str, dict[str, Resource]] = {"labPlans": {}, "labs": {}}
        self._by_sub: dict[tuple[str, str], list[str]] = {}
        self._by_rg: dict[tuple[str, str, str], list[str]] = {}
        self.ops: dict[str, Operation] = {}
        self.ops_limit = log_limit
        self.events: deque[dict[str, Any]] = deque(maxlen=log_limit)
        self.fail_next: dict[str, dict[str, str]] = {}
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        # Subscriptions (lower case) where Microsoft.LabServices is not registered: ARM answers 409.
        self.unregistered: set[str] = set()
        self.write_modes = WriteModes()
        # Set by the server: run fn after delay seconds on the loop.
        self.schedule: Callable[[float, Callable[[], None]], Any] = lambda _d, fn: fn()

    # ------------------------------------------------------------------ storage
    def _indexes(self, r: Resource) -> tuple[list[str], list[str]]:
        return (
            self._by_sub.setdefault((r.kind, r.sub), []),
            self._by_rg.setdefault((r.kind, r.sub, r.rg), []),
        )

    def _index_add(self, r: Resource) -> None:
        for keys in self._indexes(r):
            bisect.insort(keys, r.key)

    def _index_remove(self, r: Resource) -> None:
        for keys in self._indexes(r):
            i = bisect.bisect_left(keys, r.key)
            if i < len(keys) and keys[i] == r.key:
                del keys[i]

    def lookup(self, resource_id: str) -> Resource | None:
        try:
            kind = parse_resource_id(resource_id)[0]
        except ValueError:
            return None
        return self.resources[kind].get(resource_id.lower())

    def _store_new(self, kind: str, body: dict[str, Any]) -> Resource:
        _kind, sub, rg, _name = parse_resource_id(body["id"])
        r = Resource(kind=kind, key=body["id"].lower(), sub=sub.lower(), rg=rg.lower(), body=body)
        self.resources[kind][r.key] = r
        self._index_add(r)
        return r

    def _remove(self, r: Resource) -> None:
        if self.resources[r.kind].pop(r.key, None) is not None:
            self._index_remove(r)

    def seed_resource(self, body: dict[str, Any], expect_kind: str | None = None) -> dict[str, Any]:
        return clone(self._seed_one(body, expect_kind))

    def _seed_one(self, body: dict[str, Any], expect_kind: str | None) -> dict[str, Any]:
        """Store a body as ARM would return it (``id`` required); fills only what is missing."""
        if not isinstance(body, dict) or "id" not in body:
            raise ValueError("a seeded resource needs an 'id'")
        kind, _sub, _rg, name = parse_resource_id(body["id"])
        if expect_kind and kind != expect_kind:
            raise ValueError(f"{body['id']} is not a {expect_kind} id")
        body = clone(body)
        body.setdefault("name", name)
        body.setdefault("type", KINDS[kind.lower()][1])
        if "systemData" not in body:
            now = utcnow()
            body["systemData"] = {
                "createdBy": "emulator-seed",
                "createdByType": "Application",
                "createdAt": now,
                "lastModifiedBy": "emulator-seed",
                "lastModifiedByType": "Application",
                "lastModifiedAt": now,
            }
        props = body.setdefault("properties", {})
        props.setdefault("provisioningState", "Succeeded")
        existing = self.resources[kind].get(body["id"].lower())
        if existing is not None:
            existing.body, existing.stale = body, None
            existing.pending_op = None
        else:
            self._store_new(kind, body)
        return body

    def seed(self, state: dict[str, Any]) -> int:
        n = 0
        for key, kind in (("labPlans", "labPlans"), ("labs", "labs")):
            for body in state.get(key, []) or []:
                self._seed_one(body, kind)
                n += 1
        return n

    def reset(self) -> None:
        for kind in self.resources:
            self.resources[kind].clear()
        self._by_sub.clear()
        self._by_rg.clear()
        self.ops.clear()
        self.fail_next.clear()
        self.unregistered.clear()

    def set_state(self, resource_id: str, state: str) -> dict[str, Any]:
        r = self.lookup(resource_id)
        if r is None:
            raise KeyError(resource_id)
        r.body.setdefault("properties", {})["provisioningState"] = state
        r.pending_op = None
        return clone(r.body)

    def fail_resource(self, resource_id: str, error: dict[str, str] | None, *, next_write: bool = False) -> None:
        r = self.lookup(resource_id)
        if r is None:
            raise KeyError(resource_id)
        err = self._operation_error(error, "update")
        if next_write:
            self.fail_next[r.key] = err
            return
        props = r.body.setdefault("properties", {})
        props["provisioningState"] = "Failed"
        props["resourceOperationError"] = err
        r.pending_op = None

    @staticmethod
    def _operation_error(error: dict[str, str] | None, action: str) -> dict[str, str]:
        err = dict(error or {})
        err.setdefault("timestamp", utcnow())
        err.setdefault("code", "InternalServerError")
        err.setdefault("message", "The operation failed.")
        err.setdefault("action", action)
        return err

    # ------------------------------------------------------------------ provider registration
    def set_registered(self, sub: str, registered: bool) -> None:
        (self.unregistered.discard if registered else self.unregistered.add)(sub.lower())

    def check_registered(self, sub: str) -> None:
        """ARM's answer to any Microsoft.LabServices request in a subscription that has not registered it."""
        if sub.lower() in self.unregistered:
            message = (
                f"The subscription is not registered to use namespace '{PROVIDER}'. "
                "See https://aka.ms/rps-not-found for how to register subscriptions."
            )
            raise MissingRegistration(message)

    def provider(self, sub: str) -> Reply:
        """``GET /subscriptions/{sub}/providers/Microsoft.LabServices`` (Microsoft.Resources Providers - Get)."""
        state = "NotRegistered" if sub.lower() in self.unregistered else "Registered"
        types = [
            {"resourceType": t, "locations": ["West Europe", "East US"], "apiVersions": list(reversed(API_VERSIONS))}
            for t in ("labPlans", "labs", "operationResults", "locations/operationResults")
        ]
        return Reply(
            200,
            {
                "id": f"/subscriptions/{sub}/providers/{PROVIDER}",
                "namespace": PROVIDER,
                "registrationState": state,
                "registrationPolicy": "RegistrationRequired",
                "resourceTypes": types,
            },
        )

    # ------------------------------------------------------------------ throttling
    def throttle(self, sub: str, write: bool, now: float) -> tuple[float, int]:
        """(seconds to wait or 0, tokens remaining) for one request against ``sub``'s bucket."""
        kind = "writes" if write else "reads"
        key = (sub.lower(), kind)
        b = self.buckets.get(key)
        if b is None:
            cap, rate = WRITE_BUCKET if write else READ_BUCKET
            b = self.buckets[key] = TokenBucket(cap, rate, cap, now)
        wait = b.take(now)
        return wait, int(b.tokens)

    # ------------------------------------------------------------------ views
    def view(self, body: dict[str, Any], api_version: str) -> dict[str, Any]:
        if self.omit_off_delays:
            body = omit_off_delays(body)
        if api_version == "2022-08-01":
            props = body.get("properties")
            if isinstance(props, dict) and "resourceOperationError" in props:
                body = dict(body)
                body["properties"] = {k: v for k, v in props.items() if k != "resourceOperationError"}
        return body

    def _not_found(self, kind: str, rg: str, name: str) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{PROVIDER}/{kind}/{name}' under resource group '{rg}' was not found. "
            "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )

    # ------------------------------------------------------------------ ARM operations
    def get(self, kind: str, sub: str, rg: str, name: str, api_version: str) -> Reply:
        r = self.resources[kind].get(self._key(kind, sub, rg, name))
        if r is None:
            raise self._not_found(kind, rg, name)
        if r.stale is not None and time.monotonic() < r.stale[0]:
            return Reply(200, self.view(r.stale[1], api_version))
        return Reply(200, self.view(r.body, api_version))

    def list(
        self, kind: str, sub: str, rg: str | None, api_version: str, skip_token: str | None, path: str, top: int | None
    ) -> Reply:
        keys = self._by_sub.get((kind, sub.lower())) if rg is None else self._by_rg.get((kind, sub.lower(), rg.lower()))
        keys = keys or []
        start = bisect.bisect_right(keys, _decode_token(skip_token)) if skip_token else 0
        size = max(1, min(top or self.page_size, self.page_size))
        page = keys[start : start + size]
        table = self.resources[kind]
        value = [self.view(table[k].body, api_version) for k in page]
        next_link = None
        if start + size < len(keys):
            next_link = f"{self.endpoint}{path}?api-version={api_version}&$skipToken={_encode_token(page[-1])}"
        return Reply(200, {"value": value, "nextLink": next_link})

    @staticmethod
    def _key(kind: str, sub: str, rg: str, name: str) -> str:
        return f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.labservices/{kind}/{name}".lower()

    @staticmethod
    def _check_writable(r: Resource) -> None:
        state = str(r.body.get("properties", {}).get("provisioningState", ""))
        if state.lower() in BUSY_STATES:
            code = "ResourceLocked" if state.lower() == "locked" else "AnotherOperationInProgress"
            raise ArmError(
                409,
                code,
                f"The resource '{r.body.get('id')}' is in provisioning state '{state}' and cannot be modified "
                "until it reaches a terminal state.",
            )

    def _system_data(self, previous: dict[str, Any] | None, caller: Caller | None) -> dict[str, Any]:
        # ARM names a person by their UPN (type User), an app or managed identity by its client id.
        who = (str(caller.claims["upn"]) if caller.is_user else caller.client_id) if caller else "unknown"
        kind = "User" if caller is not None and caller.is_user else "Application"
        now = utcnow()
        sd = {
            "createdBy": who,
            "createdByType": kind,
            "createdAt": now,
        }
        if previous:
            for k in ("createdBy", "createdByType", "createdAt"):
                if k in previous:
                    sd[k] = previous[k]
        sd.update({"lastModifiedBy": who, "lastModifiedByType": kind, "lastModifiedAt": now})
        return sd

    @staticmethod
    def _lab_server_fields(props: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Read-only lab properties the service owns: keep the old value, or make one up for a new lab."""
        prev = previous or {}
        props.pop("state", None)
        props["state"] = prev.get("state", "Draft")
        sec = props.get("securityProfile")
        if isinstance(sec, dict):
            sec.pop("registrationCode", None)
            code = (prev.get("securityProfile") or {}).get("registrationCode") or secrets.token_urlsafe(6)[:8]
            props["securityProfile"] = {"registrationCode": code, **sec}
        vm = props.get("virtualMachineProfile")
        if isinstance(vm, dict):
            vm.pop("osType", None)
            image = vm.get("imageReference") or {}
            os_type = (prev.get("virtualMachineProfile") or {}).get("osType")
            if not os_type:
                text = " ".join(str(image.get(k, "")) for k in ("offer", "publisher", "sku", "id")).lower()
                os_type = "Windows" if "windows" in text else "Linux"
            vm["osType"] = os_type
            if isinstance(image, dict):
                image.pop("exactVersion", None)

    def put(
        self,
        kind: str,
        sub: str,
        rg: str,
        name: str,
        api_version: str,
        body: Any,
        caller: Caller | None,
        http: dict[str, str],
    ) -> Reply:
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", _INVALID_CONTENT)
        if not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        key = self._key(kind, sub, rg, name)
        existing = self.resources[kind].get(key)
        if existing is not None:
            self._check_writable(existing)
        rid = (
            existing.body["id"]
            if existing
            else f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/{kind}/{name}"
        )
        props_in = body.get("properties") or {}
        if not isinstance(props_in, dict):
            raise ArmError(400, "InvalidRequestContent", "The 'properties' of the request must be an object.")
        props = {k: clone(v) for k, v in props_in.items() if k not in READ_ONLY_PROPERTIES}
        if kind == "labs":
            self._lab_server_fields(props, existing.body.get("properties") if existing else None)
        new_body: dict[str, Any] = {
            "id": rid,
            "name": existing.body.get("name", name) if existing else name,
            "type": KINDS[kind.lower()][1],
            "location": body["location"],
        }
        for k, v in body.items():
            if k not in ("id", "name", "type", "location", "systemData", "properties"):
                new_body[k] = clone(v)
        new_body["systemData"] = self._system_data(existing.body.get("systemData") if existing else None, caller)
        new_body["properties"] = {"provisioningState": "Succeeded", **props}
        if existing is not None:
            existing.body, existing.stale = new_body, None
            r = existing
        else:
            r = self._store_new(kind, new_body)
        return self._start_write(r, "PUT", api_version, caller, http, created=existing is None)

    def patch(
        self,
        kind: str,
        sub: str,
        rg: str,
        name: str,
        api_version: str,
        body: Any,
        caller: Caller | None,
        http: dict[str, str],
    ) -> Reply:
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", _INVALID_CONTENT)
        r = self.resources[kind].get(self._key(kind, sub, rg, name))
        if r is None:
            raise self._not_found(kind, rg, name)
        self._check_writable(r)
        body = self.write_modes.without_dropped(body)
        patch = {k: v for k, v in body.items() if k in UPDATABLE_TOP_LEVEL}
        if isinstance(patch.get("properties"), dict):
            patch["properties"] = {k: v for k, v in patch["properties"].items() if k not in READ_ONLY_PROPERTIES}
            if kind == "labs":
                patch["properties"].pop("state", None)
        new_body = replace_patch(r.body, patch) if self.patch_mode == "replace" else merge_patch(r.body, patch)
        if kind == "labs":  # osType is read-only (the service's, from the image): a PATCH never drops it
            vm, old_vm = (
                (new_body.get("properties") or {}).get("virtualMachineProfile"),
                (r.body.get("properties") or {}).get("virtualMachineProfile"),
            )
            if isinstance(vm, dict) and isinstance(old_vm, dict) and "osType" in old_vm:
                vm["osType"] = old_vm["osType"]
        new_body["systemData"] = self._system_data(r.body.get("systemData"), caller)
        before = clone(r.body)
        r.body = new_body
        reply = self._start_write(r, "PATCH", api_version, caller, http, created=False)
        lag = self.write_modes.stale_read_s
        r.stale = (time.monotonic() + lag, before) if lag > 0 and reply.status == 202 else None
        return reply

    def delete(
        self, kind: str, sub: str, rg: str, name: str, api_version: str, caller: Caller | None, http: dict[str, str]
    ) -> Reply:
        r = self.resources[kind].get(self._key(kind, sub, rg, name))
        if r is None:
            return Reply(204)
        self._check_writable(r)
        return self._start_write(r, "DELETE", api_version, caller, http, created=False)

    # ------------------------------------------------------------------ long-running operations
    def _start_write(
        self, r: Resource, method: str, api_version: str, caller: Caller | None, http: dict[str, str], *, created: bool
    ) -> Reply:
        fail_with = self.fail_next.pop(r.key, None)
        delay = self.lro_delay_s
        sub = parse_resource_id(r.body["id"])[1]
        op = Operation(
            id=str(uuid.uuid4()),
            sub=sub,
            kind=r.kind,
            key=r.key,
            resource_id=r.body["id"],
            method=method,
            api_version=api_version,
            start=utcnow(),
            done_at=time.monotonic() + delay,
            caller=caller,
            http=http,
            fail_with=fail_with,
        )
        props = r.body.setdefault("properties", {})
        if fail_with is not None:
            fail_with["action"] = {"PUT": "create" if created else "update", "PATCH": "update"}.get(method, "delete")
        props["provisioningState"] = {"PUT": "Creating" if created else "Updating", "PATCH": "Updating"}.get(
            method, "Deleting"
        )
        r.pending_op = op.id
        self.ops[op.id] = op
        while len(self.ops) > self.ops_limit:
            self.ops.pop(next(iter(self.ops)))
        self.schedule(max(delay, 0.0), lambda: self._complete(op))
        if method == "PATCH" and self.write_modes.patch_reply != "lro":
            return self._patch_reply(r, op, api_version)
        headers = self.operation_headers(op)
        if method == "DELETE":
            return Reply(202, None, headers)
        return Reply(201 if created else 202, self.view(r.body, api_version), headers)

    def _patch_reply(self, r: Resource, op: Operation, api_version: str) -> Reply:
        """The PATCH answers of the non-default write modes (see :class:`WriteModes`)."""
        if self.write_modes.patch_reply == "200":
            self._complete(op)  # done before the answer, as recorded real traffic showed
            return Reply(200, self.view(r.body, api_version))
        # "spec": the 2023-06-07 example: 202 with only a Location on the unlocalized
        # operationresults path, without an api-version.
        location = f"{self.endpoint}/subscriptions/{op.sub}/providers/{PROVIDER}/operationresults/{op.id}"
        return Reply(202, self.view(r.body, api_version), {"Location": location})

    def operation_url(self, op: Operation, location: bool = False) -> str:
        url = (
            f"{self.endpoint}/subscriptions/{op.sub}/providers/{PROVIDER}/operationResults/{op.id}"
            f"?api-version={op.api_version}"
        )
        return url + "&monitor=location" if location else url

    @staticmethod
    def _retry_after(op: Operation) -> str:
        # Whole seconds until the operation is due; 0 once it is (or with lro_delay_s=0).
        return str(max(0, math.ceil(op.done_at - time.monotonic() - 0.001)))

    def operation_headers(self, op: Operation) -> dict[str, str]:
        return {
            "Azure-AsyncOperation": self.operation_url(op),
            "Location": self.operation_url(op, location=True),
            "Retry-After": self._retry_after(op),
        }

    def _complete(self, op: Operation) -> None:
        if op.status != "InProgress":
            return
        r = self.resources[op.kind].get(op.key)
        mine = r is not None and r.pending_op == op.id
        op.end = utcnow()
        if op.fail_with is not None:
            op.status = "Failed"
            op.error = {"code": op.fail_with["code"], "message": op.fail_with["message"]}
            if mine and r is not None:
                props = r.body.setdefault("properties", {})
                props["provisioningState"] = "Failed"
                props["resourceOperationError"] = dict(op.fail_with)
                r.pending_op = None
            failure = (
                "Microsoft.Resources.ResourceDeleteFailure"
                if op.method == "DELETE"
                else ("Microsoft.Resources.ResourceWriteFailure")
            )
            self._emit(op, failure, "Failed")
            return
        op.status = "Succeeded"
        if op.method == "DELETE":
            if mine and r is not None:
                self._remove(r)
            self._emit(op, "Microsoft.Resources.ResourceDeleteSuccess", "Succeeded")
            return
        if mine and r is not None:
            props = r.body.setdefault("properties", {})
            props["provisioningState"] = "Succeeded"
            props.pop("resourceOperationError", None)
            r.pending_op = None
        self._emit(op, "Microsoft.Resources.ResourceWriteSuccess", "Succeeded")

    def operation_status(self, sub: str, op_id: str, api_version: str, location: bool) -> Reply:
        op = self.ops.get(op_id.lower()) or self.ops.get(op_id)
        if op is None or op.sub.lower() != sub.lower():
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The operation result '{op_id}' was not found under subscription '{sub}'.",
            )
        if op.status == "InProgress" and time.monotonic() >= op.done_at + 0.05:
            self._complete(op)  # the timer is late (loop busy); do not report a stale status
        if location:
            # ARM RPC Location semantics: 202 while running, then the final resource (PUT/PATCH)
            # or 204 (DELETE), or the error.
            if op.status == "InProgress":
                headers = {"Location": self.operation_url(op, True), "Retry-After": self._retry_after(op)}
                return Reply(202, None, headers)
            if op.status == "Failed":
                assert op.error is not None
                return Reply(400, {"error": op.error})
            r = self.resources[op.kind].get(op.key)
            if op.method == "DELETE" or r is None:
                return Reply(204)
            return Reply(200, self.view(r.body, api_version))
        body: dict[str, Any] = {
            "id": f"/subscriptions/{op.sub}/providers/{PROVIDER}/operationresults/{op.id}",
            "name": op.id,
            "status": op.status,
            "startTime": op.start,
        }
        headers: dict[str, str] = {}
        if op.end:
            body["endTime"] = op.end
            body["percentComplete"] = 100
        else:
            headers["Retry-After"] = self._retry_after(op)
        if op.error:
            body["error"] = op.error
        return Reply(200, body, headers)

    # ------------------------------------------------------------------ events
    def _emit(self, op: Operation, event_type: str, status: str) -> None:
        resource_type = op.kind
        action = "delete" if op.method == "DELETE" else "write"
        operation_name = f"{PROVIDER}/{resource_type}/{action}"
        _k, sub, _rg, _n = parse_resource_id(op.resource_id)
        caller = op.caller
        tenant = caller.tenant_id if caller else self.tenant_id
        evidence: dict[str, str] = {
            "role": "Contributor",
            "roleAssignmentScope": f"/subscriptions/{sub}",
            "roleAssignmentId": uuid.uuid5(uuid.NAMESPACE_URL, f"{sub}/{caller.object_id if caller else ''}").hex,
            "roleDefinitionId": "b24988ac618042a0ab8820f7382dd24c",
            "principalId": caller.object_id if caller else "",
            "principalType": "User" if caller is not None and caller.is_user else "ServicePrincipal",
        }
        data: dict[str, Any] = {
            "authorization": {"scope": op.resource_id, "action": operation_name, "evidence": evidence},
            "claims": event_claims(caller) if caller else {},
            "correlationId": op.http.get("correlationId", str(uuid.uuid4())),
            "httpRequest": {
                "clientRequestId": op.http.get("clientRequestId", ""),
                "clientIpAddress": op.http.get("clientIpAddress", "127.0.0.1"),
                "method": op.method,
                "url": op.http.get("url", ""),
            },
            "resourceProvider": PROVIDER,
            "resourceUri": op.resource_id,
            "operationName": operation_name,
            "status": status,
            "subscriptionId": sub,
            "tenantId": tenant,
        }
        self.events.append(
            {
                "id": str(uuid.uuid4()),
                "topic": f"/subscriptions/{sub}",
                "subject": op.resource_id,
                "eventType": event_type,
                "eventTime": event_time(),
                "data": data,
                "dataVersion": "2",
                "metadataVersion": "1",
            }
        )
