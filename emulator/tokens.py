"""Access tokens the emulator's token endpoint issues and its ARM endpoint checks.

Tokens are JWT-shaped (header.payload.signature), signed HS256 with a key made at
start, so nothing outside this emulator instance can mint one it accepts. The payload
carries the claims a real Entra ID app-only token for ARM carries and that labguard
or the event claims need: ``aud``, ``iss``, ``iat``, ``nbf``, ``exp``, ``appid``,
``appidacr``, ``idp``, ``idtyp``, ``oid``, ``sub``, ``tid``, ``uti``, ``ver``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt

# Audiences ARM accepts (v1 tokens carry the resource as registered; both spellings occur).
ARM_AUDIENCES = (
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
)
_PRINCIPAL_NAMESPACE = uuid.UUID("4f1c3c55-8a5e-4a53-9d84-6a3c1f0e0b7a")
DEFAULT_TENANT_ID = str(uuid.uuid5(_PRINCIPAL_NAMESPACE, "labguard-emulator-tenant"))
TOKEN_LIFETIME_S = 3599
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # the public client a person's `az login` uses


class TokenError(Exception):
    """Why ARM refused a bearer token: ``code`` is ARM's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Caller:
    """Who made an ARM request, from the verified token."""

    client_id: str
    object_id: str
    tenant_id: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_user(self) -> bool:
        """A person's delegated token (``idtyp`` user with a UPN), not an app's or a managed identity's."""
        return self.claims.get("idtyp") == "user" and bool(self.claims.get("upn"))


class TokenIssuer:
    def __init__(self, tenant_id: str = DEFAULT_TENANT_ID) -> None:
        self.tenant_id = tenant_id
        self._key = secrets.token_bytes(32)
        # ARM's audiences plus, once the server knows it, its own base URL (with and without "/"),
        # as a private ARM (Azure Stack style) accepts tokens for its own endpoint.
        self.audiences: list[str] = list(ARM_AUDIENCES)

    def add_audience(self, url: str) -> None:
        base = url.rstrip("/")
        for aud in (base, base + "/"):
            if aud not in self.audiences:
                self.audiences.append(aud)

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    def principal_id(self, client_id: str) -> str:
        """The object id of the service principal for ``client_id`` (deterministic per tenant)."""
        return str(uuid.uuid5(_PRINCIPAL_NAMESPACE, f"{self.tenant_id}/{client_id.lower()}"))

    def issue(
        self, client_id: str, audience: str = "https://management.azure.com/", lifetime_s: int = TOKEN_LIFETIME_S
    ) -> str:
        now = int(time.time())
        oid = self.principal_id(client_id)
        payload = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
            "aio": secrets.token_urlsafe(24),
            "appid": client_id,
            "appidacr": "1",
            "idp": self.issuer,
            "idtyp": "app",
            "oid": oid,
            "rh": secrets.token_urlsafe(12),
            "sub": oid,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        return jwt.encode(payload, self._key, algorithm="HS256", headers={"kid": "emulator"})

    def user_principal_id(self, upn: str) -> str:
        """The object id of the user ``upn`` (deterministic per tenant, never equal to an app's)."""
        return str(uuid.uuid5(_PRINCIPAL_NAMESPACE, f"{self.tenant_id}/user/{upn.lower()}"))

    def issue_user(
        self,
        upn: str,
        name: str = "",
        *,
        audience: str = "https://management.azure.com/",
        lifetime_s: int = TOKEN_LIFETIME_S,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A delegated (user) token as Entra ID issues one to the Azure CLI or the portal for ARM: ``idtyp``
        ``user``, ``upn``, ``unique_name``, ``name``, ``scp`` ``user_impersonation``, the public client's
        ``appid`` with ``appidacr`` 0. ``extra`` overrides claims (a test's hostile name or UPN)."""
        now = int(time.time())
        oid = self.user_principal_id(upn)
        given, _, family = name.partition(" ")
        payload: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
            "acr": "1",
            "aio": secrets.token_urlsafe(24),
            "amr": ["pwd", "mfa"],
            "appid": AZURE_CLI_CLIENT_ID,
            "appidacr": "0",
            "family_name": family,
            "given_name": given,
            "idtyp": "user",
            "name": name,
            "oid": oid,
            "puid": secrets.token_hex(8).upper(),
            "rh": secrets.token_urlsafe(12),
            "scp": "user_impersonation",
            "sub": secrets.token_urlsafe(32),
            "tid": self.tenant_id,
            "unique_name": upn,
            "upn": upn,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
            **(extra or {}),
        }
        return jwt.encode(payload, self._key, algorithm="HS256", headers={"kid": "emulator"})

    def verify(self, token: str) -> Caller:
        """Check a bearer token the way ARM does; raise TokenError with ARM's code if it fails."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=self.audiences,
                issuer=self.issuer,
                options={"require": ["exp", "aud", "iss", "oid", "tid"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError(
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(
                "InvalidAuthenticationTokenAudience",
                "The access token has been obtained for wrong audience or resource. It should exactly match "
                "one of the allowed audiences " + ",".join(f"'{a}'" for a in self.audiences if a.endswith("/")) + ".",
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("InvalidAuthenticationToken", "The access token is invalid.") from exc
        return Caller(
            client_id=str(claims.get("appid", "")),
            object_id=str(claims["oid"]),
            tenant_id=str(claims["tid"]),
            claims=claims,
        )


def event_claims(caller: Caller) -> dict[str, str]:
    """The ``data.claims`` of an ARM Event Grid event: the token's claims, all as strings, with the
    long claim names ARM uses for the object id, tenant id and name identifier."""
    c = caller.claims
    out: dict[str, str] = {}
    for key in ("aud", "iss", "iat", "nbf", "exp", "aio", "appid", "appidacr"):
        if key in c:
            out[key] = str(c[key])
    out["http://schemas.microsoft.com/identity/claims/identityprovider"] = str(c.get("idp", ""))
    out["idtyp"] = str(c.get("idtyp", "app"))
    out["http://schemas.microsoft.com/identity/claims/objectidentifier"] = caller.object_id
    # A person's token: ARM writes these claims under their long names (the activity log's and events' shape).
    for short, long in (
        ("upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"),
        ("unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"),
        ("given_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"),
        ("family_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"),
        ("scp", "http://schemas.microsoft.com/identity/claims/scope"),
        ("name", "name"),
        ("puid", "puid"),
    ):
        if short in c:
            out[long] = str(c[short])
    out["rh"] = str(c.get("rh", ""))
    out["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"] = caller.object_id
    out["http://schemas.microsoft.com/identity/claims/tenantid"] = caller.tenant_id
    out["uti"] = str(c.get("uti", ""))
    out["ver"] = str(c.get("ver", "1.0"))
    return out
