"""App settings: one pydantic model read from the environment into one frozen object.

Every setting labguard reads is a field of :class:`Settings`, named by its app setting (the field's alias)
and described once; ``KNOWN_SETTINGS`` is derived from the fields, so `local.settings.sample.json`, the
Bicep template and the README are checked against the model itself. Bad values raise SettingsError: one
line naming the setting and what to write instead, never the value; nothing runs on a bad configuration.
Secrets (the SMTP password, the topic key, the storage connection string, webhook URLs, which carry their
own token) are ``SecretStr``: repr, str, logs and errors show ``**********``; the clients that need the
value unwrap it where they open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo

from shared.errors import SettingsError

PUBLIC_CLOUD_ARM = "https://management.azure.com"
DEFAULT_SCHEDULE = "0 */15 * * * *"

# App Service writes a Key Vault reference it could not resolve into the environment as is.
_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\s*\(", re.IGNORECASE)
_STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_ADDRESS = re.compile(r"^[^@\s,;<>\"']+@[^@\s,;<>\"']+\.[A-Za-z]{2,63}$")


# ------------------------------------------------------------------ one validator per kind of value
# Each raises SettingsError (a ValueError, so pydantic carries it) whose text is the one line the admin sees.


def _csv(value: object) -> tuple[str, ...]:
    """Comma-separated text from the environment, or a list the command passes in (one name per flag)."""
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else ()
    return tuple(text for part in parts if (text := str(part).strip()))


def _lower_csv(value: object) -> tuple[str, ...]:
    return tuple(part.lower() for part in _csv(value))


def _subscriptions(value: object) -> tuple[str, ...]:
    subscriptions = _csv(value)
    for position, sub in enumerate(subscriptions, 1):
        if not _GUID.match(sub):
            raise SettingsError(
                f"LABGUARD_SUBSCRIPTIONS: entry {position} is not a subscription id; "
                "write GUIDs such as 00000000-0000-0000-0000-000000000000, comma-separated"
            )
    return tuple(sub.lower() for sub in subscriptions)


def _mode(value: object) -> str:
    mode = str(value).strip().lower()
    if mode not in ("audit", "enforce"):
        raise SettingsError("LABGUARD_MODE is neither audit nor enforce: write 'audit' (report only) or 'enforce'")
    return mode


def _fanout(value: object) -> str:
    fanout = str(value).strip().lower()
    if fanout not in ("auto", "on", "off"):
        raise SettingsError("LABGUARD_SWEEP_FANOUT: write 'auto' (queue from 10 scopes up), 'on' or 'off'")
    return fanout


def _arm_endpoint(value: object) -> str:
    arm = str(value).strip().rstrip("/")
    if not arm.startswith("https://"):
        raise SettingsError(
            "LABGUARD_ARM_ENDPOINT is not an https:// URL: write one, such as https://management.azure.com"
        )
    return arm


def _whole_number(name: str, low: int, high: int) -> BeforeValidator:
    def check(value: object) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SettingsError(f"{name} is not a whole number: write one from {low} to {high}") from None
        if not low <= number <= high:
            raise SettingsError(f"{name} is out of range: write a whole number from {low} to {high}")
        return number

    return BeforeValidator(check)


def _container(value: object) -> str:
    if not _CONTAINER.match(str(value)):
        raise SettingsError(
            "LABGUARD_REPORT_CONTAINER is not a container name: write a blob container name (3-63 lower-case "
            "letters, digits and single hyphens), such as labguard-reports"
        )
    return str(value)


def _report_account_url(value: object) -> str:
    if not str(value).lower().startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SettingsError(
            "LABGUARD_REPORT_ACCOUNT_URL is not an https:// URL: write the https:// blob endpoint, "
            "such as https://ACCOUNT.blob.core.windows.net/"
        )
    return str(value)


def _address(name: str) -> BeforeValidator:
    def check(value: object) -> str:
        if not _ADDRESS.match(str(value)):
            raise SettingsError(f"{name} is not one plain address: write one, such as it-admins@school.example")
        return str(value)

    return BeforeValidator(check)


def _on_off(name: str) -> BeforeValidator:
    def check(value: object) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("on", "true", "1"):
            return True
        if word in ("off", "false", "0"):
            return False
        raise SettingsError(f"{name} is neither on nor off: write on or off")  # never the value (settings.refused)

    return BeforeValidator(check)


_CONTACT_HOST = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def _exemption_contact(value: object) -> str:
    """One plain mail address, or an https URL checked as supportInfo.url is (printable ASCII, no userinfo,
    a DNS host name, at most 2048 characters): it is written into mails, so nothing else gets through."""
    text = str(value)
    why = (
        "LABGUARD_EXEMPTION_CONTACT is neither one plain mail address nor an https:// URL with a host name: "
        "write one, such as lab-exemptions@school.example or https://it.school.example/lab-exemptions"
    )
    if "://" not in text:
        if not _ADDRESS.match(text) or len(text) > 254 or not text.isascii():
            raise SettingsError(why)
        return text
    if len(text) > 2048 or any(not 0x21 <= ord(ch) <= 0x7E for ch in text) or "\\" in text:
        raise SettingsError(why)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise SettingsError(why) from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() != "https" or "@" in parts.netloc or not _CONTACT_HOST.match(host):
        raise SettingsError(why)
    return text


def _https_endpoint(name: str, value: str, kind: str = "table") -> str:
    if not value.startswith("https://") or len(value) <= len("https://") or any(c.isspace() for c in value):
        raise SettingsError(f"{name}: write the https:// {kind} endpoint, e.g. https://ACCOUNT.{kind}.core.windows.net")
    return value.rstrip("/")


def _setting(alias: str, description: str, default: Any = None) -> Any:
    return Field(default, validation_alias=alias, description=description)


class Settings(BaseModel):
    """Every app setting labguard reads; built by :meth:`from_env` (the environment, then the overrides).

    A plain pydantic model fed by :meth:`from_env`, not pydantic-settings: reading the environment is one
    dict comprehension, and pydantic-settings' import cost the first event about 20 ms.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_alias=True,
        validate_by_name=False,  # only the app setting's own name is read, never the Python field name
        hide_input_in_errors=True,  # a value (perhaps a secret) never reaches an error's text
        validate_default=False,  # the defaults are the values, not text to read
    )

    mode_override: Annotated[Literal["audit", "enforce"] | None, BeforeValidator(_mode)] = _setting(
        "LABGUARD_MODE", "audit (default: report only) or enforce (apply minimal patches)"
    )
    policy_file: str = _setting(
        "LABGUARD_POLICY_FILE", "path of the policy file (default policy.yaml beside function_app.py)", "policy.yaml"
    )
    arm_endpoint: Annotated[str, BeforeValidator(_arm_endpoint)] = _setting(
        "LABGUARD_ARM_ENDPOINT", "Azure Resource Manager endpoint (default the public cloud)", PUBLIC_CLOUD_ARM
    )
    arm_audience_setting: str | None = _setting(
        "LABGUARD_ARM_AUDIENCE",
        "token audience for ARM (default: the endpoint; the public cloud's is https://management.azure.com/)",
    )
    ca_bundle: str | None = _setting(
        "LABGUARD_CA_BUNDLE", "PEM file of extra CAs to trust for outgoing HTTPS (optional)"
    )
    subscriptions: Annotated[tuple[str, ...], BeforeValidator(_subscriptions)] = _setting(
        "LABGUARD_SUBSCRIPTIONS", "comma-separated subscription ids in scope", ()
    )
    resource_groups: Annotated[tuple[str, ...], BeforeValidator(_lower_csv)] = _setting(
        "LABGUARD_RESOURCE_GROUPS", "optional comma-separated resource groups narrowing the scope", ()
    )
    schedule: str = _setting(  # read by the Functions host (%LABGUARD_SCHEDULE%); listed so infra carries it
        "LABGUARD_SCHEDULE", "NCRONTAB schedule of the sweep (default every 15 minutes)", DEFAULT_SCHEDULE
    )
    concurrency: Annotated[int, _whole_number("LABGUARD_CONCURRENCY", 1, 256)] = _setting(
        "LABGUARD_CONCURRENCY", "how many plans a sweep reads or patches at once (default 16)", 16
    )
    sweep_fanout: Annotated[Literal["auto", "on", "off"], BeforeValidator(_fanout)] = _setting(
        "LABGUARD_SWEEP_FANOUT",
        "auto (default: a queue message per scope from 10 scopes up), on, or off (one invocation)",
        "auto",
    )
    list_concurrency: Annotated[int, _whole_number("LABGUARD_LIST_CONCURRENCY", 1, 64)] = _setting(
        "LABGUARD_LIST_CONCURRENCY",
        "how many scopes a sweep lists at once (default 4; memory follows it, not the estate)",
        4,
    )
    smtp_host: str | None = _setting("LABGUARD_SMTP_HOST", "SMTP relay for failure notices (optional)")
    smtp_port: Annotated[int, _whole_number("LABGUARD_SMTP_PORT", 1, 65535)] = _setting(
        "LABGUARD_SMTP_PORT", "SMTP port (default 587, STARTTLS)", 587
    )
    smtp_username: str | None = _setting("LABGUARD_SMTP_USERNAME", "SMTP login (optional)")
    smtp_password: SecretStr | None = _setting(
        "LABGUARD_SMTP_PASSWORD", "SMTP password (secret; use a Key Vault reference)"
    )
    mail_from: str | None = _setting("LABGUARD_MAIL_FROM", "sender address of failure notices")
    fallback_email: str | None = _setting(
        "LABGUARD_FALLBACK_EMAIL", "where notices go when a plan has no valid support email"
    )
    eventgrid_topic_endpoint: str | None = _setting(
        "LABGUARD_EVENTGRID_TOPIC_ENDPOINT", "Event Grid custom topic for failure notices (optional)"
    )
    eventgrid_topic_key: SecretStr | None = _setting(
        "LABGUARD_EVENTGRID_TOPIC_KEY", "access key of that topic (secret)"
    )
    webhook_urls: Annotated[tuple[SecretStr, ...], BeforeValidator(_csv)] = _setting(
        "LABGUARD_WEBHOOK_URLS",
        "comma-separated incoming-webhook URLs (Teams/Slack style) for notices (secret: each URL carries a token)",
        (),
    )
    support_url_hosts: Annotated[tuple[str, ...], BeforeValidator(_lower_csv)] = _setting(
        "LABGUARD_SUPPORT_URL_HOSTS", "comma-separated exact host names whose supportInfo.url may receive notices", ()
    )
    ledger_table: str = _setting(
        "LABGUARD_LEDGER_TABLE", "Table storage table of the notice ledger (default labguardnotices)", "labguardnotices"
    )
    notice_wait_s: Annotated[float, _whole_number("LABGUARD_NOTICE_WAIT_SECONDS", 1, 25)] = _setting(
        "LABGUARD_NOTICE_WAIT_SECONDS",
        "how long one trigger waits for a failure notice step (1-25, default 5); "
        "the rest finishes in the background or in the next sweep",
        5.0,
    )
    storage_connection: SecretStr | None = _setting(
        "AzureWebJobsStorage",
        "storage connection string (local: Azurite; secret: it may hold the account key); also holds the notice ledger",
    )
    storage_table_service_uri: str | None = _setting(
        "AzureWebJobsStorage__tableServiceUri", "table endpoint of identity-based host storage; the ledger uses it"
    )
    storage_blob_service_uri: str | None = _setting(
        "AzureWebJobsStorage__blobServiceUri",
        "blob endpoint of identity-based host storage; the compliance page uses it",
    )
    storage_account_name: str | None = _setting(
        "AzureWebJobsStorage__accountName",
        "identity-based host storage by account name (public cloud): the ledger uses https://NAME.table.core.windows.net",
    )
    storage_queue_service_uri: str | None = _setting(
        "AzureWebJobsStorage__queueServiceUri",
        "queue endpoint of identity-based host storage; the sweep fan-out uses it",
    )
    ledger_table_endpoint_setting: str | None = _setting(
        "LABGUARD_LEDGER_TABLE_ENDPOINT", "ledger table endpoint, with the app's credential (optional; wins)"
    )
    changes_table: str = _setting(
        "LABGUARD_CHANGES_TABLE",
        "Table storage table of the changes labguard made (default labguardchanges)",
        "labguardchanges",
    )
    report_container: Annotated[str | None, BeforeValidator(_container)] = _setting(
        "LABGUARD_REPORT_CONTAINER", "blob container for the compliance page after each sweep (optional; empty: off)"
    )
    report_account_url: Annotated[str | None, BeforeValidator(_report_account_url)] = _setting(
        "LABGUARD_REPORT_ACCOUNT_URL", "blob endpoint of that container, reached with the app's identity (optional)"
    )
    digest_email: Annotated[str | None, _address("LABGUARD_DIGEST_EMAIL")] = _setting(
        "LABGUARD_DIGEST_EMAIL", "admin address for the daily digest over the SMTP settings (optional; empty: off)"
    )
    azure_client_id: str | None = _setting(  # read by the credential itself (shared.edge.identity)
        "AZURE_CLIENT_ID", "client id of a user-assigned managed identity (optional)"
    )
    labs: Annotated[bool, _on_off("LABGUARD_LABS")] = _setting(
        "LABGUARD_LABS", "on (default): labs are held to the policy too (sweep, events); off: lab plans only", True
    )
    notify_changer: Annotated[bool, _on_off("LABGUARD_NOTIFY_CHANGER")] = _setting(
        "LABGUARD_NOTIFY_CHANGER",
        "on: mail the person whose change to a plan or lab enforce set back (default off)",
        False,
    )
    exemption_contact: Annotated[str | None, BeforeValidator(_exemption_contact)] = _setting(
        "LABGUARD_EXEMPTION_CONTACT",
        "where people ask for an exemption (an address or https URL), named in those mails",
    )

    # -------------------------------------------------------------------------------- what is derived

    @property
    def arm_audience(self) -> str:
        return (self.arm_audience_setting or self.arm_endpoint).rstrip("/") + "/"

    @property
    def notice_channel_set(self) -> bool:
        """Any notice channel set (mail relay, Event Grid topic, webhooks, support-URL hosts): every channel of
        :class:`shared.notices.delivery.Notifier` is built from one of these, so without them it has none."""
        return bool(self.smtp_host or self.eventgrid_topic_endpoint or self.webhook_urls or self.support_url_hosts)

    @property
    def ledger_table_endpoint(self) -> str | None:
        """Where the ledger connects with an identity: LABGUARD_LEDGER_TABLE_ENDPOINT, else (only without a
        connection string, as the Functions host decides) AzureWebJobsStorage__tableServiceUri or
        __accountName. None: use the connection string, or no ledger."""
        if self.ledger_table_endpoint_setting is not None:
            return _https_endpoint("LABGUARD_LEDGER_TABLE_ENDPOINT", self.ledger_table_endpoint_setting)
        if self.storage_connection is not None:
            return None
        if self.storage_table_service_uri is not None:
            return _https_endpoint("AzureWebJobsStorage__tableServiceUri", self.storage_table_service_uri)
        account = self.storage_account_name
        if account is None:
            return None
        if not _STORAGE_ACCOUNT.match(account):
            raise SettingsError(
                "AzureWebJobsStorage__accountName: write the storage account name (3-24 lowercase letters and digits)"
            )
        return f"https://{account}.table.core.windows.net"

    @property
    def queue_endpoint(self) -> str | None:
        """The queue endpoint for an identity (AzureWebJobsStorage__queueServiceUri, else the public cloud's
        from __accountName); None with a connection string, which then names the queue service itself."""
        return self._service_endpoint(self.storage_queue_service_uri, "AzureWebJobsStorage__queueServiceUri", "queue")

    @property
    def blob_endpoint(self) -> str | None:
        """The host storage's blob endpoint when it is identity-based (no connection string), as the ledger's."""
        return self._service_endpoint(self.storage_blob_service_uri, "AzureWebJobsStorage__blobServiceUri", "blob")

    def _service_endpoint(self, service_uri: str | None, name: str, kind: str) -> str | None:
        if self.storage_connection is not None:
            return None
        if service_uri is not None:
            return _https_endpoint(name, service_uri, kind)
        account = self.storage_account_name
        if account is None or not _STORAGE_ACCOUNT.match(account):
            return None  # a bad account name is refused for the table endpoint
        return f"https://{account}.{kind}.core.windows.net"

    @model_validator(mode="after")
    def _settings_that_combine_agree(self) -> Settings:
        """The storage endpoints combine several settings: check them once, at load, not at first use. The
        changer mail, when on, needs a mail relay and somewhere to ask for an exemption, or nothing useful is sent."""
        _ = self.ledger_table_endpoint, self.queue_endpoint, self.blob_endpoint
        if self.notify_changer and self.smtp_host is None:
            raise SettingsError(
                "LABGUARD_NOTIFY_CHANGER is on but LABGUARD_SMTP_HOST is not set: set the SMTP relay (and "
                "LABGUARD_MAIL_FROM), or write off"
            )
        if self.notify_changer and self.exemption_contact is None:
            raise SettingsError(
                "LABGUARD_NOTIFY_CHANGER is on but LABGUARD_EXEMPTION_CONTACT is not set: write the address or "
                "https:// page where people ask for an exemption, such as lab-exemptions@school.example"
            )
        return self

    # -------------------------------------------------------------------------------- how it is read

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read and validate every setting from ``env`` (default the process environment), with ``overrides``
        (field names, e.g. the command line's ``subscriptions``) beating it; raise SettingsError (one line
        naming the setting) on a bad one. The environment is only read, never changed.

        As the Functions host reads app settings: names are case-sensitive (LABGUARD_MODE, not labguard_mode),
        a blank value is unset, and only labguard's own names are read from the (much larger) environment."""
        env = os.environ if env is None else env
        refuse_unresolved_references(env)
        given: dict[str, object] = {
            name: text for name in KNOWN_SETTINGS if isinstance(value := env.get(name), str) and (text := value.strip())
        }
        given.update({_ALIASES[name]: value for name, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise _one_line(exc) from None


def _alias(name: str, field: FieldInfo) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else name


_ALIASES: dict[str, str] = {name: _alias(name, field) for name, field in Settings.model_fields.items()}

# app setting -> what it is for (documentation and drift tests between code, sample settings and infra).
KNOWN_SETTINGS: dict[str, str] = {
    _ALIASES[name]: field.description or "" for name, field in Settings.model_fields.items()
}


def _one_line(exc: ValidationError) -> SettingsError:
    """The first refusal as one line: our validators' own text, else the setting and what it takes."""
    errors = exc.errors(include_input=False)
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SettingsError):
        line = str(cause)
    else:
        name = str(first["loc"][0]) if first["loc"] else "a setting"
        name = _ALIASES.get(name, name)
        line = f"{name} is not valid: write {KNOWN_SETTINGS.get(name, 'a valid value')}"
    more = len(errors) - 1
    return SettingsError(line + (f" (and {more} more bad setting{'s' if more > 1 else ''})" if more else ""))


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret itself, for the one client that sends it (SMTP login, topic credential); None when unset."""
    return None if secret is None else secret.get_secret_value()


def refuse_unresolved_references(env: Mapping[str, str]) -> None:
    """Refuse a setting that still holds ``@Microsoft.KeyVault(...)``: App Service could not resolve it.

    Every setting labguard reads is checked, and every other LABGUARD_* name too (a misspelt one would
    otherwise hide the failed reference). Used as is, the reference text would become a password or a
    connection string that fails later and far from its cause. The message names the setting and never
    shows the reference beyond its prefix.
    """
    for name in sorted(set(KNOWN_SETTINGS) | {key for key in env if key.startswith("LABGUARD_")}):
        if _KEY_VAULT_REFERENCE.match(env.get(name, "")):
            raise SettingsError(
                f"{name} holds an unresolved Key Vault reference (@Microsoft.KeyVault(...)): give the Function "
                "App's identity 'Key Vault Secrets User' on the vault and check the secret's name and version "
                "(the portal shows each reference's status under Environment variables)"
            )
