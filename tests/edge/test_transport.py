"""The lean ARM transport (shared/edge/transport.py) behaves as azure-core's AioHttpTransport does.

Each case runs one real aiohttp server answer through both transports, each inside a real azure-core
pipeline with azure-core's retry policy (retries off, so the first failure is what comes out), and
compares what comes out: the status, headers and body of an answer, what the server received (method,
body, Content-Type), and the azure-core exception class of each fault (connection refused, a body cut
short, a read that stalls past the read timeout). The retry policy acts on those classes, so a
transport that mapped a fault differently would change what labguard retries.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.core.exceptions import AzureError
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest

from shared.edge.transport import LeanAioHttpTransport

seen: list[dict[str, Any]] = []


async def _answer(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    seen.append(
        {
            "method": request.method,
            "body": body,
            "content_type": request.headers.get("Content-Type"),
            "path": request.path,
        }
    )
    if request.path == "/cut":  # promises 1,000 bytes, sends 10, closes: the body is cut short
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"partial"')
        assert request.transport is not None
        request.transport.close()
        return response
    if request.path == "/stall":  # headers at once, then nothing for longer than the read timeout
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await asyncio.sleep(2)
        return response
    status = 429 if request.path == "/busy" else 200
    return web.json_response(
        {"id": "/x", "echo": json.loads(body) if body else None},
        status=status,
        headers={"Retry-After": "7", "X-Ms-Thing": "a"},
    )


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen.clear()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _pipelines(session: aiohttp.ClientSession, read_timeout: float = 30) -> dict[str, AsyncPipeline[Any, Any]]:
    transports = {
        "azure-core": AioHttpTransport(session=session, session_owner=False, read_timeout=read_timeout),
        "lean": LeanAioHttpTransport(session=session),
    }
    transports["lean"].connection_config.read_timeout = read_timeout
    return {name: AsyncPipeline(t, policies=[AsyncRetryPolicy(retry_total=0)]) for name, t in transports.items()}


async def _outcome(pipeline: AsyncPipeline[Any, Any], request: HttpRequest) -> Any:
    try:
        response = (await pipeline.run(request)).http_response
    except AzureError as exc:
        return type(exc).__name__
    await response.read()
    return (
        response.status_code,
        response.headers.get("retry-after"),
        response.headers.get("x-ms-thing"),
        response.content_type.split(";")[0],
        json.loads(response.content),
        response.text() == response.content.decode(),
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/plan", None),
        ("PATCH", "/plan", {"properties": {"a": "Ünïcode"}}),
        ("GET", "/busy", None),
        ("DELETE", "/plan", None),
        ("POST", "/plan", None),
    ],
)
async def test_answers_and_requests_match_azure_core(server: str, method: str, path: str, body: Any) -> None:
    async with aiohttp.ClientSession() as session:
        outcomes = {}
        for name, pipeline in _pipelines(session).items():
            request = (
                HttpRequest(method, server + path, json=body)
                if body is not None
                else HttpRequest(method, server + path)
            )
            outcomes[name] = await _outcome(pipeline, request)
    assert outcomes["lean"] == outcomes["azure-core"]
    assert isinstance(outcomes["lean"], tuple) and outcomes["lean"][0] in (200, 429)
    # What the server received: the same method, body and Content-Type (none invented for an empty body).
    assert seen[0] == seen[1]
    assert seen[0]["content_type"] == ("application/json" if body is not None else None)


@pytest.mark.parametrize(
    ("path", "expected"), [("/cut", "IncompleteReadError"), ("/stall", "ServiceResponseTimeoutError")]
)
async def test_faults_map_to_azure_cores_exceptions(server: str, path: str, expected: str) -> None:
    async with aiohttp.ClientSession() as session:
        outcomes = {
            name: await _outcome(pipeline, HttpRequest("GET", server + path))
            for name, pipeline in _pipelines(session, read_timeout=0.5).items()
        }
    assert outcomes == {"azure-core": expected, "lean": expected}


async def test_refused_connection_maps_as_azure_core() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        outcomes = {
            name: await _outcome(pipeline, HttpRequest("GET", f"http://127.0.0.1:{port}/plan"))
            for name, pipeline in _pipelines(session).items()
        }
    assert outcomes == {"azure-core": "ServiceRequestError", "lean": "ServiceRequestError"}


async def test_what_labguard_never_sends_takes_azure_cores_own_path(server: str) -> None:
    """A streamed download gets azure-core's own response object (so its streaming contract holds)."""
    async with aiohttp.ClientSession() as session:
        pipeline = _pipelines(session)["lean"]
        streamed = (await pipeline.run(HttpRequest("GET", server + "/plan"), stream=True)).http_response
        plain = (await pipeline.run(HttpRequest("GET", server + "/plan"))).http_response
        chunks = [chunk async for chunk in streamed.iter_bytes()]
        await streamed.close()
    assert type(streamed).__module__.startswith("azure.core")
    assert type(plain).__module__ == "shared.edge.transport"
    assert json.loads(b"".join(chunks)) == json.loads(plain.content)


async def test_each_attempt_carries_the_sdk_user_agent_and_one_request_id(server: str) -> None:
    """The metering policy sets what UserAgentPolicy used to: the SDK's User-Agent, and one request id per
    request that a retry keeps (ARM support correlates attempts by it)."""
    import time
    import uuid

    from azure.core.credentials import AccessToken

    from shared.edge.arm import CallCounter, _pipeline_policies

    class _Token:  # the ARM policy needs a credential; the token's value plays no part here
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("t", int(time.time()) + 3600)

    headers: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        headers.append(dict(request.headers))
        status = 429 if len(headers) == 1 else 200
        return web.json_response({}, status=status, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_get("/h", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            policies = _pipeline_policies(_Token(), "https://management.azure.com/.default", CallCounter(), None)
            pipeline = AsyncPipeline(LeanAioHttpTransport(session=session), policies=policies)
            response = await pipeline.run(HttpRequest("GET", f"http://127.0.0.1:{port}/h"), enforce_https=False)
    finally:
        await runner.cleanup()
    assert response.http_response.status_code == 200 and len(headers) == 2
    first, retry = headers
    assert (
        first["User-Agent"].startswith("azsdk-python-mgmt-labservices/") and first["User-Agent"] == retry["User-Agent"]
    )
    assert uuid.UUID(first["x-ms-client-request-id"]).version == 4
    assert retry["x-ms-client-request-id"] == first["x-ms-client-request-id"]
    assert first["Authorization"] == "Bearer t"
