"""Notice model, rendering and hostile-input handling (pure, no servers)."""

from __future__ import annotations

import json
import unicodedata
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.failures import failure_key, normalise_timestamp
from shared.core.text import clean_block, clean_line
from shared.notices.message import CAP_MESSAGE, Notice, valid_addresses
from shared.notices.support_url import check_support_url, parse_allow_list, safe_host
from shared.notices.webhook import webhook_payload
from tests.notices.plans import SUB, SUPPORT, plan, plan_json

ALLOW = parse_allow_list(["help.school.example", "intake.school.example:8443"])


def test_notice_carries_everything_the_reader_needs() -> None:
    n = Notice.from_plan(plan(support={**SUPPORT, "url": "https://help.school.example/labs"}))
    assert n.plan_name == "physics-101" and n.resource_group == "rg-science-labs" and n.subscription_id == SUB
    assert n.portal_url == (
        f"https://portal.azure.com/#resource/subscriptions/{SUB}/resourceGroups/rg-science-labs"
        "/providers/Microsoft.LabServices/labPlans/physics-101"
    )
    assert n.recipients == ("physics-support@school.example",)
    text = n.text()
    assert "Action:       Update" in text and "Code:         SubnetInUse" in text
    assert "    Open a ticket with the lab name.\n    Urgent: call the phone number." in text
    html = n.html()
    assert "<a href='https://help.school.example/labs'>" in html
    assert f"<a href='{n.portal_url}'>" in html
    data = n.as_data(correlation_id="c1")
    assert json.loads(json.dumps(data)) == data
    assert data["error"]["timestamp"] == "2024-05-01T10:15:00Z"


def test_plan_failed_without_error_details_still_renders() -> None:
    n = Notice.from_plan(plan(with_error=False, support=None))
    assert n.failure_key.endswith("|no-timestamp|no-code")
    assert "Code:         (not reported)" in n.text()
    assert "(no message)" in n.text()
    assert n.subject == "[labguard] Lab plan physics-101 failed"


def test_failure_key_agrees_across_spellings_of_the_same_error() -> None:
    a = failure_key(plan(timestamp="2024-05-01T10:15:00Z", code="SubnetInUse"))
    assert a == failure_key(plan(timestamp="2024-05-01T10:15:00.0000000Z", code="subnetinuse"))
    assert a == failure_key(plan(timestamp="2024-05-01T11:15:00+01:00", code=" SubnetInUse "))
    assert a != failure_key(plan(timestamp="2024-05-01T10:15:01Z"))
    assert a != failure_key(plan(code="QuotaExceeded"))
    assert a != failure_key(plan(name="chemistry-1"))
    assert normalise_timestamp("not a time") == "not a time"


def test_addresses_are_all_or_nothing() -> None:
    assert valid_addresses("a@school.example") == ("a@school.example",)
    assert valid_addresses("a@school.example; b@school.example, A@school.example") == (
        "a@school.example",
        "b@school.example",
    )
    for hostile in (
        "a@school.example\r\nBcc: victim@evil.example",
        "a@school.example\nvictim@evil.example",
        "Help Desk <a@school.example>",
        '"a b"@school.example',
        "a@school.example (weekdays)",
        "a@localhost",
        "a@sch\u043eol.example",
        "\u202ea@school.example",
        "",
    ):
        assert valid_addresses(hostile) == (), hostile


def test_hostile_header_values_become_one_line() -> None:
    n = Notice.from_plan(plan(code="X\r\nBcc: v@evil.example", action="A\x00B\u2028C"))
    assert "\r" not in n.subject and "\n" not in n.subject
    assert n.code == "X Bcc: v@evil.example" and n.action == "A B C"


def test_only_plain_http_links_are_clickable() -> None:
    for url in ("javascript:alert(1)", "https://x.example/'onmouseover='alert(1)", "data:text/html,<script>"):
        html = Notice.from_plan(plan(support={"url": url})).html()
        assert "<a href='javascript" not in html and "onmouseover='" not in html and "<script>" not in html


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\r\n<>&'\"\u202e\u200b\x00"),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(_text, st.integers(min_value=1, max_value=120))
def test_clean_line_is_one_safe_capped_line(value: str, cap: int) -> None:
    out = clean_line(value, cap)
    assert len(out) <= cap
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in out)
    assert out == out.strip()


@settings(max_examples=200, deadline=None)
@given(_text)
def test_clean_block_keeps_only_newlines(value: str) -> None:
    out = clean_block(value, 200)
    assert len(out) <= 200
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\n" for ch in out)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


@settings(max_examples=100, deadline=None)
@given(_text, _text, _text, _text)
def test_html_never_contains_markup_from_arm(code: str, message: str, phone: str, instructions: str) -> None:
    n = Notice.from_plan(plan(code=code, message=message, support={"phone": phone, "instructions": instructions}))
    parser = _Collect()
    parser.feed(n.html(note=code, correlation_id=message))
    assert parser.tags <= {"html", "head", "meta", "title", "body", "h2", "h3", "p", "strong", "table", "tr", "th"} | {
        "td",
        "pre",
        "a",
        "small",
        "br",
    }
    assert parser.attrs <= {"charset", "align", "valign", "style", "href"}
    assert len(n.message) <= CAP_MESSAGE


def test_support_url_guard_decisions() -> None:
    allowed = check_support_url("https://help.school.example/new?lab=1#frag", ALLOW)
    assert allowed.allowed and allowed.url == "https://help.school.example/new?lab=1"
    assert check_support_url("https://HELP.school.example./x", ALLOW).allowed
    assert check_support_url("https://intake.school.example:8443/x", ALLOW).allowed
    for url, why in (
        ("https://intake.school.example/x", "not in LABGUARD_SUPPORT_URL_HOSTS"),  # 443, but only 8443 is listed
        ("https://help.school.example:444/x", "not in LABGUARD_SUPPORT_URL_HOSTS"),
        ("https://help.school.example.evil.example/x", "not in LABGUARD_SUPPORT_URL_HOSTS"),
        ("http://help.school.example/x", "not https"),
        ("ftp://help.school.example/x", "not https"),
        ("//help.school.example/x", "not https"),
        ("https://user:pw@help.school.example/x", "userinfo"),
        ("https://help.school.example@evil.example/x", "userinfo"),
        ("https://10.0.0.5/x", "IP address"),
        ("https://0x7f.1/x", "IP address"),
        ("https://[fd00::1]/x", "IP address"),
        ("https://help.school.example:99999/x", "not a valid URL"),
        ("https://h\u0435lp.school.example/x", "non-ASCII"),
        ("https://help.school.example\\.evil.example/", "backslash"),
        ("https://help_school.example/x", "not a plain DNS name"),
        ("https://help.school.example/" + "a" * 3000, "longer than 2048"),
    ):
        decision = check_support_url(url, ALLOW)
        assert not decision.allowed, url
        assert why in decision.reason, (url, decision.reason)
    assert "is empty" in check_support_url("https://help.school.example/x", frozenset()).reason


def test_allow_list_entries() -> None:
    assert parse_allow_list(["Help.School.Example.", "a.example:8443", "10.0.0.1", "bad host", "x.example:0"]) == {
        ("help.school.example", 443),
        ("a.example", 8443),
    }


def test_webhook_hosts_only() -> None:
    assert (
        safe_host("https://team.webhook.office.com/webhookb2/SECRET/IncomingWebhook/TOKEN") == "team.webhook.office.com"
    )
    assert safe_host("https://user:pw@hooks.slack.com/services/T/B/X") == "hooks.slack.com"
    assert safe_host("not a url") == "invalid-host"


def test_slack_payload_defuses_mentions_and_teams_card_defuses_links() -> None:
    n = Notice.from_plan(plan(message="<!channel> see [here](https://evil.example) & <https://evil.example|x>"))
    slack = webhook_payload(n, "hooks.slack.com")
    blob = json.dumps(slack)
    assert "<!channel>" not in blob and "&lt;!channel&gt;" in blob and "<https://evil" not in blob
    teams = webhook_payload(n, "school.webhook.office.com")
    card_blob = json.dumps(teams["attachments"][0]["content"]["body"])
    assert "[here](https" not in card_blob
    assert teams["attachments"][0]["content"]["actions"][0]["url"] == n.portal_url


def test_plan_json_round_trip_names() -> None:
    body = plan_json(name="x-1", rg="rg.(a)")
    n = Notice.from_plan(plan(name="x-1", rg="rg.(a)"))
    assert n.plan_id.path == body["id"]
    assert n.portal_url.endswith(body["id"])
