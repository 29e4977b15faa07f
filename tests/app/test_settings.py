"""App settings: bad values are refused with the setting's name; secrets stay out of repr()."""

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.runtime.logs import record
from shared.runtime.runs import load_settings
from shared.runtime.settings import KNOWN_SETTINGS, SETTINGS, Secret, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe() -> None:
    settings = Settings.from_env({})
    assert settings.mode_override is None
    assert settings.arm_endpoint == "https://management.azure.com"
    assert settings.subscriptions == ()


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"LABGUARD_MODE": "fix-everything"}, "LABGUARD_MODE"),
        ({"LABGUARD_SUBSCRIPTIONS": "my-subscription"}, "LABGUARD_SUBSCRIPTIONS"),
        ({"LABGUARD_ARM_ENDPOINT": "http://management.azure.com"}, "LABGUARD_ARM_ENDPOINT"),
        ({"LABGUARD_CONCURRENCY": "0"}, "LABGUARD_CONCURRENCY"),
        ({"LABGUARD_SMTP_PORT": "smtp"}, "LABGUARD_SMTP_PORT"),
        ({"LABGUARD_REPORT_CONTAINER": "Reports_2026"}, "LABGUARD_REPORT_CONTAINER"),
        ({"LABGUARD_REPORT_ACCOUNT_URL": "http://st.blob.core.windows.net/"}, "LABGUARD_REPORT_ACCOUNT_URL"),
        ({"LABGUARD_DIGEST_EMAIL": "IT Admins <admins@school.example>"}, "LABGUARD_DIGEST_EMAIL"),
        ({"LABGUARD_NOTIFY_CHANGER": "maybe"}, "LABGUARD_NOTIFY_CHANGER"),
        *(
            ({"LABGUARD_EXEMPTION_CONTACT": contact}, "LABGUARD_EXEMPTION_CONTACT")
            for contact in (
                "http://it.school.example/exemptions",  # not https
                "https://user@it.school.example/",  # userinfo disguises the host
                "https://10.0.0.1/exemptions",  # not a host name
                "https://it.school.example/a b",  # a space
                "https://it.school.example/\\x",  # a backslash
                "Lab Team <labs@school.example>",  # not one plain address
                "labs@school.example\r\nBcc: victim@evil.example",  # header injection
                "javascript:alert(1)",
            )
        ),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name) as caught:
        Settings.from_env(env)
    value = env[name]
    assert len(value) < 3 or value not in str(caught.value)  # settings.refused names the setting, never its value


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"LABGUARD_EXEMPTION_CONTACT": "lab-exemptions@school.example"}, "LABGUARD_SMTP_HOST"),
        ({"LABGUARD_SMTP_HOST": "smtp.school.example"}, "LABGUARD_EXEMPTION_CONTACT"),
    ],
)
def test_the_changer_mail_on_needs_the_relay_and_a_contact(env: dict[str, str], missing: str) -> None:
    with pytest.raises(SettingsError, match=f"LABGUARD_NOTIFY_CHANGER is on but {missing} is not set"):
        Settings.from_env({"LABGUARD_NOTIFY_CHANGER": "on", **env})


def test_the_changer_mail_is_off_by_default_and_on_takes_a_contact() -> None:
    assert Settings.from_env({}).notify_changer is False
    for contact in ("lab-exemptions@school.example", "https://it.school.example/lab-exemptions?form=1"):
        settings = Settings.from_env(
            {
                "LABGUARD_NOTIFY_CHANGER": "true",
                "LABGUARD_SMTP_HOST": "smtp.school.example",
                "LABGUARD_EXEMPTION_CONTACT": contact,
            }
        )
        assert settings.notify_changer is True
        assert settings.exemption_contact == contact


def test_subscriptions_are_normalised_and_resource_groups_narrow() -> None:
    settings = Settings.from_env(
        {
            "LABGUARD_SUBSCRIPTIONS": " 34ADFA4F-cedf-4dc0-ba29-b6d1a69ab345 ,",
            "LABGUARD_RESOURCE_GROUPS": "Labs-East, labs-west",
            "LABGUARD_MODE": "Enforce",
        }
    )
    assert settings.subscriptions == ("34adfa4f-cedf-4dc0-ba29-b6d1a69ab345",)
    assert settings.resource_groups == ("labs-east", "labs-west")
    assert settings.mode_override == "enforce"


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings.from_env({"LABGUARD_SMTP_PASSWORD": "hunter2", "LABGUARD_EVENTGRID_TOPIC_KEY": "k3y"})
    assert "hunter2" not in repr(settings)
    assert "k3y" not in repr(settings)


def test_sample_settings_list_every_setting_the_code_reads_and_hold_no_secret() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(KNOWN_SETTINGS) <= set(values)
    assert values["LABGUARD_MODE"] == "audit"
    assert values["LABGUARD_SMTP_PASSWORD"] == ""
    assert values["LABGUARD_EVENTGRID_TOPIC_KEY"] == ""


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_an_unusable_ca_bundle_is_refused_naming_the_setting(tmp_path: Path, content: str | None) -> None:
    from shared.edge.tls import ssl_context
    from shared.errors import TrustError

    bundle = tmp_path / "extra-ca.pem"
    if content is not None:
        bundle.write_text(content)
    with pytest.raises(TrustError, match="LABGUARD_CA_BUNDLE"):
        ssl_context(str(bundle))


def test_the_extra_ca_adds_to_the_system_store_and_keeps_verification_on(tmp_path: Path) -> None:
    import ssl

    import trustme

    from shared.edge.tls import ssl_context

    bundle = tmp_path / "extra-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    plain, extra = ssl_context(None), ssl_context(str(bundle))
    assert extra.cert_store_stats()["x509_ca"] == plain.cert_store_stats()["x509_ca"] + 1
    assert extra.verify_mode == ssl.CERT_REQUIRED and extra.check_hostname


def test_without_an_extra_ca_a_connector_verifies_with_the_default_context_at_tls_1_2_or_newer(tmp_path: Path) -> None:
    """No LABGUARD_CA_BUNDLE: aiohttp's default context (ssl.create_default_context(), built when aiohttp is
    imported), which checks certificates and host names and refuses TLS below 1.2, as ssl_context does."""
    import ssl

    import trustme

    from shared.edge.tls import connector_ssl, ssl_context

    assert connector_ssl(None) is True and connector_ssl("") is True
    default = ssl.create_default_context()
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    assert (
        default.minimum_version >= ssl.TLSVersion.TLSv1_2
        and ssl_context(None).minimum_version == default.minimum_version
    )
    bundle = tmp_path / "extra-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    extra = connector_ssl(str(bundle))
    assert isinstance(extra, ssl.SSLContext) and extra.verify_mode == ssl.CERT_REQUIRED and extra.check_hostname


@pytest.mark.parametrize(
    "name", ["LABGUARD_SMTP_PASSWORD", "AzureWebJobsStorage", "LABGUARD_EVENTGRID_TOPIC_KEY", "LABGUARD_SUBSCRIPTIONS"]
)
def test_an_unresolved_key_vault_reference_is_refused_naming_the_setting_not_the_secret(name: str) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-school.vault.azure.net/secrets/smtp-password/0123abcd)"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: reference})
    message = str(caught.value)
    assert message.startswith(f"{name} holds an unresolved Key Vault reference")
    assert "\n" not in message
    assert "kv-school" not in message and "smtp-password" not in message and "0123abcd" not in message


def test_a_resolved_secret_that_merely_mentions_key_vault_is_accepted() -> None:
    settings = Settings.from_env({"LABGUARD_SMTP_PASSWORD": "pw@Microsoft.KeyVault(x)"})
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "pw@Microsoft.KeyVault(x)"


# ---- the settings model: secrets, overrides, names ---------------------------------------------------

SECRETS = {
    "LABGUARD_SMTP_PASSWORD": "hunter2-smtp",
    "LABGUARD_EVENTGRID_TOPIC_KEY": "k3y-topic-0123456789",
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=c2VjcmV0LWFjY291bnQta2V5",
    "LABGUARD_WEBHOOK_URLS": "https://hooks.example/services/T000/B000/t0ken-webhook",
}
SECRET_LIKE = re.compile(r"PASSWORD|KEY|SECRET|TOKEN|WEBHOOK|^AzureWebJobsStorage$")


def test_every_secret_like_setting_is_a_secret() -> None:
    """A new setting named like a secret cannot slip in as plain text (it would show in repr and logs)."""
    assert [setting.attribute for setting in SETTINGS] == [one.name for one in dataclasses.fields(Settings)]
    assert list(KNOWN_SETTINGS) == [setting.name for setting in SETTINGS]
    for setting in SETTINGS:
        assert KNOWN_SETTINGS[setting.name] == setting.description and setting.description, setting.attribute
        if SECRET_LIKE.search(setting.name):
            assert setting.secret, f"{setting.name} looks secret: read it as a Secret"
            held = getattr(Settings.from_env({setting.name: "s3cret-value-0123"}), setting.attribute)
            assert all(isinstance(one, Secret) for one in (held if isinstance(held, tuple) else (held,))), held
    assert set(SECRETS) <= {a for a in KNOWN_SETTINGS if SECRET_LIKE.search(a)}


def test_secrets_never_reach_repr_str_dumps_or_records(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({**SECRETS, "LABGUARD_SMTP_HOST": "smtp.school.example"})
    with caplog.at_level(logging.INFO):
        record(logging.getLogger("labguard.test"), logging.INFO, "settings.loaded", settings=settings)
    dumped = dataclasses.asdict(settings)
    shown = [repr(settings), str(settings), json.dumps(dumped, default=str), str(dumped), caplog.text]
    for secret in SECRETS.values():
        for tail in {secret, secret.rsplit("=", 1)[-1], secret.rsplit("/", 1)[-1]}:
            assert not any(tail in text for text in shown), tail
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "hunter2-smtp"
    assert [url.get_secret_value() for url in settings.webhook_urls] == [SECRETS["LABGUARD_WEBHOOK_URLS"]]


def test_a_refusal_beside_secrets_is_one_line_without_any_value(caplog: pytest.LogCaptureFixture) -> None:
    """settings.refused names the setting and what to write; neither the bad value nor a secret is in it."""
    env = {**SECRETS, "LABGUARD_CONCURRENCY": "lots-of-them", "LABGUARD_MODE": "hunter2-smtp"}
    with caplog.at_level(logging.ERROR), pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith("LABGUARD_MODE is neither audit nor enforce: write 'audit'")
    assert message.endswith("(and 1 more bad setting)") and "\n" not in message
    assert "settings.refused" in caplog.text
    for text in (message, caplog.text):
        assert "lots-of-them" not in text and not any(secret in text for secret in SECRETS.values())


def test_a_value_of_the_wrong_kind_is_refused_naming_the_setting_and_what_it_takes() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}, policy_file=12345)
    assert str(caught.value) == "LABGUARD_POLICY_FILE is not valid: write " + KNOWN_SETTINGS["LABGUARD_POLICY_FILE"]
    assert "12345" not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}, smtp_password=987654321)
    assert str(caught.value) == "LABGUARD_SMTP_PASSWORD is not valid: write " + KNOWN_SETTINGS["LABGUARD_SMTP_PASSWORD"]


def test_every_setting_is_checked_and_the_refusal_counts_the_others() -> None:
    """As pydantic did: the first bad setting (in the table's order) is the line, the rest are counted; a bad
    override counts as one, and the combined checks wait until every setting passed its own."""
    env = {
        "LABGUARD_NOTIFY_CHANGER": "on",  # would fail the combined check (no relay): not reached
        "LABGUARD_SMTP_PORT": "smtp",
        "LABGUARD_SUBSCRIPTIONS": "my-subscription",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == (
        "LABGUARD_SUBSCRIPTIONS: entry 1 is not a subscription id; write GUIDs such as "
        "00000000-0000-0000-0000-000000000000, comma-separated (and 1 more bad setting)"
    )
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**env, "LABGUARD_LABS": "maybe"}, policy_file=12345)
    assert str(caught.value) == (
        "LABGUARD_POLICY_FILE is not valid: write "
        + KNOWN_SETTINGS["LABGUARD_POLICY_FILE"]
        + " (and 3 more bad settings)"
    )
    with pytest.raises(SettingsError, match=r"^LABGUARD_NOTIFY_CHANGER is on but LABGUARD_SMTP_HOST is not set"):
        Settings.from_env({"LABGUARD_NOTIFY_CHANGER": "on"})


def test_a_changed_copy_is_checked_as_a_loaded_one() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.notify_changer = True  # type: ignore[misc]
    with pytest.raises(SettingsError, match="LABGUARD_NOTIFY_CHANGER is on but LABGUARD_SMTP_HOST is not set"):
        dataclasses.replace(settings, notify_changer=True)


def test_reading_the_settings_imports_no_pydantic() -> None:
    """Importing pydantic was ~70 ms of a new instance's first event: a fresh interpreter reads every setting
    (and refuses a bad one) without it. Run from the repository root, as the Functions host runs the app."""
    probe = (
        "import sys\n"
        "from shared.errors import SettingsError\n"
        "from shared.runtime.settings import Settings\n"
        "settings = Settings.from_env({'LABGUARD_SUBSCRIPTIONS': '00000000-0000-0000-0000-000000000001',"
        " 'LABGUARD_SMTP_PASSWORD': 'pw', 'AzureWebJobsStorage__accountName': 'stlabguard'})\n"
        "assert settings.subscriptions and settings.ledger_table_endpoint\n"
        "try:\n"
        "    Settings.from_env({'LABGUARD_MODE': 'fix-everything'}, policy_file=1)\n"
        "except SettingsError:\n"
        "    pass\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('pydantic', 'pydantic_core')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_overrides_beat_the_environment_which_beats_the_defaults_and_nothing_is_written_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABGUARD_SUBSCRIPTIONS", "00000000-0000-0000-0000-00000000000a")
    monkeypatch.setenv("LABGUARD_RESOURCE_GROUPS", "labs-env")
    monkeypatch.setenv("LABGUARD_CONCURRENCY", "7")
    before = dict(os.environ)
    from_environ = Settings.from_env()
    assert from_environ.subscriptions == ("00000000-0000-0000-0000-00000000000a",)
    assert (from_environ.concurrency, from_environ.list_concurrency) == (7, 4)  # set, and the default
    overridden = Settings.from_env(
        subscriptions=["00000000-0000-0000-0000-00000000000B"], mode_override="enforce", resource_groups=None
    )
    assert overridden.subscriptions == ("00000000-0000-0000-0000-00000000000b",)
    assert overridden.mode_override == "enforce" and overridden.resource_groups == ("labs-env",)
    assert overridden.concurrency == 7
    assert dict(os.environ) == before


def test_an_overridden_setting_is_not_refused_for_its_environment_value() -> None:
    """As the command's --subscription always did: the flag replaces a bad LABGUARD_SUBSCRIPTIONS."""
    env = {"LABGUARD_SUBSCRIPTIONS": "my-subscription"}
    settings = Settings.from_env(env, subscriptions=["00000000-0000-0000-0000-000000000001"])
    assert settings.subscriptions == ("00000000-0000-0000-0000-000000000001",)
    with pytest.raises(SettingsError, match="LABGUARD_SUBSCRIPTIONS"):
        Settings.from_env(env)


def test_the_command_passes_its_flags_as_overrides_without_touching_the_environment() -> None:
    from labguard.runner import Flags, resolve_settings

    env = {"LABGUARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-00000000000a", "LABGUARD_MODE": "audit"}
    frozen = dict(env)
    settings = resolve_settings(
        env,
        Flags(subscriptions=["00000000-0000-0000-0000-00000000000c"], resource_groups=["RG-One,rg-two"]),
        mode="enforce",
    )
    assert settings.subscriptions == ("00000000-0000-0000-0000-00000000000c",)
    assert settings.resource_groups == ("rg-one", "rg-two") and settings.mode_override == "enforce"
    assert env == frozen


def test_only_the_app_settings_own_names_are_read() -> None:
    """Case-sensitive as the host, never by the Python field name, and blank means unset."""
    settings = Settings.from_env(
        {"smtp_password": "x", "labguard_mode": "enforce", "mode_override": "enforce", "LABGUARD_CONCURRENCY": "  "}
    )
    assert settings.smtp_password is None and settings.mode_override is None and settings.concurrency == 16


def test_functions_double_underscore_names_are_read_as_whole_names() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "stlabguard",
            "AzureWebJobsStorage__queueServiceUri": "https://stlabguard.queue.core.windows.net/",
        }
    )
    assert settings.ledger_table_endpoint == "https://stlabguard.table.core.windows.net"
    assert settings.blob_endpoint == "https://stlabguard.blob.core.windows.net"
    assert settings.queue_endpoint == "https://stlabguard.queue.core.windows.net"


def test_unknown_labguard_names_are_ignored_unless_they_hold_an_unresolved_key_vault_reference() -> None:
    assert Settings.from_env({"LABGUARD_NOT_A_SETTING": "anything"}).mode_override is None
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-school.vault.azure.net/secrets/smtp/1)"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"LABGUARD_SMTP_PASWORD": reference})
    assert str(caught.value).startswith("LABGUARD_SMTP_PASWORD holds an unresolved Key Vault reference")
    assert "kv-school" not in str(caught.value)


@pytest.mark.parametrize(
    "channel",
    [
        {},
        {"LABGUARD_SMTP_HOST": "smtp.school.example"},
        {"LABGUARD_EVENTGRID_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events"},
        {"LABGUARD_WEBHOOK_URLS": "https://hooks.example/services/T000/B000/t0ken"},
        {"LABGUARD_SUPPORT_URL_HOSTS": "it.school.example"},
    ],
)
def test_a_notifier_has_a_channel_exactly_when_the_settings_set_one(channel: dict[str, str]) -> None:
    """The runtime builds the notifier (and imports delivery) only when a channel is set: never when it would
    have one to deliver through."""
    from shared.notices.delivery import Notifier

    settings = Settings.from_env(channel)
    assert Notifier.from_settings(settings).enabled is settings.notice_channel_set is bool(channel)
