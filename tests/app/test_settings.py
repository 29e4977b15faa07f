"""App settings: bad values are refused with the setting's name; secrets stay out of repr()."""

import json
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.runtime.settings import KNOWN_SETTINGS, Settings

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
    assert settings.smtp_password == "pw@Microsoft.KeyVault(x)"
