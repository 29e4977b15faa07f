"""Which CAs outgoing HTTPS trusts: the system's, plus the admin's extra bundle when one is set.

``LABGUARD_CA_BUNDLE`` adds to the system store rather than replacing it (a campus TLS-inspecting
proxy, or the local endpoint's throwaway CA in tests), so ARM, Entra ID and notice endpoints keep
working. Verification is never switched off.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from functools import cache
from pathlib import Path


class TrustError(ValueError):
    """The extra CA bundle cannot be used; the message names the setting and the file."""


def _system_cafile() -> str | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # pragma: no cover - certifi ships with requests, which azure-identity needs
        return None


@cache
def trust_bundle(extra: str | None) -> bool | str:
    """``True`` (system store) or the path of a PEM file holding the system CAs and the extra ones."""
    if not extra:
        return True
    try:
        extra_pem = Path(extra).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustError(f"LABGUARD_CA_BUNDLE={extra!r}: cannot read it ({exc}); point it at a PEM file") from None
    if "-----BEGIN CERTIFICATE-----" not in extra_pem:
        raise TrustError(f"LABGUARD_CA_BUNDLE={extra!r}: no PEM certificate in it; point it at a PEM file")
    system = _system_cafile()
    system_pem = Path(system).read_text(encoding="utf-8", errors="replace") if system else ""
    combined = system_pem.rstrip("\n") + "\n" + extra_pem
    digest = hashlib.sha256(combined.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"labguard-ca-{digest}.pem"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(combined, encoding="utf-8")
        tmp.replace(path)
    return str(path)


def ssl_context(extra: str | None) -> ssl.SSLContext:
    """An SSLContext for clients that take one (aiohttp, smtplib) with the same trust as the SDK."""
    bundle = trust_bundle(extra)
    return ssl.create_default_context() if bundle is True else ssl.create_default_context(cafile=str(bundle))
