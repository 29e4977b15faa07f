"""The aiohttp HTTPS server: ARM routes for Microsoft.LabServices, a token endpoint, and /_emulator/."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from emulator.fault_mix import FaultMix
from emulator.host_identity import MANAGED_IDENTITY_CLIENT, MANAGED_IDENTITY_HEADER, MANAGED_IDENTITY_PATH
from emulator.store import _INVALID_CONTENT, API_VERSIONS, KINDS, PATCH_MODES, PROVIDER, ArmError, Reply, Store
from emulator.tokens import DEFAULT_TENANT_ID, TOKEN_LIFETIME_S, Caller, TokenError, TokenIssuer

_COLLECTION_SUB = re.compile(r"^/subscriptions/([^/]+)/providers/microsoft\.labservices/(labplans|labs)/?$", re.I)
_COLLECTION_RG = re.compile(
    r"^/subscriptions/([^/]+)/resourcegroups/([^/]+)/providers/microsoft\.labservices/(labplans|labs)/?$", re.I
)
_ITEM = re.compile(
    r"^/subscriptions/([^/]+)/resourcegroups/([^/]+)/providers/microsoft\.labservices/(labplans|labs)/([^/]+)/?$",
    re.I,
)
_OPERATION = re.compile(r"^/subscriptions/([^/]+)/providers/microsoft\.labservices/operationresults/([^/]+)/?$", re.I)
_PROVIDER = re.compile(r"^/subscriptions/([^/]+)/providers/microsoft\.labservices/?$", re.I)
_LABSERVICES = re.compile(r"^/subscriptions/([^/]+)/(?:resourcegroups/[^/]+/)?providers/microsoft\.labservices/", re.I)
_PERMISSIONS = re.compile(
    r"^/subscriptions/([^/]+)(?:/resourcegroups/([^/]+))?/providers/microsoft\.authorization/permissions/?$", re.I
)
# What ARM's Permissions - List answers by default: the built-in Contributor role's permissions.
CONTRIBUTOR_PERMISSIONS: list[dict[str, list[str]]] = [
    {
        "actions": ["*"],
        "notActions": [
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
        ],
        "dataActions": [],
        "notDataActions": [],
    }
]
_OIDC_CONFIG = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$", re.I)
_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$", re.I)
_API_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_REGEX_ONLY = set("^$()[]+?{}|\\")
WRITE_METHODS = {"PUT", "PATCH", "DELETE", "POST"}
_FAULT = web.RequestKey("fault", str)  # the fault injected instead of an answer, for the request log
WRITE_MODE_NAMES = ("patch_reply", "operation_status", "drop_written", "stale_read_s")


def load_seed(seed: dict[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    if seed is None:
        return {}
    if isinstance(seed, dict):
        return seed
    return json.loads(Path(seed).read_text(encoding="utf-8"))


@dataclass
class FaultRule:
    """Answer requests matching method + path with a fault, ``count`` times (None: every time)."""

    method: str = "*"
    path_pattern: str = ".*"
    status: int | None = None
    retry_after: float | None = None
    count: int | None = 1
    latency_ms: float = 0
    reset: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    hits: int = 0

    def __post_init__(self) -> None:
        pattern = self.path_pattern
        self._glob = pattern.startswith("/") and ".*" not in pattern and not (_REGEX_ONLY & set(pattern))
        if self._glob:
            self._re = re.compile(fnmatch.translate(pattern), re.I)
        else:
            self._re = re.compile(pattern, re.I)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.method not in ("*", "") and self.method.upper() != method:
            return False
        return bool(self._re.match(path) if self._glob else self._re.search(path))

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["glob"] = self._glob
        return d


@dataclass(frozen=True)
class WriteDenial:
    """RBAC-lite: ``client_id`` ("*" = anyone) may read but not write under ``scope`` (a resource id prefix)."""

    client_id: str
    scope: str

    def denies(self, caller: Caller, method: str, path: str) -> bool:
        if method not in WRITE_METHODS:
            return False
        if self.client_id != "*" and self.client_id.lower() != caller.client_id.lower():
            return False
        scope = self.scope.rstrip("/").lower()
        return path.lower() == scope or path.lower().startswith(scope + "/")


def authorization_failed(caller: Caller, method: str, path: str) -> ArmError:
    """ARM's 403 for a role assignment that lacks the write action (its real code and message shape)."""
    m = _ITEM.match(path)
    kind = KINDS[m.group(3).lower()][0] if m else "labPlans"
    action = f"{PROVIDER}/{kind}/{'delete' if method == 'DELETE' else 'write'}"
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{caller.client_id}' with object id '{caller.object_id}' does not have authorization to "
        f"perform action '{action}' over scope '{path}' or the scope is invalid. If access was recently granted, "
        "please refresh your credentials.",
    )


class _Reset(Exception):
    pass


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _arm_error(err: ArmError, extra: dict[str, str] | None = None) -> web.Response:
    headers = dict(err.headers)
    if extra:
        headers.update(extra)
    return _json_response(err.status, err.body(), headers)


class EmulatorServer:
    def __init__(
        self,
        *,
        seed: dict[str, Any] | str | os.PathLike[str] | None = None,
        latency_ms: float = 0,
        page_size: int = 100,
        lro_delay_s: float = 0.0,
        throttle: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        log_limit: int = 200_000,
        patch_mode: str = "merge",
        omit_off_delays: bool = False,
        **write_modes: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_ms = latency_ms
        self.throttle_enabled = throttle
        self.issuer = TokenIssuer(tenant_id)
        self.store = Store(
            tenant_id=tenant_id,
            page_size=page_size,
            lro_delay_s=lro_delay_s,
            log_limit=log_limit,
            patch_mode=patch_mode,
            omit_off_delays=omit_off_delays,
        )
        self.store.write_modes.set(**write_modes)
        self.request_log: deque[dict[str, Any]] = deque(maxlen=log_limit)
        self.faults: list[FaultRule] = []
        self.fault_mix: FaultMix | None = None
        # client id (lower case) or "*" -> what Permissions - List answers that caller, on every scope.
        self.permissions: dict[str, list[dict[str, list[str]]]] = {"*": CONTRIBUTOR_PERMISSIONS}
        self.write_denials: list[WriteDenial] = []
        self._seed = seed
        self._tmpdir = tempfile.mkdtemp(prefix="labguard-emulator-")
        self.ca_file = os.path.join(self._tmpdir, "emulator-ca.pem")
        self.endpoint = ""
        self._runner: web.AppRunner | None = None

    @property
    def tenant_id(self) -> str:
        return self.issuer.tenant_id

    @property
    def authority(self) -> str:
        return self.endpoint

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        ca = trustme.CA(organization_name="labguard emulator throwaway CA")
        names = [self.host] if self.host in ("127.0.0.1", "localhost") else [self.host, "127.0.0.1"]
        cert = ca.issue_cert(*dict.fromkeys([*names, "localhost"]))
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ssl_ctx)
        ca.cert_pem.write_to_path(self.ca_file)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_ctx, backlog=2048)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.endpoint = f"https://{self.host}:{self.port}"
        self.store.endpoint = self.endpoint
        self.issuer.add_audience(self.endpoint)
        loop = asyncio.get_running_loop()

        def schedule(delay: float, fn: Callable[[], None]) -> Any:
            return loop.call_later(delay, fn) if delay > 0 else loop.call_soon(fn)

        self.store.schedule = schedule
        if self._seed is not None:
            self.store.seed(load_seed(self._seed))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    # ------------------------------------------------------------------ control helpers (loop thread)
    def add_fault(self, **rule: Any) -> FaultRule:
        f = FaultRule(**rule)
        self.faults.append(f)
        return f

    def set_fault_mix(self, **mix: Any) -> dict[str, Any]:
        """Start a probability-based fault mix (replacing any earlier one); see :class:`FaultMix`."""
        self.fault_mix = FaultMix(**mix)
        return self.fault_mix.public()

    def clear_fault_mix(self) -> dict[str, Any] | None:
        """Stop the mix; returns its final counts (None if there was none)."""
        mix, self.fault_mix = self.fault_mix, None
        return None if mix is None else mix.public()

    def deny_writes(self, client_id: str = "*", scope: str = "/subscriptions") -> WriteDenial:
        denial = WriteDenial(client_id, scope)
        self.write_denials.append(denial)
        return denial

    def requests(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.request_log]

    def set_permissions(self, permissions: list[dict[str, list[str]]] | None, client_id: str = "*") -> None:
        """What ``GET .../providers/Microsoft.Authorization/permissions`` answers ``client_id`` (None: the default)."""
        key = client_id.lower()
        if permissions is None:
            self.permissions.pop(key, None)
            if key == "*":
                self.permissions["*"] = CONTRIBUTOR_PERMISSIONS
            return
        self.permissions[key] = [
            {k: [str(a) for a in entry.get(k, [])] for k in ("actions", "notActions", "dataActions", "notDataActions")}
            for entry in permissions
        ]

    def config(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "ca_file": self.ca_file,
            "tenant_id": self.tenant_id,
            "authority": self.authority,
            "latency_ms": self.latency_ms,
            "page_size": self.store.page_size,
            "lro_delay_s": self.store.lro_delay_s,
            "throttle": self.throttle_enabled,
            "patch_mode": self.store.patch_mode,
            "omit_off_delays": self.store.omit_off_delays,
            "api_versions": list(API_VERSIONS),
            **self.store.write_modes.public(),
        }

    def set_config(self, **cfg: Any) -> dict[str, Any]:
        if "latency_ms" in cfg:
            self.latency_ms = float(cfg["latency_ms"])
        if "page_size" in cfg:
            self.store.page_size = int(cfg["page_size"])
        if "lro_delay_s" in cfg:
            self.store.lro_delay_s = float(cfg["lro_delay_s"])
        if "patch_mode" in cfg:
            if cfg["patch_mode"] not in PATCH_MODES:
                raise ValueError(f"patch_mode must be one of {PATCH_MODES}")
            self.store.patch_mode = str(cfg["patch_mode"])
        if "omit_off_delays" in cfg:
            self.store.omit_off_delays = bool(cfg["omit_off_delays"])
        if "throttle" in cfg:
            self.throttle_enabled = bool(cfg["throttle"])
            self.store.buckets.clear()
        self.store.write_modes.set(**{k: v for k, v in cfg.items() if k in WRITE_MODE_NAMES})
        return self.config()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_emulator" or path.startswith("/_emulator/"):
            try:
                return await self._control(request)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
                return _json_response(400, {"error": {"code": "BadControlRequest", "message": str(exc)}})
        t0 = time.perf_counter()
        principal: str | None = None
        status: int | None = None
        kind = "arm"
        logged_body: Any = None
        item = _ITEM.match(path)
        stored = self.store.resources[KINDS[item.group(3).lower()][0]].get(path.rstrip("/").lower()) if item else None
        state = stored.body.get("properties", {}).get("provisioningState") if stored is not None else None
        try:
            if _TOKEN.match(path) or _OIDC_CONFIG.match(path):
                kind = "identity"
                resp, principal = await self._identity(request)
            elif path == MANAGED_IDENTITY_PATH:
                kind = "identity"
                resp, principal = self._managed_identity(request)
            else:
                if request.can_read_body:
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        logged_body = json.loads(await request.read())
                resp, principal = await self._arm(request)
            status = resp.status
            return resp
        except _Reset:
            raise ConnectionResetError("fault: connection reset") from None
        finally:
            self.request_log.append(
                {
                    "method": request.method,
                    "path": path,
                    "query": dict(request.query),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                    "principal": principal,
                    "body": logged_body,
                    "kind": kind,
                    "time": time.time(),
                    "state": state,  # the item's provisioningState when the request arrived
                    "fault": request.get(_FAULT),  # the fault injected instead of an answer, if any
                }
            )

    # ------------------------------------------------------------------ identity
    def _managed_identity(self, request: web.Request) -> tuple[web.Response, str | None]:
        """The App Service managed identity protocol (api-version 2019-08-01), as the Functions host serves it:
        GET with X-IDENTITY-HEADER, ``resource`` (no ``/.default``) and an optional ``client_id``; the answer
        carries ``expires_on`` in epoch seconds, as text."""
        if request.headers.get("X-IDENTITY-HEADER") != MANAGED_IDENTITY_HEADER:
            return _json_response(401, {"error": "invalid_request", "error_description": "bad X-IDENTITY-HEADER"}), None
        if request.method != "GET" or request.query.get("api-version") != "2019-08-01":
            return _json_response(
                400, {"error": "invalid_request", "error_description": "GET, api-version 2019-08-01"}
            ), None
        resource = request.query.get("resource", "")
        if not resource or resource.endswith("/.default"):
            return _json_response(
                400, {"error": "invalid_resource", "error_description": "a resource, not a scope"}
            ), None
        client_id = request.query.get("client_id") or MANAGED_IDENTITY_CLIENT
        audience = resource.rstrip("/") + "/"
        body = {
            "access_token": self.issuer.issue(client_id, audience=audience),
            "expires_on": str(int(time.time()) + TOKEN_LIFETIME_S),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
        return _json_response(200, body), client_id

    async def _identity(self, request: web.Request) -> tuple[web.Response, str | None]:
        m = _OIDC_CONFIG.match(request.path)
        tenant = (m or _TOKEN.match(request.path)).group(1)  # type: ignore[union-attr]
        if tenant.lower() != self.tenant_id.lower():
            return _json_response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have "
                    "the correct tenant ID and are signing into the correct cloud.",
                    "error_codes": [90002],
                },
            ), None
        base = f"{self.endpoint}/{self.tenant_id}"
        if m:
            return _json_response(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "jwks_uri": f"{base}/discovery/v2.0/keys",
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                    "response_types_supported": ["code", "id_token", "token"],
                    "tenant_region_scope": "EU",
                },
            ), None
        if request.method != "POST":
            return _json_response(405, {"error": "invalid_request", "error_description": "POST required"}), None
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        grant = str(form.get("grant_type", ""))
        if grant != "client_credentials":
            return _json_response(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"AADSTS70003: The app requested an unsupported grant type '{grant}'.",
                },
            ), client_id or None
        if not client_id or not str(form.get("client_secret", "")):
            return _json_response(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            ), client_id or None
        scopes = str(form.get("scope", "")).split()
        resource = next((s[: -len(".default")] for s in scopes if s.endswith("/.default")), None)
        if resource is None:
            return _json_response(
                400,
                {
                    "error": "invalid_scope",
                    "error_description": "AADSTS1002012: The provided value for scope is not valid. Client "
                    "credential flows must have a scope value with /.default suffixed to the resource identifier.",
                },
            ), client_id
        audience = resource.rstrip("/") + "/"
        token = self.issuer.issue(client_id, audience=audience)
        return _json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "ext_expires_in": TOKEN_LIFETIME_S,
                "access_token": token,
            },
        ), client_id

    # ------------------------------------------------------------------ ARM
    def _arm_headers(self, request: web.Request) -> dict[str, str]:
        rid = str(uuid.uuid4())
        return {
            "x-ms-request-id": rid,
            "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id", rid),
            "x-ms-routing-request-id": f"LOCAL:{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}:{rid}",
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
        }

    async def _arm(self, request: web.Request) -> tuple[web.StreamResponse, str | None]:
        headers = self._arm_headers(request)
        caller: Caller | None = None
        auth = request.headers.get("Authorization", "")
        challenge = (
            f'Bearer authorization_uri="{self.endpoint}/{self.tenant_id}", error="invalid_token", '
            "error_description=\"The authentication failed because of missing 'Authorization' header.\""
        )
        if not auth:
            err = ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
            return _arm_error(err, {**headers, "WWW-Authenticate": challenge}), None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            err = ArmError(
                401,
                "AuthenticationFailedInvalidHeader",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            )
            return _arm_error(err, headers), None
        try:
            caller = self.issuer.verify(token.strip())
        except TokenError as exc:
            return _arm_error(ArmError(401, exc.code, exc.message), headers), None
        principal = caller.client_id
        method = request.method
        path = request.path

        fault = next((f for f in self.faults if f.matches(method, path)), None)
        if fault is None and self.fault_mix is not None:
            fault = self._drawn_fault(request, method, path, principal)
        if fault is not None:
            fault.hits += 1
            request[_FAULT] = "reset" if fault.reset else str(fault.status or "latency")
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.reset:
                self._reset_connection(request)
                raise _Reset
            if fault.status:
                return self._fault_response(fault, headers), principal

        sub_match = re.match(r"^/subscriptions/([^/]+)", path, re.I)
        if self.throttle_enabled and sub_match:
            write = method in WRITE_METHODS
            wait, remaining = self.store.throttle(sub_match.group(1), write, time.monotonic())
            if wait > 0:
                err = ArmError(
                    429,
                    "TooManyRequests",
                    f"Number of {'write' if write else 'read'} requests for subscription '{sub_match.group(1)}' "
                    "exceeded the limit. Please try again after some time.",
                )
                return _arm_error(err, {**headers, "Retry-After": str(max(1, int(wait + 0.999)))}), principal
            headers["x-ms-ratelimit-remaining-subscription-" + ("writes" if write else "reads")] = str(remaining)

        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)

        if any(denial.denies(caller, method, path) for denial in self.write_denials):
            return _arm_error(authorization_failed(caller, method, path), headers), principal

        try:
            reply = await self._route(request, caller)
        except ArmError as err:
            return _arm_error(err, headers), principal
        headers.update(reply.headers)
        return _json_response(reply.status, reply.body, headers), principal

    def _drawn_fault(self, request: web.Request, method: str, path: str, client_id: str | None) -> FaultRule | None:
        """The fault mix's draw for this request, as a one-off rule."""
        assert self.fault_mix is not None
        kind = self.fault_mix.draw(method, path, client_id)
        if kind is None:
            return None
        if kind == "reset":
            return FaultRule(reset=True)
        retry_after = self.fault_mix.retry_after if kind == "429" else None
        return FaultRule(status=int(kind), retry_after=retry_after)

    def _fault_response(self, fault: FaultRule, headers: dict[str, str]) -> web.Response:
        status = int(fault.status or 500)
        codes = {
            429: ("TooManyRequests", "The request was throttled (fault injected by the emulator)."),
            409: ("AnotherOperationInProgress", "Another operation is in progress (fault injected by the emulator)."),
            500: ("InternalServerError", "Encountered internal server error (fault injected by the emulator)."),
            503: ("ServiceUnavailable", "The service is unavailable (fault injected by the emulator)."),
        }
        code, message = codes.get(status, ("InjectedFault", f"Fault {status} injected by the emulator."))
        extra = dict(headers)
        if fault.retry_after is not None:
            extra["Retry-After"] = (
                str(int(fault.retry_after)) if float(fault.retry_after).is_integer() else str(fault.retry_after)
            )
        return _arm_error(ArmError(status, code, message), extra)

    @staticmethod
    def _reset_connection(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    @staticmethod
    def _api_version(request: web.Request) -> str:
        version = request.query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not _API_VERSION_SHAPE.match(version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{', '.join(API_VERSIONS)}'.",
            )
        if version not in API_VERSIONS:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location 'global' and API version '{version}' for type "
                f"'{PROVIDER}'. The supported api-versions are '{', '.join(API_VERSIONS)}'.",
            )
        return version

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise ArmError(400, "InvalidRequestContent", _INVALID_CONTENT)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArmError(
                400,
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: '{exc}'.",
            ) from exc

    async def _route(self, request: web.Request, caller: Caller) -> Reply:
        path = request.path
        method = request.method
        store = self.store
        m = _PERMISSIONS.match(path) or _PROVIDER.match(path)
        if m:  # Microsoft.Authorization and Microsoft.Resources: their own api-versions
            if not request.query.get("api-version"):
                self._api_version(request)  # ARM's MissingApiVersionParameter
            if method != "GET":
                raise self._method_not_allowed(method, path)
            if _PROVIDER.match(path):
                return store.provider(m.group(1))
            entries = self.permissions.get(caller.client_id.lower(), self.permissions["*"])
            return Reply(200, {"value": [dict(entry) for entry in entries]})
        m = _LABSERVICES.match(path)
        if m:
            store.check_registered(m.group(1))
        api = self._api_version(request)
        http = {
            "clientRequestId": request.headers.get("x-ms-client-request-id", ""),
            "correlationId": request.headers.get("x-ms-correlation-request-id", str(uuid.uuid4())),
            "clientIpAddress": request.remote or "127.0.0.1",
            "url": f"{self.endpoint}{request.path_qs}",
        }
        m = _ITEM.match(path)
        if m:
            sub, rg, seg, name = m.groups()
            kind = KINDS[seg.lower()][0]
            if method == "GET":
                return store.get(kind, sub, rg, name, api)
            if method == "PUT":
                return store.put(kind, sub, rg, name, api, await self._body(request), caller, http)
            if method == "PATCH":
                return store.patch(kind, sub, rg, name, api, await self._body(request), caller, http)
            if method == "DELETE":
                return store.delete(kind, sub, rg, name, api, caller, http)
            raise self._method_not_allowed(method, path)
        m = _COLLECTION_RG.match(path) or _COLLECTION_SUB.match(path)
        if m:
            if method != "GET":
                raise self._method_not_allowed(method, path)
            groups = m.groups()
            sub, rg, seg = groups if len(groups) == 3 else (groups[0], None, groups[1])
            top = request.query.get("$top")
            return store.list(
                KINDS[seg.lower()][0],
                sub,
                rg,
                api,
                request.query.get("$skipToken") or request.query.get("$skiptoken"),
                path,
                int(top) if top and top.isdigit() else None,
            )
        m = _OPERATION.match(path)
        if m:
            if method != "GET":
                raise self._method_not_allowed(method, path)
            self._operation_refusal(m.group(1))
            return store.operation_status(m.group(1), m.group(2), api, request.query.get("monitor") == "location")
        raise ArmError(
            404,
            "InvalidResourceType",
            f"The resource type could not be found for path '{path}' and api version '{api}' "
            "(the emulator models labPlans, labs and operationResults of Microsoft.LabServices only).",
        )

    def _operation_refusal(self, sub: str) -> None:
        """The ``operation_status`` write mode: the operation URL answers 403 (role) or 400."""
        status = self.store.write_modes.operation_status
        if status == 403:
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client does not have authorization to perform action "
                f"'Microsoft.LabServices/operationResults/read' over scope '/subscriptions/{sub}' "
                "(write mode operation_status=403).",
            )
        if status is not None:
            raise ArmError(status, "BadRequest", f"The operation result cannot be read (write mode {status}).")

    @staticmethod
    def _method_not_allowed(method: str, path: str) -> ArmError:
        return ArmError(
            405,
            "MethodNotAllowed",
            f"The requested resource does not support http method '{method}' for path '{path}'.",
        )

    # ------------------------------------------------------------------ /_emulator/
    async def _control(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        method = request.method
        store = self.store

        async def body() -> Any:
            raw = await request.read()
            return json.loads(raw) if raw else {}

        if path == "/_emulator/health":
            return _json_response(200, {"ok": True})
        if path == "/_emulator/config":
            if method == "GET":
                return _json_response(200, self.config())
            return _json_response(200, self.set_config(**(await body())))
        if path == "/_emulator/requests":
            if method == "DELETE":
                self.request_log.clear()
                return _json_response(204, None)
            return _json_response(200, {"value": self.requests()})
        if path == "/_emulator/events":
            if method == "DELETE":
                store.events.clear()
                return _json_response(204, None)
            return _json_response(200, {"value": list(store.events)})
        if path == "/_emulator/seed" and method == "POST":
            if request.query.get("reset") in ("1", "true"):
                store.reset()
            return _json_response(200, {"seeded": store.seed(await body())})
        if path == "/_emulator/reset" and method == "POST":
            store.reset()
            return _json_response(200, {"ok": True})
        if path == "/_emulator/resources" and method == "GET":
            r = store.lookup(request.query.get("id", ""))
            return _json_response(200, r.body) if r else _json_response(404, {"error": {"code": "NotFound"}})
        if path == "/_emulator/faults":
            if method == "POST":
                return _json_response(201, self.add_fault(**(await body())).public())
            if method == "DELETE":
                self.faults.clear()
                return _json_response(204, None)
            return _json_response(200, {"value": [f.public() for f in self.faults]})
        if path == "/_emulator/fault-mix":
            if method == "POST":
                return _json_response(201, self.set_fault_mix(**(await body())))
            if method == "DELETE":
                return _json_response(200, self.clear_fault_mix())
            return _json_response(200, self.fault_mix.public() if self.fault_mix else None)
        if path == "/_emulator/deny-writes":
            if method == "POST":
                b = await body()
                return _json_response(
                    201, asdict(self.deny_writes(b.get("client_id", "*"), b.get("scope", "/subscriptions")))
                )
            if method == "DELETE":
                self.write_denials.clear()
                return _json_response(204, None)
        if path == "/_emulator/fail" and method == "POST":
            b = await body()
            store.fail_resource(b["id"], b.get("error"), next_write=bool(b.get("next_write", False)))
            r = store.lookup(b["id"])
            return _json_response(200, r.body if r else None)
        if path == "/_emulator/providers" and method == "POST":
            b = await body()
            store.set_registered(str(b["subscription"]), bool(b.get("registered", True)))
            return _json_response(200, store.provider(str(b["subscription"])).body)
        if path == "/_emulator/permissions" and method == "POST":
            b = await body()
            self.set_permissions(b.get("permissions"), str(b.get("client_id") or "*"))
            return _json_response(200, {"value": self.permissions})
        if path == "/_emulator/state" and method == "POST":
            b = await body()
            return _json_response(200, store.set_state(b["id"], b["provisioningState"]))
        if path == "/_emulator/token" and method == "POST":
            b = await body()
            if b.get("user"):  # a person's delegated token (as `az login` gets one)
                upn = str(b["user"])
                return _json_response(
                    200,
                    {
                        "access_token": self.issuer.issue_user(upn, str(b.get("name", "")), extra=b.get("claims")),
                        "principal_id": self.issuer.user_principal_id(upn),
                    },
                )
            client_id = b.get("client_id", "emulator-client")
            return _json_response(
                200,
                {
                    "access_token": self.issuer.issue(client_id),
                    "principal_id": self.issuer.principal_id(client_id),
                },
            )
        return _json_response(404, {"error": {"code": "NotFound", "message": f"no control route {method} {path}"}})
