"""The host's managed identity credential (shared/edge/identity.py) against the local endpoint's /msi/token,
which speaks the App Service protocol (api-version 2019-08-01) as the Functions host does; and which
credential the app picks in which environment."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from emulator.host_identity import MANAGED_IDENTITY_HEADER, MANAGED_IDENTITY_PATH
from emulator.testing import start_emulator
from shared.edge import identity
from shared.edge.identity import HostManagedIdentity, app_credential

ARM = "https://management.azure.com/.default"


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture
async def session(emu: Any) -> Any:
    """An aiohttp session trusting the local endpoint's CA (the host's endpoint is plain http://localhost)."""
    import aiohttp

    from shared.edge.tls import ssl_context

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu.ca_file))) as opened:
        yield opened


def _token_requests(emu: Any) -> list[dict[str, Any]]:
    return [r for r in emu.requests() if r["path"] == MANAGED_IDENTITY_PATH]


async def test_one_fetch_serves_every_caller_until_five_minutes_before_expiry(
    emu: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.clear_requests()
    endpoint = emu.endpoint + MANAGED_IDENTITY_PATH
    async with HostManagedIdentity(endpoint, MANAGED_IDENTITY_HEADER, session=session) as credential:
        tokens = await asyncio.gather(*(credential.get_token(ARM) for _ in range(16)))
        assert len({t.token for t in tokens}) == 1 and credential.fetches == 1
        [request] = _token_requests(emu)
        assert request["query"] == {"api-version": "2019-08-01", "resource": "https://management.azure.com"}
        # Five minutes before it expires, the next caller gets a new token.
        expires_on = tokens[0].expires_on
        monkeypatch.setattr(identity.time, "time", lambda: expires_on - 299)
        await credential.get_token(ARM)
        assert credential.fetches == 2
        # A claims challenge (CAE) is never answered from the cache.
        await credential.get_token_info(ARM, options={"claims": '{"access_token":{}}'})
        assert credential.fetches == 3


async def test_a_user_assigned_identity_is_asked_for_by_client_id(emu: Any, session: Any) -> None:
    emu.clear_requests()
    env = {
        "IDENTITY_ENDPOINT": emu.endpoint + MANAGED_IDENTITY_PATH,
        "IDENTITY_HEADER": MANAGED_IDENTITY_HEADER,
        "AZURE_CLIENT_ID": "labguard-user-assigned",
    }
    credential = app_credential(env, session=session)
    try:
        assert isinstance(credential, HostManagedIdentity)
        info = await credential.get_token_info(ARM)
        assert info.token and info.token_type == "Bearer"
    finally:
        await credential.close()
    [request] = _token_requests(emu)
    assert request["query"]["client_id"] == "labguard-user-assigned"
    assert request["principal"] == "labguard-user-assigned"


async def test_a_refused_or_unreachable_endpoint_is_one_line_without_the_secret(emu: Any, session: Any) -> None:
    secret = "not-the-hosts-secret-5b1e"
    async with HostManagedIdentity(emu.endpoint + MANAGED_IDENTITY_PATH, secret, session=session) as credential:
        with pytest.raises(ClientAuthenticationError) as refused:
            await credential.get_token(ARM)
    assert "answered 401" in str(refused.value) and secret not in str(refused.value) and secret not in repr(credential)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HostManagedIdentity(f"http://127.0.0.1:{port}/msi/token", secret) as credential:
        credential._get_pipeline()._impl_policies[0].total_retries = 0  # type: ignore[attr-defined]
        with pytest.raises(ClientAuthenticationError, match="unreachable") as unreachable:
            await credential.get_token(ARM)
    assert "\n" not in str(unreachable.value) and secret not in str(unreachable.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": "h"}, "HostManagedIdentity"),
        (  # a service principal configured in the environment wins, as DefaultAzureCredential orders them
            {
                "IDENTITY_ENDPOINT": "http://localhost:8081/msi/token",
                "IDENTITY_HEADER": "h",
                "AZURE_CLIENT_SECRET": "s",
            },
            "DefaultAzureCredential",
        ),
        (
            {"IDENTITY_ENDPOINT": "http://x/msi", "IDENTITY_HEADER": "h", "AZURE_FEDERATED_TOKEN_FILE": "/t"},
            "DefaultAzureCredential",
        ),
        ({"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token"}, "DefaultAzureCredential"),  # no secret
        ({}, "DefaultAzureCredential"),  # a laptop: az login, environment, ...
    ],
)
async def test_which_credential_the_app_uses(env: dict[str, str], expected: str) -> None:
    credential = app_credential(env)
    try:
        assert type(credential).__name__ == expected
    finally:
        await credential.close()
