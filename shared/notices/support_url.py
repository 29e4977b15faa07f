"""Which URLs a notice may be sent to: ``supportInfo.url`` is written by plan owners, so it is a server-side
request forgery vector.

labguard requests it only when it is https, carries no userinfo, names a host (not an IP literal) and that
exact host (and port, 443 unless the entry says ``host:port``) is in ``LABGUARD_SUPPORT_URL_HOSTS``. Pure:
decided without any network access. :func:`safe_host` is the only part of a URL any channel logs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from shared.core.text import clean_line

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def safe_host(url: str) -> str:
    """The host of a URL for channel names and logs: never the path, query or userinfo."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        host = ""
    host = clean_line(host, 253).lower()
    return host if _HOSTNAME.match(host) or _is_ip(host) else "invalid-host"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- support URL guard


@dataclass(frozen=True)
class SupportUrlDecision:
    """Whether supportInfo.url may be requested; ``url`` is the normalised URL to POST when allowed."""

    allowed: bool
    host: str
    reason: str
    url: str | None = None


def parse_allow_list(entries: Iterable[str]) -> frozenset[tuple[str, int]]:
    """``help.school.edu`` means that host on 443; ``help.school.edu:8443`` that host on 8443."""
    allowed: set[tuple[str, int]] = set()
    for entry in entries:
        text = entry.strip().lower().rstrip(".")
        host, _, port_text = text.partition(":")
        host = host.rstrip(".")
        if not _HOSTNAME.match(host) or _is_numeric_host(host):
            continue
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            continue
        allowed.add((host, int(port_text) if port_text else 443))
    return frozenset(allowed)


def _is_numeric_host(host: str) -> bool:
    """IP literals in any spelling: 127.0.0.1, 127.1, 2130706433, 0x7f.1, [::1]."""
    if _is_ip(host):
        return True
    labels = host.rstrip(".").split(".")
    return bool(labels) and _NUMERIC_LABEL.match(labels[-1]) is not None


def check_support_url(url: str | None, allowed: frozenset[tuple[str, int]]) -> SupportUrlDecision:
    """Decide, without any network access, whether labguard may POST the notice to supportInfo.url."""
    if not url:
        return SupportUrlDecision(False, "none", "the plan has no supportInfo.url")
    host = safe_host(url) if len(url) <= 2048 else "invalid-host"

    def skip(reason: str) -> SupportUrlDecision:
        return SupportUrlDecision(False, host, reason)

    if len(url) > 2048:
        return skip("supportInfo.url is longer than 2048 characters")
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in url):
        return skip("supportInfo.url contains spaces, control or non-ASCII characters")
    if "\\" in url:
        return skip("supportInfo.url contains a backslash, which clients disagree on")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return skip("supportInfo.url is not a valid URL")
    if parts.scheme.lower() != "https":
        return skip(f"supportInfo.url is not https (scheme {clean_line(parts.scheme, 20)!r})")
    if "@" in parts.netloc:
        return skip("supportInfo.url carries userinfo (user@host), which can disguise the real host")
    hostname = (parts.hostname or "").rstrip(".")
    if not hostname:
        return skip("supportInfo.url has no host")
    if _is_numeric_host(hostname):
        return skip("supportInfo.url names an IP address; only allow-listed host names are requested")
    if not _HOSTNAME.match(hostname):
        return skip("supportInfo.url host is not a plain DNS name")
    if not allowed:
        return skip("LABGUARD_SUPPORT_URL_HOSTS is empty, so supportInfo.url is only shown in the notice")
    effective_port = port if port is not None else 443
    if (hostname, effective_port) not in allowed:
        where = hostname if port is None else f"{hostname}:{port}"
        return skip(f"{where} is not in LABGUARD_SUPPORT_URL_HOSTS")
    netloc = hostname if port is None else f"{hostname}:{port}"
    target = urlunsplit(("https", netloc, parts.path or "/", parts.query, ""))
    return SupportUrlDecision(True, hostname, "host is allow-listed", target)
