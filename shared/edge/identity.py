"""The app's Azure credential: the Functions host's managed identity, or DefaultAzureCredential elsewhere.

In the Functions host (Flex Consumption included) the app's managed identity is one GET to an endpoint the
platform gives the app: ``IDENTITY_ENDPOINT`` with the secret in ``IDENTITY_HEADER`` (the App Service
managed identity protocol, api-version 2019-08-01). :class:`HostManagedIdentity` makes that GET through
azure-core (its retry policy, this package's transport) and keeps each token until five minutes before it
expires. Everywhere else (a laptop with ``az login``, a service principal in ``AZURE_CLIENT_SECRET``,
workload identity) :func:`app_credential` returns azure-identity's DefaultAzureCredential, as before.

Why not azure-identity in the host too: whatever credential one imports from it, its package imports them
all, and with them msal, requests, urllib3 and cryptography. Measured on a new instance's first event, that
import is about 120 ms of a first invocation whose own time issue 18 asks to halve; the GET it replaces is
what azure-identity's own App Service credential sends. The choice follows DefaultAzureCredential's order:
a service principal or workload identity configured in the environment still wins over the managed identity.

Tokens and the header secret are never logged, and never shown in an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

from shared.core.text import shown

IDENTITY_API_VERSION = "2019-08-01"
#: What DefaultAzureCredential tries before a managed identity: a service principal (secret, certificate or
#: user name) and workload identity. With any of them set, the choice is left to DefaultAzureCredential.
_BEFORE_MANAGED_IDENTITY = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
)
_REFRESH_BEFORE_S = 300  # a token is fetched again five minutes before it expires


def app_credential(env: Mapping[str, str] | None = None, *, session: Any | None = None) -> Any:
    """The credential every Azure client of the app uses: the host's managed identity when the host offers
    one (and no service principal is configured), else DefaultAzureCredential. ``session``: an aiohttp session
    to send through (the caller keeps owning it)."""
    env = os.environ if env is None else env
    endpoint, secret = env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER")
    if endpoint and secret and not any(env.get(name) for name in _BEFORE_MANAGED_IDENTITY):
        return HostManagedIdentity(endpoint, secret, client_id=env.get("AZURE_CLIENT_ID") or None, session=session)
    from azure.identity.aio import DefaultAzureCredential

    if session is None:
        return DefaultAzureCredential()
    from azure.core.pipeline.transport import AioHttpTransport

    return DefaultAzureCredential(transport=AioHttpTransport(session=session, session_owner=False))


class HostManagedIdentity:
    """An async token credential (azure-core's ``AsyncTokenCredential`` and ``AsyncSupportsTokenInfo``) for the
    Functions host's managed identity; ``client_id`` names a user-assigned identity (``AZURE_CLIENT_ID``)."""

    def __init__(self, endpoint: str, secret: str, *, client_id: str | None = None, session: Any | None = None) -> None:
        self._endpoint = endpoint
        self._secret = secret
        self._client_id = client_id
        self._session = session
        self._own_session: Any = None
        self._pipeline: Any = None
        self._tokens: dict[str, AccessTokenInfo] = {}
        self._lock = asyncio.Lock()
        self.fetches = 0  # tokens fetched from the endpoint (not from the cache)

    def __repr__(self) -> str:  # never the secret
        return f"HostManagedIdentity(client_id={self._client_id!r})"

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        info = await self._token(scopes, fresh=claims is not None)
        return AccessToken(info.token, info.expires_on)

    async def get_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> AccessTokenInfo:
        return await self._token(scopes, fresh=bool(options and options.get("claims")))

    async def _token(self, scopes: tuple[str, ...], *, fresh: bool) -> AccessTokenInfo:
        if len(scopes) != 1:
            raise ValueError("a managed identity token is for exactly one scope")
        resource = scopes[0].removesuffix("/.default")
        async with self._lock:  # one fetch for many callers that find no token at once
            cached = self._tokens.get(resource)
            if cached is not None and not fresh and cached.expires_on - time.time() > _REFRESH_BEFORE_S:
                return cached
            token = await self._fetch(resource)
            self._tokens[resource] = token
            return token

    async def _fetch(self, resource: str) -> AccessTokenInfo:
        from azure.core.rest import HttpRequest

        params = {"api-version": IDENTITY_API_VERSION, "resource": resource}
        if self._client_id:
            params["client_id"] = self._client_id
        request = HttpRequest("GET", self._endpoint, params=params, headers={"X-IDENTITY-HEADER": self._secret})
        try:
            response = (await self._get_pipeline().run(request)).http_response
        except (ServiceRequestError, ServiceResponseError) as exc:
            why = shown(str(exc.message if hasattr(exc, "message") else exc), quote=False, limit=200)
            raise ClientAuthenticationError(f"managed identity endpoint unreachable: {why}") from None
        self.fetches += 1
        body = _json(response.content)
        token, expires_on = body.get("access_token"), _epoch(body.get("expires_on"))
        if response.status_code != 200 or not isinstance(token, str) or not token or expires_on is None:
            why = body.get("error_description") or body.get("error") or body.get("message") or "no token in the answer"
            raise ClientAuthenticationError(
                f"managed identity endpoint answered {response.status_code}: {shown(str(why), limit=200)}"
            )
        return AccessTokenInfo(token, expires_on, token_type=str(body.get("token_type") or "Bearer"))

    def _get_pipeline(self) -> Any:
        if self._pipeline is None:
            import aiohttp
            from azure.core.pipeline import AsyncPipeline
            from azure.core.pipeline.policies import AsyncRetryPolicy

            from shared.edge.transport import LeanAioHttpTransport

            session = self._session
            if session is None:
                session = self._own_session = aiohttp.ClientSession()
            # azure-core's retries: 429 and 5xx with backoff, as azure-identity retries this endpoint.
            self._pipeline = AsyncPipeline(LeanAioHttpTransport(session=session), policies=[AsyncRetryPolicy()])
        return self._pipeline

    async def close(self) -> None:
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None
        self._pipeline = None

    async def __aenter__(self) -> HostManagedIdentity:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _epoch(value: object) -> int | None:
    """``expires_on`` as the 2019-08-01 protocol writes it: epoch seconds (text or number)."""
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
