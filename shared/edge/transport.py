"""The ARM pipeline's transport: azure-core's AioHttpTransport, minus its per-request work labguard never uses.

Measured over the local endpoint (the same GET 3,000 times, ``time.process_time``): a plain aiohttp GET
costs 0.23 ms of CPU, azure-core's AioHttpTransport alone 0.33 ms, and this transport 0.27 ms. The difference
is per-request work for options labguard never sets (proxies, per-request TLS settings, multipart and file
bodies, streamed downloads) and a response object that routes every attribute through azure-core's
backwards-compatibility layer. A sweep makes several thousand calls, so that is most of what azure-core adds
to each of them (issue 18).

What labguard sends is always the same shape: an ``azure.core.rest.HttpRequest`` with no body or a JSON
body, answered by a body read whole. Exactly that goes the short way; anything else (a stream, a proxy,
files, per-request TLS settings, a legacy request) goes through azure-core's own ``send`` unchanged. The
short way keeps azure-core's contract: the same timeouts (the connection configuration, or the
``connection_timeout``/``read_timeout`` the retry policy sets), no redirects followed (a bearer token never
follows one), no ``Content-Type`` invented for an empty body, and aiohttp's errors mapped to the azure-core
exceptions the retry policy acts on, as azure-core maps them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import ConnectionTimeoutError
from azure.core.exceptions import (
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest

_NO_CONTENT_TYPE = ("Content-Type",)

#: Per-request options the short way understands: the timeouts azure-core's retry policy may set.
_TIMEOUT_OPTIONS = frozenset({"connection_timeout", "read_timeout"})


class LeanAioHttpTransport(AioHttpTransport):  # type: ignore[misc]
    """AioHttpTransport over a session the caller owns; labguard's requests take the short way (see the module)."""

    def __init__(self, *, session: aiohttp.ClientSession) -> None:
        super().__init__(session=session, session_owner=False)
        self._timeouts: dict[tuple[Any, Any], aiohttp.ClientTimeout] = {}

    async def send(self, request: Any, *, stream: bool = False, proxies: Any = None, **config: Any) -> Any:
        if stream or proxies or not _plain(request) or not _TIMEOUT_OPTIONS.issuperset(config):
            return await super().send(request, stream=stream, proxies=proxies, **config)
        data = request._data
        try:
            async with self.session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=data,
                timeout=self._timeout(config),
                allow_redirects=False,
                # No Content-Type invented for an empty body (aiohttp adds one to an empty POST); a GET never
                # gets one, and skipping costs aiohttp a header copy per request, so a GET is not asked to.
                skip_auto_headers=None if data is not None or request.method == "GET" else _NO_CONTENT_TYPE,
            ) as answer:
                body = await answer.read()
                return _Response(request, answer.status, answer.reason or "", answer.headers, body)
        except aiohttp.ClientPayloadError as err:  # the body was cut short: as azure-core's read() maps it
            raise IncompleteReadError(err, error=err) from err
        except aiohttp.ClientResponseError as err:
            raise ServiceResponseError(err, error=err) from err
        except ConnectionTimeoutError as err:  # before asyncio.TimeoutError, its base: as azure-core maps it
            raise ServiceRequestTimeoutError(err, error=err) from err
        except TimeoutError as err:
            raise ServiceResponseTimeoutError(err, error=err) from err
        except aiohttp.ClientError as err:
            raise ServiceRequestError(err, error=err) from err

    def _timeout(self, config: Mapping[str, Any]) -> aiohttp.ClientTimeout:
        """azure-core's socket timeouts (connect, read), built once per pair rather than per request."""
        key = (
            config.get("connection_timeout", self.connection_config.timeout),
            config.get("read_timeout", self.connection_config.read_timeout),
        )
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1])
        return timeout


def _plain(request: Any) -> bool:
    """A rest request with no body or a text/bytes body (JSON), no files: what labguard sends."""
    if type(request) is not HttpRequest or request._files:
        return False
    data = request._data
    return data is None or isinstance(data, (str, bytes))


class _Response(AsyncHttpResponse):
    """A response read whole: status, headers (case-insensitive, as aiohttp gives them) and body."""

    def __init__(self, request: HttpRequest, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self._request = request
        self._status = status
        self._reason = reason
        self._headers = headers
        self._content = body
        self._encoding: str | None = None

    @property
    def request(self) -> HttpRequest:
        return self._request

    @property
    def status_code(self) -> int:
        return self._status

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def headers(self) -> Mapping[str, str]:  # type: ignore[override]
        return self._headers

    @property
    def content_type(self) -> str | None:
        return self._headers.get("Content-Type")

    @property
    def url(self) -> str:
        return str(self._request.url)

    @property
    def is_closed(self) -> bool:
        return True

    @property
    def is_stream_consumed(self) -> bool:
        return True

    @property
    def encoding(self) -> str | None:
        return self._encoding

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        self._encoding = value

    @property
    def content(self) -> bytes:
        return self._content

    def body(self) -> bytes:
        """The legacy accessor azure-core's older policies (and labguard's adapter) read."""
        return self._content

    def text(self, encoding: str | None = None) -> str:
        return self._content.decode(encoding or self._encoding or "utf-8-sig", errors="replace")

    def json(self) -> Any:
        return json.loads(self._content)

    def raise_for_status(self) -> None:
        if self._status >= 400:
            raise HttpResponseError(response=self)

    async def read(self) -> bytes:
        return self._content

    async def iter_raw(self, **kwargs: Any) -> AsyncIterator[bytes]:
        yield self._content

    async def iter_bytes(self, **kwargs: Any) -> AsyncIterator[bytes]:
        yield self._content

    async def close(self) -> None:
        return None

    async def __aexit__(self, *args: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<AsyncHttpResponse: {self._status} {self._reason}>"
