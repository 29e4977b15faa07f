"""App settings, read once from the environment into one frozen object.

Every setting labguard reads is named here, so `local.settings.sample.json`, the Bicep template and
the README can be checked against one list (``KNOWN_SETTINGS``). Bad values raise SettingsError
naming the setting and what to write instead; nothing runs on a bad configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from shared.errors import SettingsError

PUBLIC_CLOUD_ARM = "https://management.azure.com"
DEFAULT_SCHEDULE = "0 */15 * * * *"

# name -> what it is for (documentation and drift tests between code, sample settings and infra).
KNOWN_SETTINGS: dict[str, str] = {
    "LABGUARD_MODE": "audit (default: report only) or enforce (apply minimal patches)",
    "LABGUARD_POLICY_FILE": "path of the policy file (default policy.yaml beside function_app.py)",
    "LABGUARD_ARM_ENDPOINT": "Azure Resource Manager endpoint (default the public cloud)",
    "LABGUARD_ARM_AUDIENCE": "token audience for ARM (default: the endpoint; the public cloud's is https://management.azure.com/)",
    "LABGUARD_CA_BUNDLE": "PEM file of extra CAs to trust for outgoing HTTPS (optional)",
    "LABGUARD_SUBSCRIPTIONS": "comma-separated subscription ids in scope",
    "LABGUARD_RESOURCE_GROUPS": "optional comma-separated resource groups narrowing the scope",
    "LABGUARD_SCHEDULE": "NCRONTAB schedule of the sweep (default every 15 minutes)",
    "LABGUARD_CONCURRENCY": "how many plans a sweep reads or patches at once (default 16)",
    "LABGUARD_SWEEP_FANOUT": "auto (default: a queue message per scope from 10 scopes up), on, or off (one invocation)",
    "LABGUARD_LIST_CONCURRENCY": "how many scopes a sweep lists at once (default 4; memory follows it, not the estate)",
    "LABGUARD_SMTP_HOST": "SMTP relay for failure notices (optional)",
    "LABGUARD_SMTP_PORT": "SMTP port (default 587, STARTTLS)",
    "LABGUARD_SMTP_USERNAME": "SMTP login (optional)",
    "LABGUARD_SMTP_PASSWORD": "SMTP password (secret; use a Key Vault reference)",
    "LABGUARD_MAIL_FROM": "sender address of failure notices",
    "LABGUARD_FALLBACK_EMAIL": "where notices go when a plan has no valid support email",
    "LABGUARD_EVENTGRID_TOPIC_ENDPOINT": "Event Grid custom topic for failure notices (optional)",
    "LABGUARD_EVENTGRID_TOPIC_KEY": "access key of that topic (secret)",
    "LABGUARD_WEBHOOK_URLS": "comma-separated incoming-webhook URLs (Teams/Slack style) for notices",
    "LABGUARD_SUPPORT_URL_HOSTS": "comma-separated exact host names whose supportInfo.url may receive notices",
    "LABGUARD_LEDGER_TABLE": "Table storage table of the notice ledger (default labguardnotices)",
    "LABGUARD_NOTICE_WAIT_SECONDS": "how long one trigger waits for a failure notice step (1-25, default 5); "
    "the rest finishes in the background or in the next sweep",
    "AzureWebJobsStorage": "storage connection string (local: Azurite); also holds the notice ledger",
    "AzureWebJobsStorage__tableServiceUri": "table endpoint of identity-based host storage; the ledger uses it",
    "AzureWebJobsStorage__blobServiceUri": "blob endpoint of identity-based host storage; the compliance page uses it",
    "AzureWebJobsStorage__accountName": "identity-based host storage by account name (public cloud): the ledger uses https://NAME.table.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "queue endpoint of identity-based host storage; the sweep fan-out uses it",
    "LABGUARD_LEDGER_TABLE_ENDPOINT": "ledger table endpoint, with DefaultAzureCredential (optional; wins)",
    "LABGUARD_CHANGES_TABLE": "Table storage table of the changes labguard made (default labguardchanges)",
    "LABGUARD_REPORT_CONTAINER": "blob container for the compliance page after each sweep (optional; empty: off)",
    "LABGUARD_REPORT_ACCOUNT_URL": "blob endpoint of that container, reached with the app's identity (optional)",
    "LABGUARD_DIGEST_EMAIL": "admin address for the daily digest over the SMTP settings (optional; empty: off)",
    "AZURE_CLIENT_ID": "client id of a user-assigned managed identity (optional)",
    "LABGUARD_LABS": "on (default): labs are held to the policy too (sweep, events); off: lab plans only",
    "LABGUARD_NOTIFY_CHANGER": "on: mail the person whose change to a plan or lab enforce set back (default off)",
    "LABGUARD_EXEMPTION_CONTACT": "where people ask for an exemption (an address or https URL), named in those mails",
}

# App Service writes a Key Vault reference it could not resolve into the environment as is.
_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\s*\(", re.IGNORECASE)


_STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Settings:
    mode_override: Literal["audit", "enforce"] | None
    policy_file: str
    arm_endpoint: str
    arm_audience: str
    ca_bundle: str | None
    subscriptions: tuple[str, ...]
    resource_groups: tuple[str, ...]
    concurrency: int
    smtp_host: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    mail_from: str | None
    fallback_email: str | None
    eventgrid_topic_endpoint: str | None
    eventgrid_topic_key: str | None
    webhook_urls: tuple[str, ...]
    support_url_hosts: tuple[str, ...]
    ledger_table: str
    storage_connection: str | None
    notice_wait_s: float = 5.0
    # Identity-based ledger (DefaultAzureCredential); when set it wins over storage_connection.
    ledger_table_endpoint: str | None = None
    sweep_fanout: Literal["auto", "on", "off"] = "auto"
    # Identity-based queue of the sweep fan-out (only without a connection string, as the host decides).
    queue_endpoint: str | None = None
    list_concurrency: int = 4
    # Identity-based blob endpoint of the host's storage: where the compliance page goes without a key.
    blob_endpoint: str | None = None
    changes_table: str = "labguardchanges"
    report_container: str | None = None
    report_account_url: str | None = None
    digest_email: str | None = None
    labs: bool = True
    notify_changer: bool = False
    exemption_contact: str | None = None

    def __repr__(self) -> str:  # secrets never reach logs, even through repr()
        return (
            f"Settings(mode_override={self.mode_override!r}, arm_endpoint={self.arm_endpoint!r}, "
            f"subscriptions={self.subscriptions!r}, resource_groups={self.resource_groups!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate every setting; raise SettingsError on the first bad one."""

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        refuse_unresolved_references(env)

        mode = get("LABGUARD_MODE")
        if mode is not None and mode.lower() not in ("audit", "enforce"):
            raise SettingsError("LABGUARD_MODE is neither audit nor enforce: write 'audit' (report only) or 'enforce'")
        subscriptions = _csv(get("LABGUARD_SUBSCRIPTIONS"))
        for position, sub in enumerate(subscriptions, 1):
            if not _GUID.match(sub):
                raise SettingsError(
                    f"LABGUARD_SUBSCRIPTIONS: entry {position} is not a subscription id; "
                    "write GUIDs such as 00000000-0000-0000-0000-000000000000, comma-separated"
                )
        fanout = (get("LABGUARD_SWEEP_FANOUT") or "auto").lower()
        if fanout not in ("auto", "on", "off"):
            raise SettingsError(
                f"LABGUARD_SWEEP_FANOUT={fanout!r}: write 'auto' (queue from 10 scopes up), 'on' or 'off'"
            )
        arm = (get("LABGUARD_ARM_ENDPOINT") or PUBLIC_CLOUD_ARM).rstrip("/")
        if not arm.startswith("https://"):
            raise SettingsError(
                "LABGUARD_ARM_ENDPOINT is not an https:// URL: write one, such as https://management.azure.com"
            )
        return cls(
            mode_override=None if mode is None else "enforce" if mode.lower() == "enforce" else "audit",
            policy_file=get("LABGUARD_POLICY_FILE") or "policy.yaml",
            arm_endpoint=arm,
            arm_audience=(get("LABGUARD_ARM_AUDIENCE") or arm).rstrip("/") + "/",
            ca_bundle=get("LABGUARD_CA_BUNDLE"),
            subscriptions=tuple(s.lower() for s in subscriptions),
            resource_groups=tuple(rg.lower() for rg in _csv(get("LABGUARD_RESOURCE_GROUPS"))),
            concurrency=_int(get("LABGUARD_CONCURRENCY"), "LABGUARD_CONCURRENCY", 16, 1, 256),
            smtp_host=get("LABGUARD_SMTP_HOST"),
            smtp_port=_int(get("LABGUARD_SMTP_PORT"), "LABGUARD_SMTP_PORT", 587, 1, 65535),
            smtp_username=get("LABGUARD_SMTP_USERNAME"),
            smtp_password=get("LABGUARD_SMTP_PASSWORD"),
            mail_from=get("LABGUARD_MAIL_FROM"),
            fallback_email=get("LABGUARD_FALLBACK_EMAIL"),
            eventgrid_topic_endpoint=get("LABGUARD_EVENTGRID_TOPIC_ENDPOINT"),
            eventgrid_topic_key=get("LABGUARD_EVENTGRID_TOPIC_KEY"),
            webhook_urls=_csv(get("LABGUARD_WEBHOOK_URLS")),
            support_url_hosts=tuple(h.lower() for h in _csv(get("LABGUARD_SUPPORT_URL_HOSTS"))),
            ledger_table=get("LABGUARD_LEDGER_TABLE") or "labguardnotices",
            storage_connection=get("AzureWebJobsStorage"),
            notice_wait_s=float(_int(get("LABGUARD_NOTICE_WAIT_SECONDS"), "LABGUARD_NOTICE_WAIT_SECONDS", 5, 1, 25)),
            ledger_table_endpoint=_ledger_table_endpoint(get),
            sweep_fanout="on" if fanout == "on" else "off" if fanout == "off" else "auto",
            queue_endpoint=_queue_endpoint(get),
            list_concurrency=_int(get("LABGUARD_LIST_CONCURRENCY"), "LABGUARD_LIST_CONCURRENCY", 4, 1, 64),
            blob_endpoint=_blob_endpoint(get),
            changes_table=get("LABGUARD_CHANGES_TABLE") or "labguardchanges",
            report_container=_container(get("LABGUARD_REPORT_CONTAINER")),
            report_account_url=_https_url(get("LABGUARD_REPORT_ACCOUNT_URL"), "LABGUARD_REPORT_ACCOUNT_URL"),
            digest_email=_address(get("LABGUARD_DIGEST_EMAIL"), "LABGUARD_DIGEST_EMAIL"),
            labs=_on_off(get("LABGUARD_LABS"), "LABGUARD_LABS"),
            notify_changer=_notify_changer(get),
            exemption_contact=_exemption_contact(get("LABGUARD_EXEMPTION_CONTACT")),
        )


def refuse_unresolved_references(env: Mapping[str, str]) -> None:
    """Refuse a setting that still holds ``@Microsoft.KeyVault(...)``: App Service could not resolve it.

    Used as is, the reference text would become a password or a connection string that fails later and
    far from its cause. The message names the setting and never shows the reference beyond its prefix.
    """
    for name in sorted(set(KNOWN_SETTINGS) | {key for key in env if key.startswith("LABGUARD_")}):
        if _KEY_VAULT_REFERENCE.match(env.get(name, "")):
            raise SettingsError(
                f"{name} holds an unresolved Key Vault reference (@Microsoft.KeyVault(...)): give the Function "
                "App's identity 'Key Vault Secrets User' on the vault and check the secret's name and version "
                "(the portal shows each reference's status under Environment variables)"
            )


def _ledger_table_endpoint(get: Callable[[str], str | None]) -> str | None:
    """Where the ledger connects with an identity: LABGUARD_LEDGER_TABLE_ENDPOINT, else (only without a
    connection string, as the Functions host decides) AzureWebJobsStorage__tableServiceUri or
    __accountName. None: use the connection string, or no ledger."""
    explicit = get("LABGUARD_LEDGER_TABLE_ENDPOINT")
    if explicit is not None:
        return _https_endpoint("LABGUARD_LEDGER_TABLE_ENDPOINT", explicit)
    if get("AzureWebJobsStorage") is not None:
        return None
    service_uri = get("AzureWebJobsStorage__tableServiceUri")
    if service_uri is not None:
        return _https_endpoint("AzureWebJobsStorage__tableServiceUri", service_uri)
    account = get("AzureWebJobsStorage__accountName")
    if account is None:
        return None
    if not _STORAGE_ACCOUNT.match(account):
        raise SettingsError(
            "AzureWebJobsStorage__accountName: write the storage account name (3-24 lowercase letters and digits)"
        )
    return f"https://{account}.table.core.windows.net"


def _queue_endpoint(get: Callable[[str], str | None]) -> str | None:
    """The queue endpoint for an identity (AzureWebJobsStorage__queueServiceUri, else the public cloud's
    from __accountName); None with a connection string, which then names the queue service itself."""
    if get("AzureWebJobsStorage") is not None:
        return None
    service_uri = get("AzureWebJobsStorage__queueServiceUri")
    if service_uri is not None:
        return _https_endpoint("AzureWebJobsStorage__queueServiceUri", service_uri, "queue")
    account = get("AzureWebJobsStorage__accountName")
    if account is None or not _STORAGE_ACCOUNT.match(account):
        return None
    return f"https://{account}.queue.core.windows.net"


def _blob_endpoint(get: Callable[[str], str | None]) -> str | None:
    """The host storage's blob endpoint when it is identity-based (no connection string), as the ledger's."""
    if get("AzureWebJobsStorage") is not None:
        return None
    service_uri = get("AzureWebJobsStorage__blobServiceUri")
    if service_uri is not None:
        return _https_endpoint("AzureWebJobsStorage__blobServiceUri", service_uri, "blob")
    account = get("AzureWebJobsStorage__accountName")
    if account is None or not _STORAGE_ACCOUNT.match(account):
        return None  # a bad account name is already refused for the table endpoint
    return f"https://{account}.blob.core.windows.net"


def _https_endpoint(name: str, value: str, kind: str = "table") -> str:
    if not value.startswith("https://") or len(value) <= len("https://") or any(c.isspace() for c in value):
        raise SettingsError(f"{name}: write the https:// {kind} endpoint, e.g. https://ACCOUNT.{kind}.core.windows.net")
    return value.rstrip("/")


def _csv(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} is not a whole number: write one from {low} to {high}") from None
    if not low <= number <= high:
        raise SettingsError(f"{name} is out of range: write a whole number from {low} to {high}")
    return number


_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_ADDRESS = re.compile(r"^[^@\s,;<>\"']+@[^@\s,;<>\"']+\.[A-Za-z]{2,63}$")


def _container(value: str | None) -> str | None:
    if value is not None and not _CONTAINER.match(value):
        raise SettingsError(
            "LABGUARD_REPORT_CONTAINER is not a container name: write a blob container name (3-63 lower-case "
            "letters, digits and single hyphens), such as labguard-reports"
        )
    return value


def _https_url(value: str | None, name: str) -> str | None:
    if value is not None and not value.lower().startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SettingsError(
            f"{name} is not an https:// URL: write the https:// blob endpoint, such as https://ACCOUNT.blob.core.windows.net/"
        )
    return value


def _address(value: str | None, name: str) -> str | None:
    if value is not None and not _ADDRESS.match(value):
        raise SettingsError(f"{name} is not one plain address: write one, such as it-admins@school.example")
    return value


def _notify_changer(get: Callable[[str], str | None]) -> bool:
    """Off unless set; on needs a mail relay and somewhere to ask for an exemption, or nothing useful is sent."""
    on = _on_off(get("LABGUARD_NOTIFY_CHANGER") or "off", "LABGUARD_NOTIFY_CHANGER")
    if on and get("LABGUARD_SMTP_HOST") is None:
        raise SettingsError(
            "LABGUARD_NOTIFY_CHANGER is on but LABGUARD_SMTP_HOST is not set: set the SMTP relay (and "
            "LABGUARD_MAIL_FROM), or write off"
        )
    if on and get("LABGUARD_EXEMPTION_CONTACT") is None:
        raise SettingsError(
            "LABGUARD_NOTIFY_CHANGER is on but LABGUARD_EXEMPTION_CONTACT is not set: write the address or "
            "https:// page where people ask for an exemption, such as lab-exemptions@school.example"
        )
    return on


_CONTACT_HOST = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def _exemption_contact(value: str | None) -> str | None:
    """One plain mail address, or an https URL checked as supportInfo.url is (printable ASCII, no userinfo,
    a DNS host name, at most 2048 characters): it is written into mails, so nothing else gets through."""
    if value is None:
        return None
    why = (
        "LABGUARD_EXEMPTION_CONTACT is neither one plain mail address nor an https:// URL with a host name: "
        "write one, such as lab-exemptions@school.example or https://it.school.example/lab-exemptions"
    )
    if "://" not in value:
        if not _ADDRESS.match(value) or len(value) > 254 or not value.isascii():
            raise SettingsError(why)
        return value
    if len(value) > 2048 or any(not 0x21 <= ord(ch) <= 0x7E for ch in value) or "\\" in value:
        raise SettingsError(why)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise SettingsError(why) from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() != "https" or "@" in parts.netloc or not _CONTACT_HOST.match(host):
        raise SettingsError(why)
    return value


def _on_off(value: str | None, name: str) -> bool:
    if value is None or value.strip().lower() in ("", "on", "true", "1"):
        return True
    if value.strip().lower() in ("off", "false", "0"):
        return False
    raise SettingsError(f"{name} is neither on nor off: write on or off")  # never the value (settings.refused)
