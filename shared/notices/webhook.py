"""Outgoing HTTPS for notices: incoming webhooks (Teams / Slack) and the allow-listed support intake.

Whether ``supportInfo.url`` may be requested at all is :mod:`shared.notices.support_url`'s decision. Redirects
are never followed, anywhere. Webhook URLs carry their token in the path or query, so only their host
is ever logged or reported.

TLS trusts the system CAs plus ``LABGUARD_CA_BUNDLE`` when set; verification is never disabled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.edge.tls import connector_ssl
from shared.errors import DeliveryError
from shared.notices.message import Notice
from shared.notices.support_url import safe_host

TIMEOUT_SECONDS = 15


def https_session(ca_bundle: str | None) -> aiohttp.ClientSession:
    """One session for all notice HTTPS; proxies from the environment are not consulted."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=connector_ssl(ca_bundle)),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


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
