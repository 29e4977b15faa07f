"""Who is told that labguard undid their change (shared.notices.changer_message): claims as ARM writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared.core.plans import PlanId
from shared.notices.changer_claims import UPN_CLAIM, changer_from_event, changer_from_system_data
from shared.notices.changer_message import ChangerMessage, changes_from, who_to_tell

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
PERSON_OID = "2468adf0-8211-44e3-9512-85137af64708"

# The shape of a person's claims in an ARM event or activity log entry (Microsoft's documented example:
# no idtyp in older tokens; the UPN, names and scope under their long claim names).
DOCUMENTED_PERSON = {
    "aud": "https://management.core.windows.net/",
    "iss": "https://sts.windows.net/1e8d8218-c5e7-4578-9acc-9abbd5d23315/",
    "ver": "1.0",
    OID: PERSON_OID,
    UPN_CLAIM: "admin@contoso.com",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname": "John",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname": "Smith",
    "name": "John Smith",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name": "admin@contoso.com",
    "appid": "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
    "appidacr": "2",
    "http://schemas.microsoft.com/identity/claims/scope": "user_impersonation",
}


def event(claims: object, principal_type: str | None = None) -> dict[str, object]:
    evidence = {"principalType": principal_type} if principal_type else {}
    return {"claims": claims, "authorization": {"evidence": evidence}}


def test_a_person_in_the_documented_shape_is_told_at_their_upn() -> None:
    changer = changer_from_event(event(DOCUMENTED_PERSON, "User"))
    assert changer is not None and changer.skip is None
    assert (changer.address, changer.name, changer.object_id) == ("admin@contoso.com", "John Smith", PERSON_OID)


def test_the_name_falls_back_to_given_name_and_surname() -> None:
    claims = {k: v for k, v in DOCUMENTED_PERSON.items() if k != "name"}
    changer = changer_from_event(event({**claims, "idtyp": "user"}))
    assert changer is not None and changer.name == "John Smith" and changer.skip is None


@pytest.mark.parametrize(
    ("claims", "principal_type", "reason"),
    [
        # an app-only token: a service principal or managed identity (idtyp app, no UPN)
        ({OID: PERSON_OID, "appid": "x", "idtyp": "app"}, "ServicePrincipal", "app-only token"),
        # idtyp missing (older tokens) and no UPN: not a person either
        ({OID: PERSON_OID, "appid": "x"}, None, "no UPN claim"),
        # a UPN, but the role assignment that let it write is a service principal's
        (DOCUMENTED_PERSON, "ServicePrincipal", "principal is a ServicePrincipal"),
        # a guest (B2B) UPN and a Microsoft account's: not mailboxes
        ({**DOCUMENTED_PERSON, UPN_CLAIM: "eve_gmail.com#EXT#@contoso.onmicrosoft.com"}, "User", "not a plain mail"),
        ({**DOCUMENTED_PERSON, UPN_CLAIM: "live.com#eve@outlook.com"}, "User", "not a plain mail"),
        # header injection and a non-address
        ({**DOCUMENTED_PERSON, UPN_CLAIM: "eve@contoso.com\r\nBcc: x@evil.example"}, "User", "not a plain mail"),
        ({**DOCUMENTED_PERSON, UPN_CLAIM: "Eve <eve@contoso.com>"}, "User", "not a plain mail"),
    ],
)
def test_never_an_app_a_managed_identity_or_a_non_address(
    claims: dict[str, str], principal_type: str | None, reason: str
) -> None:
    changer = changer_from_event(event(claims, principal_type))
    assert changer is not None and changer.address is None
    assert changer.skip is not None and reason in changer.skip


@pytest.mark.parametrize("data", [None, "x", {}, {"claims": {}}, {"claims": ["upn"]}])
def test_no_claims_means_the_event_does_not_say(data: object) -> None:
    assert changer_from_event(data) is None


def test_hostile_claims_are_cleaned_and_capped() -> None:
    claims = {**DOCUMENTED_PERSON, "name": "Eve\r\nBcc: x@evil.example\u202e" + "A" * 5000, OID: "not-a-guid"}
    changer = changer_from_event(event(claims))
    assert changer is not None and changer.skip is None
    assert "\r" not in changer.name and "\n" not in changer.name and "\u202e" not in changer.name
    assert len(changer.name) <= 80 and changer.object_id is None


@pytest.mark.parametrize(
    ("who", "kind", "address", "reason"),
    [
        ("teacher@school.example", "User", "teacher@school.example", None),
        ("0f5e9a4c-1d2b-4c3a-9e8f-7a6b5c4d3e2f", "ManagedIdentity", None, "not a person"),
        ("04b07795-8ddb-461a-bbee-02f9e1bf7b46", "Application", None, "not a person"),
        ("key1", "Key", None, "not a person"),
        ("teacher", "User", None, "not a plain mail address"),
        (None, None, None, "does not say"),
    ],
)
def test_the_sweep_reads_systemdata_and_tells_only_a_user(
    who: str | None, kind: str | None, address: str | None, reason: str | None
) -> None:
    changer = changer_from_system_data(who, kind)
    assert changer.address == address and changer.source == "systemData"
    assert (changer.skip is None) if reason is None else (reason in (changer.skip or ""))


def test_the_event_caller_is_told_only_when_systemdata_agrees_they_wrote_last() -> None:
    caller = changer_from_event(event({**DOCUMENTED_PERSON, "idtyp": "user"}))
    assert who_to_tell(caller, "ADMIN@contoso.com", "User") == caller  # ARM ids and UPNs: case-insensitive
    assert who_to_tell(caller, None, None) == caller  # systemData silent: the claims say who
    for who, kind in (("someone@contoso.com", "User"), ("app-id", "Application")):
        told = who_to_tell(caller, who, kind)
        assert told.address is None and told.skip == "written again by someone else before labguard read it"
    assert who_to_tell(None, "teacher@school.example", "User").address == "teacher@school.example"


def test_the_sweep_tells_the_last_writer_only_of_a_recent_change() -> None:
    """systemData names the last writer however long ago: a write older than the window is not news to them,
    and the drift may come from a tightened policy, so the sweep does not write to them."""
    from datetime import UTC, datetime

    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    teacher = "teacher@school.example"
    recent = who_to_tell(None, teacher, "User", changed_at="2026-12-02T09:30:00.1234567Z", now=now)
    assert recent.address == teacher and recent.skip is None
    old = who_to_tell(None, teacher, "User", changed_at="2026-11-20T09:30:00Z", now=now)
    assert old.address is None and "older than 24 h" in (old.skip or "")
    for unreadable in (None, "", "yesterday", "\n\x1b[31m" * 1000):
        silent = who_to_tell(None, teacher, "User", changed_at=unreadable, now=now)
        assert silent.address is None and "does not say when" in (silent.skip or "")


def test_one_ledger_key_per_person_resource_and_hour() -> None:
    plan = PlanId.parse(
        "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg/providers/Microsoft.LabServices/labPlans/p"
    )
    changer = changer_from_system_data("Teacher@School.example", "User")
    finding = SimpleNamespace(field="properties.defaultConnectionProfile.webRdpAccess", observed="Public")
    changes = changes_from([SimpleNamespace(**vars(finding), patch_value="None", rule="connection.webRdpAccess")])

    def at(hour: int, minute: int) -> ChangerMessage:
        when = datetime(2026, 12, 2, hour, minute, tzinfo=UTC)
        return ChangerMessage.build(
            plan, kind="lab plan", changer=changer, changes=changes, contact="x@y.example", at=when
        )

    assert at(10, 1).digest == at(10, 59).digest != at(11, 0).digest
    assert "teacher@school.example" in at(10, 1).failure_key  # the address, case-folded
    assert len(at(10, 1).digest) == 32 and "teacher" not in at(10, 1).digest  # hashed, as failure keys are


async def test_a_failing_mail_step_never_fails_the_fix_the_event_or_the_sweep(caplog: pytest.LogCaptureFixture) -> None:
    from contextlib import AsyncExitStack

    from shared.runtime.reconcile import PlanOutcome
    from shared.runtime.runs import Runtime
    from shared.runtime.settings import Settings

    class Broken:
        async def after_fix(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in the mail step")

    runtime = Runtime(Settings.from_env({}), reconciler=None, session=None, stack=AsyncExitStack(), changer=Broken())  # type: ignore[arg-type]
    caplog.set_level("INFO", logger="labguard")
    await runtime.tell_changer(PlanOutcome("/subscriptions/x/p", "fixed"), None, "corr-1")
    [failed] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("changer.failed ")]
    assert '"reason": "unexpected RuntimeError"' in failed and '"correlation_id": "corr-1"' in failed
