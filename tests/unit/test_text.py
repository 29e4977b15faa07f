"""One sanitiser for every place untrusted text is shown: the command, reports, logs and notices."""

from __future__ import annotations

import json

import pytest
from unit_support import REPO, body

from labguard import cli, runner
from shared.core.text import clean_line, shown

HOSTILE = "Quota\u202eexceeded\u200b for\u2066 lab\r\nBcc: x@y\x1b[2J"


@pytest.mark.parametrize("text", [shown(HOSTILE), shown(HOSTILE, quote=False), clean_line(HOSTILE, 200)])
def test_bidi_zero_width_controls_and_line_breaks_never_pass(text: str) -> None:
    assert not any(ch in text for ch in "\u202e\u200b\u2066\r\n\x1b")
    assert "Quota" in text and "Bcc: x@y" in text


def test_shown_quotes_caps_and_names_nothing() -> None:
    assert shown(None) == "(none)"
    assert shown("a\u200bb", quote=True) == "'a b'"
    assert len(shown("x" * 500, quote=False, limit=50)) == 50


def test_the_commands_table_shows_a_hostile_error_message_cleaned(
    capsys: pytest.CaptureFixture[str], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABGUARD_POLICY_FILE", raising=False)
    data = body(state="Failed", resourceOperationError={"code": "Quota", "message": HOSTILE})
    path = tmp_path / "plans.json"  # type: ignore[operator]
    path.write_text(json.dumps([data]), encoding="utf-8")
    flags = runner.Flags(policy=str(REPO / "policy.yaml"))
    for as_json in (False, True):
        cli.audit_files([str(path)], flags, now=None, as_json=as_json)
        out = capsys.readouterr().out
        shown_text = out if not as_json else json.dumps(json.loads(out)["plans"][0]["findings"], ensure_ascii=False)
        assert "Quota" in shown_text
        assert not any(ch in shown_text for ch in "\u202e\u200b\u2066\x1b")


def test_the_printable_ascii_shortcut_cleans_as_the_full_scan_does() -> None:
    """clean_line skips its character scan for printable ASCII: every pair of ASCII characters, in a line with
    spaces around, comes out as the scan makes it (controls, DEL, tabs, line breaks included)."""
    import re

    from shared.core.text import _SPACES, _cap, is_dropped

    def scanned(text: str, cap: int) -> str:
        text = "".join(" " if (is_dropped(ch) or ch.isspace()) else ch for ch in text)
        return _cap(_SPACES.sub(" ", text).strip(), cap)

    for a in range(128):
        for b in range(128):
            line = f" x{chr(a)}{chr(b)}  y "
            assert clean_line(line, 6) == scanned(line, 6), repr(line)
    assert re.search(r"\s{2}", clean_line("a \t\x00 b", 20)) is None
