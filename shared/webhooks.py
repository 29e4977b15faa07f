"""Outgoing HTTPS for notices: incoming webhooks (Teams / Slack) and the allow-listed support intake.

``supportInfo.url`` is written by plan owners, so it is a server-side request forgery vector: labguard
requests it only when it is https, carries no userinfo, names a host (not an IP literal) and that
exact host (and port, 443 unless the entry says ``host:port``) is in ``LABGUARD_SUPPORT_URL_HOSTS``.
Redirects are never followed, anywhere. Webhook URLs carry their token in the path or query, so
only their host is ever logged or reported.

TLS trusts the system CAs plus ``LABGUARD_CA_BUNDLE`` when set; verification is never disabled.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from shared.notices import Notice
from shared.text import clean_line
from shared.tls import ssl_context

TIMEOUT_SECONDS = 15
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


class DeliveryError(Exception):
    """A channel did not accept the notice. The message is safe to log and report (no secrets)."""


def https_session(ca_bundle: str | None) -> aiohttp.ClientSession:
    """One session for all notice HTTPS; proxies from the environment are not consulted."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context(ca_bundle)),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


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


# ----------------------------------------------------------------------------- webhook payloads


def is_slack(host: str) -> bool:
    return host == "hooks.slack.com" or host.endswith(".slack.com")


def _slack_escape(text: str) -> str:
    # Slack's three control characters: without this, "<!channel>" in an error message pings everyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _card_text(text: str) -> str:
    # Adaptive Card TextBlocks render a Markdown subset: defuse links, emphasis and headings in hostile text.
    return re.sub(r"([\\`*_\[\]()#>~|])", r"\\\1", text)


def webhook_payload(notice: Notice, host: str, *, correlation_id: str | None = None) -> dict[str, Any]:
    """Slack-style ``{"text": ...}`` for Slack hosts, a Teams message with an Adaptive Card otherwise."""
    body = notice.text(correlation_id=correlation_id)
    if is_slack(host):
        return {"text": _slack_escape(notice.summary), "blocks": _slack_blocks(body)}
    facts = [
        {"title": "Plan", "value": _card_text(notice.plan_name)},
        {"title": "Resource group", "value": _card_text(notice.resource_group)},
        {"title": "Subscription", "value": notice.subscription_id},
        {"title": "Action", "value": _card_text(notice.action or "(not reported)")},
        {"title": "Code", "value": _card_text(notice.code or "(not reported)")},
        {"title": "Time", "value": _card_text(notice.timestamp or "(not reported)")},
    ]
    contacts = [
        {"title": label, "value": _card_text(value)}
        for label, value in (
            ("Help page", notice.support_url),
            ("Email", notice.support_email),
            ("Phone", notice.support_phone),
            ("Instructions", notice.support_instructions),
        )
        if value
    ] or [{"title": "Support", "value": "This plan has no support information."}]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "size": "Medium",
                "weight": "Bolder",
                "wrap": True,
                "text": _card_text(notice.subject),
            },
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "wrap": True, "text": _card_text(notice.message or "(no message)")},
            {"type": "TextBlock", "weight": "Bolder", "text": "Who to contact"},
            {"type": "FactSet", "facts": contacts},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Open in the Azure portal", "url": notice.portal_url}],
    }
    return {
        "type": "message",
        "summary": notice.summary,
        "text": _card_text(notice.summary),
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }


def _slack_blocks(body: str) -> list[dict[str, Any]]:
    text = _slack_escape(body)
    chunks = [text[i : i + 2900] for i in range(0, min(len(text), 2900 * 3), 2900)]
    return [{"type": "section", "text": {"type": "plain_text", "text": chunk}} for chunk in chunks]


# ----------------------------------------------------------------------------- posting


async def post_json(session: aiohttp.ClientSession, url: str, payload: Mapping[str, Any]) -> str:
    """POST JSON without following redirects. Returns a safe detail; raises DeliveryError otherwise.

    Messages name the host only: webhook URLs carry their secret in the path or query.
    """
    host = safe_host(url)
    try:
        async with session.post(
            url,
            json=payload,
            allow_redirects=False,
            headers={"User-Agent": "labguard-notices/1"},
        ) as response:
            status = response.status
            location = response.headers.get("Location", "")
            await response.read()
    except aiohttp.ClientSSLError as exc:
        raise DeliveryError(f"TLS to {host} failed: {type(exc).__name__}") from None
    except aiohttp.ClientConnectionError as exc:
        raise DeliveryError(f"cannot reach {host}: {type(exc).__name__}") from None
    except TimeoutError:
        raise DeliveryError(f"{host} did not answer within {TIMEOUT_SECONDS} s") from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"request to {host} failed: {type(exc).__name__}") from None
    if 300 <= status < 400:
        raise DeliveryError(
            f"{host} answered HTTP {status} redirecting to {_redirect_target(location)}; redirects are never followed"
        )
    if not 200 <= status < 300:
        raise DeliveryError(f"{host} answered HTTP {status}")
    return f"{host} accepted the notice (HTTP {status})"


def _redirect_target(location: str) -> str:
    if not location:
        return "nowhere"
    try:
        absolute = bool(urlsplit(location).netloc)
    except ValueError:
        return "an invalid location"
    return safe_host(location) if absolute else "a path on the same host"
