"""Which CAs outgoing connections trust: the system's, plus the admin's extra bundle when one is set.

``LABGUARD_CA_BUNDLE`` adds to the system store rather than replacing it (a campus TLS-inspecting
proxy, or the local endpoint's throwaway CA in tests), so ARM, Entra ID, SMTP and notice endpoints
keep working. Verification and hostname checks are never switched off. Callers build one context
per run and share it through one connection pool (a CA *file* handed to azure-core per request
would build a new context, and a new TLS connection, for every call).
"""

from __future__ import annotations

import ssl

from shared.errors import TrustError


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
