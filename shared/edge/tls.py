"""Which CAs outgoing connections trust: the system's, plus the admin's extra bundle when one is set.

``LABGUARD_CA_BUNDLE`` adds to the system store rather than replacing it (a campus TLS-inspecting
proxy, or the local endpoint's throwaway CA in tests), so ARM, Entra ID, SMTP and notice endpoints
keep working. Verification and hostname checks are never switched off. Callers build one context
per run and share it through one connection pool (a CA *file* handed to azure-core per request
would build a new context, and a new TLS connection, for every call).

Without an extra bundle an aiohttp connector is given ``ssl=True``: aiohttp's own default context,
which ``import aiohttp`` has already built from the system store with ``ssl.create_default_context()``
(verification and hostname checks on, TLS 1.2 or newer, as :func:`ssl_context`). Building ours too
would read the system store (about 150 certificates, some 25 ms) once more on the first event.
"""

from __future__ import annotations

import ssl

from shared.errors import TrustError


def connector_ssl(extra: str | None) -> ssl.SSLContext | bool:
    """What an aiohttp connector verifies with: aiohttp's default context (``True``) without an extra bundle."""
    return ssl_context(extra) if extra else True


def ssl_context(extra: str | None) -> ssl.SSLContext:
    """System CAs plus the optional extra PEM bundle; TLS 1.2 or newer."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra:
        try:
            ctx.load_verify_locations(cafile=extra)
        except (OSError, ssl.SSLError) as exc:
            raise TrustError(
                f"LABGUARD_CA_BUNDLE={extra!r}: cannot use it as CA certificates ({exc}); point it at a PEM file"
            ) from None
    return ctx
