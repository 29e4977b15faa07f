"""The notice ledger without account keys: a table endpoint and a token credential (issue 15, item 2).

In Azure the template gives the app AzureWebJobsStorage__tableServiceUri and no connection string
(the account allows no shared key); the ledger connects there with DefaultAzureCredential. Locally and
in the tests a connection string (Azurite) still works.

The identity path runs for real against Azurite's Table service with OAuth switched on (`--oauth
basic`, HTTPS with a throwaway CA): Azurite then refuses shared keys' absence and checks each bearer
token's audience, issuer and lifetime (not its signature), as far as a local emulator can.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from devtools.services import AZURITE_TABLE, free_port, stop_process, wait_listening
from shared.core.plans import PlanId
from shared.errors import SettingsError
from shared.notices.ledger import Ledger, open_ledger
from shared.runtime.settings import Settings

PLAN = PlanId.parse(
    "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-labs/providers/Microsoft.LabServices/labPlans/p1"
)
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class Token:
    def __init__(self, token: str, expires_on: int) -> None:
        self.token = token
        self.expires_on = expires_on


class StandInCredential:
    """An async token credential (what DefaultAzureCredential is to the SDK) minting Entra-shaped JWTs."""

    def __init__(self, audience: str = "https://storage.azure.com") -> None:
        self.audience = audience
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> Token:
        self.scopes.append(scopes)
        now = int(time.time())
        claims = {
            "aud": self.audience,
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": "00000000-0000-0000-0000-00000000a11e",
            "tid": TENANT,
        }

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return Token(f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl", now + 3600)

    async def close(self) -> None:
        pass


class OAuthAzurite:
    def __init__(self, port: int, ca_file: str) -> None:
        self.endpoint = f"https://127.0.0.1:{port}/devstoreaccount1"
        self.ca_file = ca_file


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthAzurite]:
    if not AZURITE_TABLE.exists():
        pytest.fail(f"Azurite is not installed ({AZURITE_TABLE}): run `make test`, it runs npm ci")
    workdir = tmp_path_factory.mktemp("azurite-oauth")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    for _attempt in range(3):  # the free port can be taken before Azurite binds it
        port = free_port()
        with (workdir / "azurite.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    str(AZURITE_TABLE),
                    *("--tableHost", "127.0.0.1", "--tablePort", str(port)),
                    *("--oauth", "basic", "--cert", str(cert_file), "--key", str(key_file)),
                    *("--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry"),
                ],
                cwd=workdir,
                stdout=log,
                stderr=log,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AZURITE_ACCEPT_EULA": "true"},
                start_new_session=True,
            )
        if wait_listening(proc, port, 30):
            break
        stop_process(proc)
    else:
        pytest.fail("Azurite with OAuth did not start: " + (workdir / "azurite.log").read_text()[-300:])
    try:
        yield OAuthAzurite(port, str(ca_file))
    finally:
        stop_process(proc)


def identity_ledger(service: OAuthAzurite, table: str, credential: Any) -> Ledger:
    return Ledger.from_endpoint(service.endpoint, table, credential, connection_verify=service.ca_file, retry_total=0)


@pytest.mark.integration
async def test_the_ledger_claims_and_records_with_a_token_and_no_account_key(oauth_azurite: OAuthAzurite):
    credential = StandInCredential()
    async with identity_ledger(oauth_azurite, "identityledger", credential) as ledger:
        claim = await ledger.claim(PLAN, "fk1", "d1", "email")
        assert claim is not None
        await ledger.mark_sent(claim, "to ops@school.example")
        assert await ledger.claim(PLAN, "fk1", "d1", "email") is None  # never told twice
        rows = await ledger.rows(PLAN, "d1")
    assert set(rows) == {"email"}
    # Every request was authorized by the credential's token for Azure Storage.
    assert credential.scopes and all(scopes == ("https://storage.azure.com/.default",) for scopes in credential.scopes)


@pytest.mark.integration
async def test_a_token_for_another_audience_is_refused(oauth_azurite: OAuthAzurite):
    # Azurite really checks the token: the identity path above is not accepted by accident.
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    async with identity_ledger(oauth_azurite, "refusedledger", StandInCredential("https://vault.azure.net")) as ledger:
        with pytest.raises((ClientAuthenticationError, HttpResponseError)):
            await ledger.claim(PLAN, "fk1", "d1", "email")


# ------------------------------------------------------------------------------------ which ledger the settings open


def opened(env: dict[str, str]) -> Ledger | None:
    return open_ledger(Settings.from_env(env))


async def test_the_settings_azure_gets_open_an_identity_ledger_with_default_azure_credential():
    from azure.identity.aio import DefaultAzureCredential

    ledger = opened(
        {
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__tableServiceUri": "https://stlabguardabc.table.core.windows.net/",
        }
    )
    assert ledger is not None
    client = ledger._client
    assert client.url.startswith("https://stlabguardabc.table.core.windows.net")
    assert isinstance(client.credential, DefaultAzureCredential)
    assert ledger.table_name == "labguardnotices"
    await ledger.close()


async def test_an_account_name_alone_means_the_public_cloud_table_endpoint():
    ledger = opened({"AzureWebJobsStorage__accountName": "stlabguardabc"})
    assert ledger is not None and ledger._client.url.startswith("https://stlabguardabc.table.core.windows.net")
    await ledger.close()


async def test_a_connection_string_still_opens_a_keyed_ledger_and_wins_over_the_host_uris():
    # As the Functions host decides: a connection string in AzureWebJobsStorage comes first.
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
    )
    ledger = opened(
        {"AzureWebJobsStorage": conn, "AzureWebJobsStorage__tableServiceUri": "https://x.table.core.windows.net"}
    )
    assert ledger is not None and ledger._client.url.startswith("http://127.0.0.1:10002")
    await ledger.close()
    # ...unless labguard's own endpoint setting names another table endpoint.
    explicit = opened(
        {"AzureWebJobsStorage": conn, "LABGUARD_LEDGER_TABLE_ENDPOINT": "https://ledger.table.core.windows.net"}
    )
    assert explicit is not None and explicit._client.url.startswith("https://ledger.table.core.windows.net")
    await explicit.close()


def test_no_storage_setting_means_no_ledger():
    assert opened({}) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AzureWebJobsStorage__tableServiceUri", "http://stlabguardabc.table.core.windows.net"),
        ("LABGUARD_LEDGER_TABLE_ENDPOINT", "stlabguardabc.table.core.windows.net"),
        ("AzureWebJobsStorage__accountName", "St-LabGuard"),
    ],
)
def test_a_malformed_storage_identity_setting_is_one_clear_line(name: str, value: str):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    message = str(raised.value)
    assert message.startswith(name) and "\n" not in message and value not in message


def test_the_sample_settings_keep_the_local_connection_string():
    sample = json.loads((Path(__file__).resolve().parents[2] / "local.settings.sample.json").read_text())["Values"]
    settings = Settings.from_env(sample)
    assert settings.storage_connection == "UseDevelopmentStorage=true"
    assert settings.ledger_table_endpoint is None


async def test_every_table_and_the_page_use_the_identity_storage_azure_gets():
    # In Azure there is no connection string: the write backoff, the change log, the digest and the
    # compliance page must open the same identity-based storage as the ledger, not go without.
    from azure.identity.aio import DefaultAzureCredential

    from shared.runtime.changes import ChangeLog
    from shared.runtime.write_backoff import TableBackoff

    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__tableServiceUri": "https://stlabguardabc.table.core.windows.net/",
            "AzureWebJobsStorage__blobServiceUri": "https://stlabguardabc.blob.core.windows.net/",
        }
    )
    backoff = TableBackoff.from_settings(settings)
    change_log = ChangeLog.from_settings(settings)
    assert backoff is not None and change_log is not None
    for client in (backoff._client, change_log._client):
        assert client.url.startswith("https://stlabguardabc.table.core.windows.net")
        assert isinstance(client.credential, DefaultAzureCredential)
    assert backoff.table_name == "labguardnoticeswrites"
    assert change_log._client.table_name == "labguardchanges"
    assert settings.blob_endpoint == "https://stlabguardabc.blob.core.windows.net"
    await backoff.close()
    async with change_log:
        pass
