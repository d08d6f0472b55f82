"""The values a poll holds, whatever writes them: storable text, Discord emojis and ids, zones, times.

Shared by the import format (:mod:`polly.polls.definition`), the poll commands and the dashboard, so
a value means the same everywhere. Nothing here raises on bad input: each check says yes or no, or
why not.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import emoji

TIME_FORMAT = "%Y-%m-%dT%H:%M"
DEFAULT_TIMEZONE = "US/Eastern"
#: The column holding the zone name is VARCHAR(50); the longest IANA name is 32 characters.
MAX_TIMEZONE_LENGTH = 50
#: Times (local) fall in [EARLIEST_TIME, LATEST_TIME), so arithmetic on them (zone conversion, the
#: default close 24 hours later) never overflows the calendar.
EARLIEST_TIME = datetime(1971, 1, 1)  # noqa: DTZ001 - naive, the zone is attached later
LATEST_TIME = datetime(9000, 1, 1)  # noqa: DTZ001
#: Discord ids are unsigned 64-bit integers, written as 15-21 digits.
MAX_SNOWFLAKE = 2**64 - 1

_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_CUSTOM_EMOJI = re.compile(r"<a?:[A-Za-z0-9_]{2,32}:[0-9]{15,21}>")
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def is_snowflake(value: str) -> bool:
    """``value`` is a Discord id: 15-21 ASCII digits, at most 2**64 - 1 (no sign, space or newline)."""
    return _SNOWFLAKE.fullmatch(value) is not None and int(value) <= MAX_SNOWFLAKE


def is_valid_emoji(value: str) -> bool:
    """What Discord accepts as a reaction: ``<:name:id>`` / ``<a:name:id>``, or exactly one emoji.

    One emoji is one grapheme from Unicode's emoji list (the ``emoji`` package's data), with its
    variation selector, skin tone or ZWJ sequence (``❤️``, ``👍🏽``, ``🏳️‍🌈``), or a single regional
    indicator letter (🇦…🇿, upstream's default reactions). ``^``, ``°``, ``😀1`` or ``👍👎`` are not.
    """
    if _CUSTOM_EMOJI.fullmatch(value):
        return True
    if len(value) == 1 and 0x1F1E6 <= ord(value) <= 0x1F1FF:
        return True
    return emoji.is_emoji(value)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text on every database, or ``None``.

    A lone surrogate cannot be encoded as UTF-8 (nor sent to Discord); NUL and other control
    characters (except tab, newline and carriage return) are refused by PostgreSQL or mangled.
    """
    for ch in value:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return f"contains a lone surrogate (U+{ord(ch):04X}); text must be valid Unicode"
        if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS:
            return f"contains the control character U+{ord(ch):04X}; only tab and newlines are allowed"
    return None


def zone_or_none(tz_name: str) -> ZoneInfo | None:
    """The zone named ``tz_name``, or ``None`` for anything that is not one.

    Besides unknown names, :class:`ZoneInfo` raises ``IsADirectoryError`` for a directory of the
    zone database (``Europe``), ``OSError`` for a name too long for the file system and
    ``ValueError`` for a path-like or NUL-holding name: all are "not a zone" here.
    """
    if not tz_name or len(tz_name) > MAX_TIMEZONE_LENGTH or text_problem(tz_name) is not None:
        return None
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def format_local(naive_utc: datetime, tz_name: str) -> str:
    """A naive-UTC time as ``YYYY-MM-DDTHH:MM`` in ``tz_name`` (UTC if the name is unknown).

    A time too close to the ends of the calendar to convert is shown as UTC.
    """
    zone = zone_or_none(tz_name) or ZoneInfo("UTC")
    try:
        return naive_utc.replace(tzinfo=UTC).astimezone(zone).strftime(TIME_FORMAT)
    except (OverflowError, ValueError):
        return naive_utc.strftime(TIME_FORMAT)
