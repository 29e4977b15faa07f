"""Who made a change, from the untrusted places that say so: an ARM event's claims, or systemData.

Pure (no I/O, no Azure imports) and light: every Event Grid event is parsed with it, so it is on the first
event's path, while the mail about the change (:mod:`shared.notices.changer_message`) is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shared.core.text import clean_line

UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
GIVEN_NAME_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"
SURNAME_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"
CAP_NAME = 80

_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_valid_address(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 254 and _EMAIL.match(value) is not None


Source = Literal["event", "systemData"]
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Changer:
    """Who made the change, as far as labguard can tell. ``skip`` says why they are not written to."""

    address: str | None  # their UPN, only when it is a plain mail address
    name: str  # cleaned, capped display name ("" when not said)
    object_id: str | None
    source: Source
    skip: str | None = None

    @property
    def label(self) -> str:
        """Who, for a record: the address (validated) or the capped, cleaned name; never a raw value."""
        return self.address or self.name or (self.object_id or "unknown")


def plausible_address(value: object) -> bool:
    """A UPN labguard will write to: one plain ASCII address. A guest's ``...#EXT#@tenant`` or an MSA's
    ``live.com#user@...`` UPN is not a mailbox, so it is not written to."""
    return isinstance(value, str) and "#" not in value and is_valid_address(value)


def changer_from_event(data: object) -> Changer | None:
    """The caller an ARM event names (``data.claims``, ``data.authorization.evidence``); None without claims."""
    if not isinstance(data, Mapping):
        return None
    claims = data.get("claims")
    if not isinstance(claims, Mapping) or not claims:
        return None
    oid = _text(claims.get(OID_CLAIM)) or _text(claims.get("oid"))
    object_id = oid.lower() if oid and _GUID.match(oid) else None
    name = _display_name(claims)
    upn = _text(claims.get(UPN_CLAIM)) or _text(claims.get("upn"))
    idtyp = _text(claims.get("idtyp"))
    authorization = data.get("authorization")
    evidence = authorization.get("evidence") if isinstance(authorization, Mapping) else None
    principal_type = _text(evidence.get("principalType")) if isinstance(evidence, Mapping) else None

    def skip(reason: str) -> Changer:
        return Changer(None, name, object_id, "event", reason)

    if idtyp is not None and idtyp.lower() != "user":
        return skip(f"an app-only token (idtyp {clean_line(idtyp, 20)!r}): an application or managed identity")
    if principal_type is not None and principal_type.lower() in ("serviceprincipal", "msi", "managedidentity"):
        return skip(f"the role assignment's principal is a {clean_line(principal_type, 30)}, not a person")
    if upn is None:
        return skip("no UPN claim: an application, service principal or managed identity")
    if not plausible_address(upn):
        return skip("the UPN is not a plain mail address (a guest or external account, or malformed)")
    return Changer(upn, name, object_id, "event")


def changer_from_system_data(who: str | None, kind: str | None) -> Changer:
    """The last writer ``systemData`` names: written to only when it is a ``User`` with a mail address."""
    if not who or not kind:
        return Changer(None, "", None, "systemData", "systemData does not say who last changed it")
    if kind.lower() != "user":
        return Changer(
            None, "", None, "systemData", f"last changed by a {clean_line(kind, 30)} (systemData), not a person"
        )
    if not plausible_address(who):
        return Changer(None, "", None, "systemData", "lastModifiedBy is not a plain mail address")
    return Changer(who, "", None, "systemData")


def _display_name(claims: Mapping[str, object]) -> str:
    name = _text(claims.get("name"))
    if name is None:
        parts = [_text(claims.get(GIVEN_NAME_CLAIM)), _text(claims.get(SURNAME_CLAIM))]
        name = " ".join(p for p in parts if p) or None
    return clean_line(name, CAP_NAME) if name else ""


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
