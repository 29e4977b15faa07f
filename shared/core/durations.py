"""Delays as ARM writes them, read into ``timedelta`` and written back as ISO-8601.

The official Lab Services examples use two spellings for the same field: ISO-8601 durations
(``PT15M``, as in listLabPlans.json) and .NET ``TimeSpan`` text (``00:05`` = hh:mm, as in
getLabPlan.json). :func:`parse_delay` reads both; :func:`format_iso` always writes ISO-8601,
which is what labguard sends. :func:`parse_iso` reads ISO-8601 only (the policy file's form).

Years and months are refused: they have no fixed length, and ARM never writes them for delays.
Everything here is pure and raises only ``ValueError``.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["describe", "format_iso", "parse_delay", "parse_iso"]

_NUM = r"\d{1,12}(?:[.,]\d{1,9})?"
_ISO = re.compile(
    rf"^(?P<sign>[-+])?P(?:(?P<years>{_NUM})Y)?(?:(?P<months>{_NUM})M)?(?:(?P<weeks>{_NUM})W)?(?:(?P<days>{_NUM})D)?"
    rf"(?:T(?:(?P<hours>{_NUM})H)?(?:(?P<minutes>{_NUM})M)?(?:(?P<seconds>{_NUM})S)?)?$",
    re.IGNORECASE,
)
# .NET TimeSpan text: [-][d.]hh:mm[:ss[.fffffff]]
_CLOCK = re.compile(
    r"^(?P<sign>-)?(?:(?P<days>\d{1,8})\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{2})"
    r"(?::(?P<seconds>\d{2})(?:\.(?P<fraction>\d{1,7}))?)?$"
)
_MICROS = {"weeks": 604_800_000_000, "days": 86_400_000_000, "hours": 3_600_000_000, "minutes": 60_000_000}
_MAX_MICROS = timedelta.max // timedelta(microseconds=1)


def parse_iso(text: str) -> timedelta:
    """Read an ISO-8601 duration (``PT15M``, ``P0DT1H``, ``PT1H30M``, ``PT0.5S``); ValueError otherwise.

    Cached: a sweep reads the same few delay spellings on every plan (a profile put this parse at the
    top of labguard's own CPU per plan); a timedelta is immutable, and errors are never cached.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO-8601 duration; write e.g. PT15M")
    return _parse_iso(text) if len(text) <= 200 else _parse_iso_uncached(text)


@functools.lru_cache(maxsize=4096)
def _parse_iso(text: str) -> timedelta:
    return _parse_iso_uncached(text)


def _parse_iso_uncached(text: str) -> timedelta:
    stripped = text.strip()
    match = _ISO.match(stripped)
    if (
        match is None
        or stripped.upper().endswith("T")
        or not any(match.group(k) for k in _ISO.groupindex if k != "sign")
    ):
        raise ValueError(f"{text!r} is not an ISO-8601 duration; write e.g. PT15M")
    if match["years"] or match["months"]:
        raise ValueError(f"{text!r} uses years or months, which have no fixed length; write days, hours or minutes")
    micros = Decimal(0)
    try:
        for unit, scale in (*_MICROS.items(), ("seconds", 1_000_000)):
            if match[unit]:
                micros += Decimal(match[unit].replace(",", ".")) * scale
    except InvalidOperation:  # pragma: no cover - the regex admits only decimal numbers
        raise ValueError(f"{text!r} is not an ISO-8601 duration; write e.g. PT15M") from None
    return _to_timedelta(text, micros, negative=match["sign"] == "-")


def parse_delay(text: str | None) -> timedelta | None:
    """Read a delay in either form ARM uses: ISO-8601 (``PT5M``) or TimeSpan text (``00:05``, ``01:00:30``).

    ``hh:mm`` means hours and minutes (``01:00`` is one hour), as .NET's TimeSpan does.
    Returns None for None; raises ValueError for anything else that is not a duration.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration")
    return _parse_delay_text(text)


@functools.lru_cache(maxsize=1024)
def _parse_delay_text(text: str) -> timedelta:
    """Cached like :func:`parse_iso` (every plan of a sweep has three delays, in a few spellings);
    bounded, since plan owners write them; errors are never cached."""
    stripped = text.strip()
    clock = _CLOCK.match(stripped)
    if clock is None:
        return parse_iso(stripped)
    minutes, seconds = int(clock["minutes"]), int(clock["seconds"] or 0)
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a duration: minutes and seconds run from 00 to 59")
    micros = (
        Decimal(int(clock["days"] or 0)) * _MICROS["days"]
        + Decimal(int(clock["hours"])) * _MICROS["hours"]
        + Decimal(minutes) * _MICROS["minutes"]
        + Decimal(seconds) * 1_000_000
        + Decimal("0." + (clock["fraction"] or "0")) * 1_000_000
    )
    return _to_timedelta(text, micros, negative=clock["sign"] == "-")


def _to_timedelta(text: str, micros: Decimal, *, negative: bool) -> timedelta:
    whole = int(micros.to_integral_value())
    if whole > _MAX_MICROS:
        raise ValueError(f"{text!r} is too long to be a delay")
    delta = timedelta(microseconds=whole)
    return -delta if negative else delta


def format_iso(delta: timedelta) -> str:
    """Write a timedelta as ISO-8601, the way ARM does: ``PT15M``, ``PT1H30M``, ``P1DT2H``, ``PT0S``."""
    if delta < timedelta(0):
        return "-" + format_iso(-delta)
    days, rest = delta.days, delta.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P"
    if days:
        text += f"{days}D"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or delta.microseconds:
        clock += f"{seconds}.{delta.microseconds:06d}".rstrip("0").rstrip(".") + "S"
    if clock:
        text += "T" + clock
    return "PT0S" if text == "P" else text


def describe(delta: timedelta) -> str:
    """A short human reading of a delay: ``15 minutes``, ``1 hour 30 minutes``, ``2 days``."""
    if delta < timedelta(0):
        return "minus " + describe(-delta)
    parts: list[str] = []
    total = int(delta.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    if not parts:
        return "no delay" if not delta.microseconds else f"{delta.microseconds / 1_000_000:g} seconds"
    return " ".join(parts)
