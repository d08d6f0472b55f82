"""Poll definitions in upstream Polly's JSON import format: parsing and every validation rule.

A file holds one poll (a JSON object) or several (a JSON array of objects); a directory holds such
files (``*.json``, in name order). Every problem of every poll is collected before anything is
reported, each naming the file, the poll (index and name), the field, the value and the rule, so a
user fixes a file in one pass. Nothing here touches the database.

Fields (upstream's format; empty strings count as absent, as upstream's examples use them):

==================== ========================================================================
``name``             required, 3-255 characters
``question``         required, 5-2000 characters
``options``          required, 2-10 strings, each 1-500 characters
``emojis``           optional, exactly one per option, distinct; Unicode or ``<:name:id>``;
                     default 🇦, 🇧, … in order
``server_id``        Discord snowflake (digits); required to create, may come from the command line
``channel_id``       Discord snowflake; as ``server_id``
``multiple_choice``  boolean, default false
``max_choices``      integer from 1 to the number of options; only with ``multiple_choice``
``anonymous``        boolean, default false
``ping_role_enabled`` boolean; when true ``ping_role_id`` (a snowflake) is required
``ping_role_on_close`` / ``ping_role_on_update``  booleans, default false
``image_message_text`` at most 2000 characters
``open_time``        ``YYYY-MM-DDTHH:MM`` in ``timezone``; must be in the future unless
                     ``open_immediately``; absent means open immediately
``close_time``       ``YYYY-MM-DDTHH:MM``; after ``open_time`` by 1 minute to 30 days; absent means
                     24 hours after opening
``timezone``         an IANA name, default ``US/Eastern``
``open_immediately`` boolean, default false
==================== ========================================================================
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import emoji

from polly.db.models import POLL_EMOJIS
from polly.errors import PollValidationError

MAX_FILE_BYTES = 8 * 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M"
DEFAULT_TIMEZONE = "US/Eastern"
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=30)
DEFAULT_DURATION = timedelta(hours=24)

_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_CUSTOM_EMOJI = re.compile(r"<a?:[A-Za-z0-9_]{2,32}:[0-9]{15,21}>")
#: Discord ids are unsigned 64-bit integers.
_MAX_SNOWFLAKE = 2**64 - 1
#: The column holding the zone name is VARCHAR(50); the longest IANA name is 32 characters.
MAX_TIMEZONE_LENGTH = 50
#: Times (local) fall in [EARLIEST_TIME, LATEST_TIME), so arithmetic on them (zone conversion, the
#: default close 24 hours later) never overflows the calendar.
EARLIEST_TIME = datetime(1971, 1, 1)  # noqa: DTZ001 - naive, the zone is attached later
LATEST_TIME = datetime(9000, 1, 1)  # noqa: DTZ001
_ALLOWED_CONTROLS = frozenset("\t\n\r")

FIELDS = (
    "name", "question", "options", "emojis", "server_id", "channel_id", "multiple_choice", "max_choices",
    "anonymous", "ping_role_enabled", "ping_role_id", "ping_role_on_close", "ping_role_on_update",
    "image_message_text", "open_time", "close_time", "timezone", "open_immediately",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PollDefinition:
    """A validated poll, ready to be written. Times are naive UTC, as upstream stores them."""

    name: str
    question: str
    options: tuple[str, ...]
    emojis: tuple[str, ...]
    server_id: str
    channel_id: str
    multiple_choice: bool
    max_choices: int | None
    anonymous: bool
    ping_role_enabled: bool
    ping_role_id: str | None
    ping_role_on_close: bool
    ping_role_on_update: bool
    image_message_text: str | None
    open_time: datetime
    close_time: datetime
    timezone: str
    open_immediately: bool


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


def _absent(value: Any) -> bool:
    return value is None or value == ""


class _Checker:
    """Collects the problems of one poll, each prefixed with where it is."""

    def __init__(self, where: str, data: Mapping[str, Any]) -> None:
        self.where = where
        self.data = data
        self.problems: list[str] = []

    def fail(self, field: str, rule: str, *, show_value: bool = True) -> None:
        value = self.data.get(field)
        shown = f" {_short(value)}:" if show_value else ""
        self.problems.append(f"{self.where}: {field}:{shown} {rule}")

    def text(self, field: str, low: int, high: int, *, required: bool) -> str | None:
        value = self.data.get(field)
        if _absent(value):
            if required:
                self.fail(field, "is required", show_value=False)
            return None
        if not isinstance(value, str):
            self.fail(field, f"must be a string, got {type(value).__name__}")
            return None
        if (problem := text_problem(value)) is not None:
            self.fail(field, problem)
            return None
        if not low <= len(value.strip()) <= high:
            self.fail(field, f"must be {low}-{high} characters, got {len(value.strip())}")
            return None
        return value.strip()

    def flag(self, field: str) -> bool:
        value = self.data.get(field)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, got {type(value).__name__}")
            return False
        return value

    def snowflake(self, field: str) -> str | None:
        value = self.data.get(field)
        if _absent(value):
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _SNOWFLAKE.fullmatch(value) or int(value) > _MAX_SNOWFLAKE:
            self.fail(field, "must be a Discord id: 15-21 digits, at most 18446744073709551615")
            return None
        return value


def _short(value: Any) -> str:
    """``value`` as JSON, cut to 80 characters, printable on any terminal (surrogates escaped)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        text = f"<{type(value).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_local(checker: _Checker, field: str, zone: ZoneInfo | None) -> datetime | None:  # noqa: PLR0911
    value = checker.data.get(field)
    if _absent(value):
        return None
    if not isinstance(value, str):
        checker.fail(field, "must be a string YYYY-MM-DDTHH:MM")
        return None
    try:
        local = datetime.strptime(value, TIME_FORMAT)  # noqa: DTZ007 - the zone is attached below
    except ValueError:
        checker.fail(field, "must be a time in the form YYYY-MM-DDTHH:MM (e.g. 2025-01-20T09:00)")
        return None
    if zone is None:
        return None
    if not EARLIEST_TIME <= local < LATEST_TIME:
        checker.fail(field, f"must be from {EARLIEST_TIME.year} to {LATEST_TIME.year - 1}")
        return None
    aware = local.replace(tzinfo=zone)
    # A wall time skipped by a DST change does not survive the round trip through UTC.
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
        checker.fail(field, f"does not exist in {zone.key} (skipped by a daylight-saving change)")
        return None
    return aware.astimezone(UTC).replace(tzinfo=None)


def validate_poll(
    data: Any,
    where: str,
    *,
    now: datetime,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[PollDefinition | None, list[str]]:
    """Validate one poll object; returns the definition (or ``None``) and every problem found.

    ``now`` is naive UTC. ``defaults`` fill fields the object leaves absent (the command line's
    ``--server-id`` and ``--channel-id``, for example).
    """
    if not isinstance(data, Mapping):
        return None, [f"{where}: must be a JSON object with the poll's fields, got {type(data).__name__}"]
    merged = {**(defaults or {}), **{k: v for k, v in data.items() if not _absent(v)}}
    label = merged.get("name")
    if isinstance(label, str) and label.strip():
        where = f"{where} ({label.strip()!r})"
    c = _Checker(where, merged)
    allowed = ", ".join(FIELDS)
    c.problems.extend(
        f"{where}: {key if str(key).isprintable() else _short(key)}: unknown field; allowed: {allowed}"
        for key in data
        if key not in FIELDS
    )

    name = c.text("name", 3, 255, required=True)
    question = c.text("question", 5, 2000, required=True)
    options = _options(c)
    emojis = _emojis(c, options)
    server_id = c.snowflake("server_id")
    channel_id = c.snowflake("channel_id")
    for field, value in (("server_id", server_id), ("channel_id", channel_id)):
        if value is None and _absent(merged.get(field)):
            c.fail(field, "is required (in the file or on the command line)", show_value=False)
    multiple = c.flag("multiple_choice")
    anonymous = c.flag("anonymous")
    on_close, on_update = c.flag("ping_role_on_close"), c.flag("ping_role_on_update")
    max_choices = _max_choices(c, multiple, options)
    ping = c.flag("ping_role_enabled")
    ping_role_id = c.snowflake("ping_role_id")
    if ping and ping_role_id is None and _absent(merged.get("ping_role_id")):
        c.fail("ping_role_id", "is required when ping_role_enabled is true", show_value=False)
    image_text = c.text("image_message_text", 0, 2000, required=False)
    immediately = c.flag("open_immediately")
    open_time, close_time, tz_name = _times(c, now, immediately=immediately)

    if c.problems:
        return None, c.problems
    assert name is not None
    assert question is not None
    assert options is not None
    assert emojis is not None
    assert server_id is not None
    assert channel_id is not None
    assert open_time is not None
    assert close_time is not None
    poll = PollDefinition(
        name=name,
        question=question,
        options=tuple(options),
        emojis=tuple(emojis),
        server_id=server_id,
        channel_id=channel_id,
        multiple_choice=multiple,
        max_choices=max_choices,
        anonymous=anonymous,
        ping_role_enabled=ping,
        ping_role_id=ping_role_id,
        ping_role_on_close=on_close,
        ping_role_on_update=on_update,
        image_message_text=image_text,
        open_time=open_time,
        close_time=close_time,
        timezone=tz_name,
        open_immediately=immediately,
    )
    return poll, []


def _options(c: _Checker) -> list[str] | None:
    value = c.data.get("options")
    if _absent(value):
        c.fail("options", "is required: a list of 2-10 strings", show_value=False)
        return None
    if not isinstance(value, list) or not 2 <= len(value) <= 10:
        c.fail("options", "must be a list of 2-10 strings")
        return None
    out: list[str] = []
    for i, option in enumerate(value):
        problem = text_problem(option) if isinstance(option, str) else None
        if not isinstance(option, str) or problem or not 1 <= len(option.strip()) <= 500:
            rule = problem or "must be a string of 1-500 characters"
            c.problems.append(f"{c.where}: options[{i}]: {_short(option)}: {rule}")
        else:
            out.append(option.strip())
    return out if len(out) == len(value) else None


def _emojis(c: _Checker, options: list[str] | None) -> list[str] | None:
    value = c.data.get("emojis")
    count = len(options) if options is not None else None
    if _absent(value) or value == []:
        return POLL_EMOJIS[:count] if count is not None else None
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        c.fail("emojis", "must be a list of strings, one per option")
        return None
    emojis = [e.strip() for e in value]
    ok = True
    if count is not None and len(emojis) != count:
        c.fail("emojis", f"must have exactly one emoji per option: {count} options, {len(emojis)} emojis")
        ok = False
    for i, one in enumerate(emojis):
        if not is_valid_emoji(one):
            rule = "must be one emoji (as Discord accepts for a reaction) or <:name:id> / <a:name:id>"
            c.problems.append(f"{c.where}: emojis[{i}]: {_short(one)}: {rule}")
            ok = False
    if len(set(emojis)) != len(emojis):
        c.fail("emojis", "must be distinct: a reaction has to map to one option")
        ok = False
    return emojis if ok else None


def _max_choices(c: _Checker, multiple: bool, options: list[str] | None) -> int | None:
    value = c.data.get("max_choices")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        c.fail("max_choices", "must be an integer")
        return None
    if not multiple:
        c.fail("max_choices", "is only allowed with multiple_choice: true")
        return None
    high = len(options) if options is not None else 10
    if not 1 <= value <= high:
        c.fail("max_choices", f"must be from 1 to the number of options ({high})")
        return None
    return value


def _times(c: _Checker, now: datetime, *, immediately: bool) -> tuple[datetime | None, datetime | None, str]:
    tz_name = c.data.get("timezone", DEFAULT_TIMEZONE)
    zone: ZoneInfo | None = None
    if not isinstance(tz_name, str):
        c.fail("timezone", "must be an IANA time zone name such as US/Eastern or Europe/Berlin")
        tz_name = DEFAULT_TIMEZONE
    else:
        zone = zone_or_none(tz_name)
        if zone is None:
            c.fail("timezone", "is not a known IANA time zone name (e.g. US/Eastern, Europe/Berlin, UTC)")
    opened = _parse_local(c, "open_time", zone)
    closes = _parse_local(c, "close_time", zone)
    if immediately or (opened is None and _absent(c.data.get("open_time"))):
        opened = now.replace(second=0, microsecond=0)
    elif opened is not None and opened <= now:
        c.fail("open_time", "must be in the future (or set open_immediately: true)")
    if opened is not None and closes is None and _absent(c.data.get("close_time")):
        closes = opened + DEFAULT_DURATION
    if opened is not None and closes is not None:
        duration = closes - opened
        if duration < MIN_DURATION:
            c.fail("close_time", "must be at least 1 minute after open_time")
        elif duration > MAX_DURATION:
            c.fail("close_time", "must be at most 30 days after open_time")
    return opened, closes, tz_name


def _read_json(path: Path) -> tuple[Any, list[str]]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, [f"{path}: is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (8 MB)"]
        raw = path.read_bytes()
    except OSError as err:
        return None, [f"{path}: cannot be read: {err.strerror or err}"]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return None, [f"{path}: is not UTF-8 text (invalid byte at offset {err.start})"]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as err:
        return None, [f"{path}: is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"]
    except RecursionError:
        return None, [f"{path}: is nested too deeply to be a poll file (a poll needs 3 levels)"]


def json_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.json`` files of a directory in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    return [path]


def load_definitions(
    paths: Iterable[Path],
    *,
    now: datetime,
    defaults: Mapping[str, Any] | None = None,
) -> list[PollDefinition]:
    """Every poll of every file, or :class:`PollValidationError` listing every problem of every file."""
    polls: list[PollDefinition] = []
    problems: list[str] = []
    files = [f for p in paths for f in json_files(p)]
    if not files:
        raise PollValidationError(["no JSON files found"])
    for file in files:
        data, errors = _read_json(file)
        problems.extend(errors)
        if errors:
            continue
        items = data if isinstance(data, list) else [data]
        if not items:
            problems.append(f"{file}: the list holds no polls")
        for index, item in enumerate(items):
            poll, errs = validate_poll(item, f"{file}: poll {index + 1}", now=now, defaults=defaults)
            problems.extend(errs)
            if poll is not None:
                polls.append(poll)
    if problems:
        raise PollValidationError(problems)
    return polls


def to_json(
    *,
    name: str,
    question: str,
    options: list[str],
    emojis: list[str],
    open_time: datetime,
    close_time: datetime,
    timezone: str | None,
    extra: Mapping[str, Any],
    to_local: Callable[[datetime, str], str] | None = None,
) -> dict[str, Any]:
    """One poll in the import format; naive-UTC times are written in the poll's time zone."""
    tz_name = timezone or "UTC"
    local = to_local or format_local
    return {
        "name": name,
        "question": question,
        "options": options,
        "emojis": emojis,
        **extra,
        "open_time": local(open_time, tz_name),
        "close_time": local(close_time, tz_name),
        "timezone": tz_name,
    }


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
