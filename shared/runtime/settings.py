"""App settings: one table of settings read from the environment into one frozen object, without pydantic.

Every setting labguard reads is a field of :class:`Settings`, declared once with its app setting's name, what
it is for, its default and its reader; ``SETTINGS`` and ``KNOWN_SETTINGS`` are derived from the fields, so
`local.settings.sample.json`, the Bicep template and the README are checked against the class itself. Bad
values raise SettingsError: one line naming the setting and what to write instead, never the value; every
setting is checked and nothing runs on a bad configuration. Secrets (the SMTP password, the topic key, the
storage connection string, webhook URLs, which carry their own token) are :class:`Secret`: repr, str, logs
and errors show ``**********``; the clients that need the value unwrap it where they open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

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
# Each raises SettingsError whose text is the one line the admin sees, or _WrongKind for a value that is not
# even of the setting's kind (an override from code): that line is then the setting and what it takes.


class _WrongKind(ValueError):
    """A value of the wrong kind (not text where text is read); the refusal names the setting and its use."""


class Secret:
    """A secret's text (a password, a key, a connection string, a webhook URL): repr and str show
    ``**********``, so a log record, an error or a dump of :class:`Settings` never shows it; the one client
    that sends it calls :meth:`get_secret_value` where it opens (the same method as pydantic's SecretStr)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _WrongKind
    return value


def _secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(_text(value))


def _secrets(value: object) -> tuple[Secret, ...]:
    return tuple(Secret(text) for text in _csv(value))


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


Mode = Literal["audit", "enforce"]
Fanout = Literal["auto", "on", "off"]
_MODES: dict[str, Mode] = {"audit": "audit", "enforce": "enforce"}
_FANOUTS: dict[str, Fanout] = {"auto": "auto", "on": "on", "off": "off"}


def _mode(value: object) -> Mode:
    mode = _MODES.get(str(value).strip().lower())
    if mode is None:
        raise SettingsError("LABGUARD_MODE is neither audit nor enforce: write 'audit' (report only) or 'enforce'")
    return mode


def _fanout(value: object) -> Fanout:
    fanout = _FANOUTS.get(str(value).strip().lower())
    if fanout is None:
        raise SettingsError("LABGUARD_SWEEP_FANOUT: write 'auto' (queue from 10 scopes up), 'on' or 'off'")
    return fanout


def _arm_endpoint(value: object) -> str:
    arm = str(value).strip().rstrip("/")
    if not arm.startswith("https://"):
        raise SettingsError(
            "LABGUARD_ARM_ENDPOINT is not an https:// URL: write one, such as https://management.azure.com"
        )
    return arm


def _whole_number(name: str, low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SettingsError(f"{name} is not a whole number: write one from {low} to {high}") from None
        if not low <= number <= high:
            raise SettingsError(f"{name} is out of range: write a whole number from {low} to {high}")
        return number

    return check


def _seconds(name: str, low: int, high: int) -> Callable[[object], float]:
    """A whole number of seconds, held as a float (what the waits take)."""
    whole = _whole_number(name, low, high)
    return lambda value: float(whole(value))


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


def _address(name: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not _ADDRESS.match(str(value)):
            raise SettingsError(f"{name} is not one plain address: write one, such as it-admins@school.example")
        return str(value)

    return check


def _on_off(name: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("on", "true", "1"):
            return True
        if word in ("off", "false", "0"):
            return False
        raise SettingsError(f"{name} is neither on nor off: write on or off")  # never the value (settings.refused)

    return check


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


_T = TypeVar("_T")


def _setting(name: str, read: Callable[[object], _T], description: str, default: _T) -> _T:
    """One row of the table: the app setting's name, its reader, what it is for and its default (the field's
    name and type are the attribute's). Typed as the value so mypy checks reader, default and field agree."""
    return field(default=default, metadata={"setting": (name, description, read)})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every app setting labguard reads; built by :meth:`from_env` (the environment, then the overrides).

    A frozen dataclass read by hand, not a pydantic model: pydantic's import (pydantic_core, annotated_types,
    importlib.metadata for its plugin loader) and the model's build were about 85 ms of a new instance's first
    event (measured with the policy's checked copy, bench/firstevent.py, median of 7 fresh processes: the
    function's own time 325 ms with the model, 240 ms without); this module's import and first read take
    10 ms in a fresh interpreter (102 ms as the model). The readers below were already all the checking;
    pydantic added only the kind checks (``_text``, ``_secret``) and SecretStr (:class:`Secret`).
    """

    mode_override: Mode | None = _setting(
        "LABGUARD_MODE", _mode, "audit (default: report only) or enforce (apply minimal patches)", None
    )
    policy_file: str = _setting(
        "LABGUARD_POLICY_FILE",
        _text,
        "path of the policy file (default policy.yaml beside function_app.py)",
        "policy.yaml",
    )
    arm_endpoint: str = _setting(
        "LABGUARD_ARM_ENDPOINT",
        _arm_endpoint,
        "Azure Resource Manager endpoint (default the public cloud)",
        PUBLIC_CLOUD_ARM,
    )
    arm_audience_setting: str | None = _setting(
        "LABGUARD_ARM_AUDIENCE",
        _text,
        "token audience for ARM (default: the endpoint; the public cloud's is https://management.azure.com/)",
        None,
    )
    ca_bundle: str | None = _setting(
        "LABGUARD_CA_BUNDLE", _text, "PEM file of extra CAs to trust for outgoing HTTPS (optional)", None
    )
    subscriptions: tuple[str, ...] = _setting(
        "LABGUARD_SUBSCRIPTIONS", _subscriptions, "comma-separated subscription ids in scope", ()
    )
    resource_groups: tuple[str, ...] = _setting(
        "LABGUARD_RESOURCE_GROUPS", _lower_csv, "optional comma-separated resource groups narrowing the scope", ()
    )
    schedule: str = _setting(  # read by the Functions host (%LABGUARD_SCHEDULE%); listed so infra carries it
        "LABGUARD_SCHEDULE", _text, "NCRONTAB schedule of the sweep (default every 15 minutes)", DEFAULT_SCHEDULE
    )
    concurrency: int = _setting(
        "LABGUARD_CONCURRENCY",
        _whole_number("LABGUARD_CONCURRENCY", 1, 256),
        "how many plans a sweep reads or patches at once (default 16)",
        16,
    )
    sweep_fanout: Fanout = _setting(
        "LABGUARD_SWEEP_FANOUT",
        _fanout,
        "auto (default: a queue message per scope from 10 scopes up), on, or off (one invocation)",
        "auto",
    )
    list_concurrency: int = _setting(
        "LABGUARD_LIST_CONCURRENCY",
        _whole_number("LABGUARD_LIST_CONCURRENCY", 1, 64),
        "how many scopes a sweep lists at once (default 4; memory follows it, not the estate)",
        4,
    )
    smtp_host: str | None = _setting("LABGUARD_SMTP_HOST", _text, "SMTP relay for failure notices (optional)", None)
    smtp_port: int = _setting(
        "LABGUARD_SMTP_PORT", _whole_number("LABGUARD_SMTP_PORT", 1, 65535), "SMTP port (default 587, STARTTLS)", 587
    )
    smtp_username: str | None = _setting("LABGUARD_SMTP_USERNAME", _text, "SMTP login (optional)", None)
    smtp_password: Secret | None = _setting(
        "LABGUARD_SMTP_PASSWORD", _secret, "SMTP password (secret; use a Key Vault reference)", None
    )
    mail_from: str | None = _setting("LABGUARD_MAIL_FROM", _text, "sender address of failure notices", None)
    fallback_email: str | None = _setting(
        "LABGUARD_FALLBACK_EMAIL", _text, "where notices go when a plan has no valid support email", None
    )
    eventgrid_topic_endpoint: str | None = _setting(
        "LABGUARD_EVENTGRID_TOPIC_ENDPOINT", _text, "Event Grid custom topic for failure notices (optional)", None
    )
    eventgrid_topic_key: Secret | None = _setting(
        "LABGUARD_EVENTGRID_TOPIC_KEY", _secret, "access key of that topic (secret)", None
    )
    webhook_urls: tuple[Secret, ...] = _setting(
        "LABGUARD_WEBHOOK_URLS",
        _secrets,
        "comma-separated incoming-webhook URLs (Teams/Slack style) for notices (secret: each URL carries a token)",
        (),
    )
    support_url_hosts: tuple[str, ...] = _setting(
        "LABGUARD_SUPPORT_URL_HOSTS",
        _lower_csv,
        "comma-separated exact host names whose supportInfo.url may receive notices",
        (),
    )
    ledger_table: str = _setting(
        "LABGUARD_LEDGER_TABLE",
        _text,
        "Table storage table of the notice ledger (default labguardnotices)",
        "labguardnotices",
    )
    notice_wait_s: float = _setting(
        "LABGUARD_NOTICE_WAIT_SECONDS",
        _seconds("LABGUARD_NOTICE_WAIT_SECONDS", 1, 25),
        "how long one trigger waits for a failure notice step (1-25, default 5); "
        "the rest finishes in the background or in the next sweep",
        5.0,
    )
    storage_connection: Secret | None = _setting(
        "AzureWebJobsStorage",
        _secret,
        "storage connection string (local: Azurite; secret: it may hold the account key); also holds the notice ledger",
        None,
    )
    storage_table_service_uri: str | None = _setting(
        "AzureWebJobsStorage__tableServiceUri",
        _text,
        "table endpoint of identity-based host storage; the ledger uses it",
        None,
    )
    storage_blob_service_uri: str | None = _setting(
        "AzureWebJobsStorage__blobServiceUri",
        _text,
        "blob endpoint of identity-based host storage; the compliance page uses it",
        None,
    )
    storage_account_name: str | None = _setting(
        "AzureWebJobsStorage__accountName",
        _text,
        "identity-based host storage by account name (public cloud): the ledger uses https://NAME.table.core.windows.net",
        None,
    )
    storage_queue_service_uri: str | None = _setting(
        "AzureWebJobsStorage__queueServiceUri",
        _text,
        "queue endpoint of identity-based host storage; the sweep fan-out uses it",
        None,
    )
    ledger_table_endpoint_setting: str | None = _setting(
        "LABGUARD_LEDGER_TABLE_ENDPOINT",
        _text,
        "ledger table endpoint, with the app's credential (optional; wins)",
        None,
    )
    changes_table: str = _setting(
        "LABGUARD_CHANGES_TABLE",
        _text,
        "Table storage table of the changes labguard made (default labguardchanges)",
        "labguardchanges",
    )
    report_container: str | None = _setting(
        "LABGUARD_REPORT_CONTAINER",
        _container,
        "blob container for the compliance page after each sweep (optional; empty: off)",
        None,
    )
    report_account_url: str | None = _setting(
        "LABGUARD_REPORT_ACCOUNT_URL",
        _report_account_url,
        "blob endpoint of that container, reached with the app's identity (optional)",
        None,
    )
    digest_email: str | None = _setting(
        "LABGUARD_DIGEST_EMAIL",
        _address("LABGUARD_DIGEST_EMAIL"),
        "admin address for the daily digest over the SMTP settings (optional; empty: off)",
        None,
    )
    azure_client_id: str | None = _setting(  # read by the credential itself (shared.edge.identity)
        "AZURE_CLIENT_ID", _text, "client id of a user-assigned managed identity (optional)", None
    )
    labs: bool = _setting(
        "LABGUARD_LABS",
        _on_off("LABGUARD_LABS"),
        "on (default): labs are held to the policy too (sweep, events); off: lab plans only",
        True,
    )
    notify_changer: bool = _setting(
        "LABGUARD_NOTIFY_CHANGER",
        _on_off("LABGUARD_NOTIFY_CHANGER"),
        "on: mail the person whose change to a plan or lab enforce set back (default off)",
        False,
    )
    exemption_contact: str | None = _setting(
        "LABGUARD_EXEMPTION_CONTACT",
        _exemption_contact,
        "where people ask for an exemption (an address or https URL), named in those mails",
        None,
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

    def __post_init__(self) -> None:
        self._settings_that_combine_agree()

    def _settings_that_combine_agree(self) -> None:
        """The storage endpoints combine several settings: check them once, at load, not at first use. The
        changer mail, when on, needs a mail relay and somewhere to ask for an exemption, or nothing useful is sent.
        Run as each Settings is made, so only after every setting passed its own check (:meth:`from_env`)."""
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

    # -------------------------------------------------------------------------------- how it is read

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read and validate every setting from ``env`` (default the process environment), with ``overrides``
        (field names, e.g. the command line's ``subscriptions``) beating it; raise SettingsError (one line
        naming the setting) on a bad one. The environment is only read, never changed.

        As the Functions host reads app settings: names are case-sensitive (LABGUARD_MODE, not labguard_mode),
        a blank value is unset, and only labguard's own names are read from the (much larger) environment.
        Every setting is checked; the line is the first refusal's, with how many more there are."""
        env = dict(os.environ if env is None else env)  # one copy: os.environ decodes (and raises) on each lookup
        refuse_unresolved_references(env)
        unknown = overrides.keys() - _BY_ATTRIBUTE.keys()
        if unknown:
            raise TypeError(f"Settings.from_env() takes no setting named {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        refusals: list[str] = []
        for setting in SETTINGS:
            given = overrides.get(setting.attribute)
            if given is None:
                text = env.get(setting.name)
                if not isinstance(text, str) or not (given := text.strip()):
                    continue  # unset: the default
            try:
                values[setting.attribute] = setting.read(given)
            except ValueError as exc:  # a SettingsError (our own line) or a value of the wrong kind
                refusals.append(str(exc) if isinstance(exc, SettingsError) else setting.wrong_kind)
        if refusals:
            more = len(refusals) - 1
            raise SettingsError(
                refusals[0] + (f" (and {more} more bad setting{'s' if more > 1 else ''})" if more else "")
            )
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table: the field of :class:`Settings`, its app setting, what it is for, its
    default and the reader that turns the text (or an override) into the value or refuses it."""

    attribute: str
    name: str
    description: str
    default: object
    read: Callable[[object], object]

    @property
    def secret(self) -> bool:
        """Held as :class:`Secret` (never shown in repr, str, logs or errors)."""
        return self.read in (_secret, _secrets)

    @property
    def wrong_kind(self) -> str:
        """The refusal of a value that is not even of this setting's kind: the setting and what it takes."""
        return f"{self.name} is not valid: write {self.description}"


def _rows() -> tuple[Setting, ...]:
    rows = []
    for one in fields(Settings):
        name, description, read = one.metadata["setting"]
        rows.append(Setting(one.name, name, description, one.default, read))
    return tuple(rows)


# The table, in the order of the fields (the first bad one is the one a refusal names).
SETTINGS: tuple[Setting, ...] = _rows()
_BY_ATTRIBUTE: dict[str, Setting] = {setting.attribute: setting for setting in SETTINGS}

# app setting -> what it is for (documentation and drift tests between code, sample settings and infra).
KNOWN_SETTINGS: dict[str, str] = {setting.name: setting.description for setting in SETTINGS}


def secret_value(secret: Secret | None) -> str | None:
    """The secret itself, for the one client that sends it (SMTP login, topic credential); None when unset."""
    return None if secret is None else secret.get_secret_value()


def refuse_unresolved_references(env: Mapping[str, str]) -> None:
    """Refuse a setting that still holds ``@Microsoft.KeyVault(...)``: App Service could not resolve it.

    Every setting labguard reads is checked, and every other LABGUARD_* name too (a misspelt one would
    otherwise hide the failed reference). Used as is, the reference text would become a password or a
    connection string that fails later and far from its cause. The message names the setting and never
    shows the reference beyond its prefix.
    """
    held = [
        name
        for name, value in env.items()
        if (name in KNOWN_SETTINGS or name.startswith("LABGUARD_")) and _KEY_VAULT_REFERENCE.match(value)
    ]
    if held:
        raise SettingsError(
            f"{min(held)} holds an unresolved Key Vault reference (@Microsoft.KeyVault(...)): give the Function "
            "App's identity 'Key Vault Secrets User' on the vault and check the secret's name and version "
            "(the portal shows each reference's status under Environment variables)"
        )
