"""The one text sanitiser: untrusted text (plan names, tags, supportInfo, error messages) made safe to show.

Used by the command, the reports and page, the logs and every notice: a value an owner wrote on a plan
never carries a line break, a control character or invisible formatting (bidi overrides, zero-width
characters) into a terminal, a report, a mail header or a chat card. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["ELLIPSIS", "clean_block", "clean_line", "is_dropped", "shown"]

ELLIPSIS = "…"
MAX_LINES = 60
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def is_dropped(ch: str) -> bool:
    """Control (Cc), format (Cf: bidi overrides, zero-width), separators (Zl/Zp), unassigned, surrogates,
    private use: never shown."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cn", "Cs", "Co")


def _cap(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[: cap - 1].rstrip() + ELLIPSIS


def clean_line(value: object, cap: int) -> str:
    """One safe line: every line break and control character becomes a space, runs of spaces collapse."""
    if value is None:
        return ""
    text = str(value)[: cap * 4]  # bound the work on absurd inputs before scanning them
    if not (text.isascii() and text.isprintable()):  # printable ASCII has nothing to drop (most text): no scan
        text = "".join(" " if (is_dropped(ch) or ch.isspace()) else ch for ch in text)
    return _cap(_SPACES.sub(" ", text).strip(), cap)


def clean_block(value: object, cap: int, max_lines: int = MAX_LINES) -> str:
    """Safe multi-line text: keeps line breaks (normalised to \\n), drops other controls, caps lines and length."""
    if value is None:
        return ""
    text = str(value)[: cap * 4].replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\u2028\u2029\x0b\x0c\x85]", "\n", text)
    lines = [clean_line(line, cap) for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], ELLIPSIS]
    return _cap("\n".join(lines), cap)


def shown(value: str | None, *, quote: bool = True, limit: int = 200) -> str:
    """Untrusted text as one line of a report, a log record or the command's table: :func:`clean_line`,
    quoted (``repr``) unless ``quote`` is false; ``(none)`` for None."""
    if value is None:
        return "(none)"
    text = clean_line(value, limit)
    return repr(text) if quote else text
