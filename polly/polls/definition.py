"""Poll definitions in upstream Polly's JSON import format: parsing and every validation rule.

A file holds one poll (a JSON object) or several (a JSON array of objects); a directory holds such
files (``*.json``, in name order). :class:`PollDefinition` is a pydantic model: validating a poll
collects every problem with its location, and :func:`validate_poll` words each as one line naming the
file, the poll (index and name), the field, the value and the rule, so a user fixes a file in one
pass. Nothing here touches the database.

The fields, their types, rules and defaults are upstream's, tabled in ``docs/polls.md`` ("The JSON
import format"); empty strings count as absent, as upstream's examples use them.

The model's fields are declared in the order their rules depend on one another (a field's
validator sees the fields validated before it, ``info.data``): ``emojis`` after ``options``,
``max_choices`` after ``multiple_choice``, the times after ``timezone`` and ``open_immediately``.
A field that failed is absent from ``info.data``, so a rule depending on it is skipped rather than
reported twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from polly.db.models import POLL_EMOJIS
from polly.errors import PollValidationError
from polly.polls.values import (
    DEFAULT_TIMEZONE,
    EARLIEST_TIME,
    LATEST_TIME,
    TIME_FORMAT,
    format_local,
    is_snowflake,
    is_valid_emoji,
    text_problem,
    zone_or_none,
)

__all__ = [
    "DEFAULT_TIMEZONE", "FIELDS", "MAX_DURATION", "MAX_FILE_BYTES", "PollDefinition", "format_local",
    "is_valid_emoji", "json_files", "load_definitions", "to_json", "validate_poll",
]  # fmt: skip

MAX_FILE_BYTES = 8 * 1024 * 1024
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=30)
DEFAULT_DURATION = timedelta(hours=24)

#: The fields, in upstream's order (the order the "unknown field" problem lists them in).
FIELDS = (
    "name", "question", "options", "emojis", "server_id", "channel_id", "multiple_choice", "max_choices",
    "anonymous", "ping_role_enabled", "ping_role_id", "ping_role_on_close", "ping_role_on_update",
    "image_message_text", "open_time", "close_time", "timezone", "open_immediately",
)  # fmt: skip
#: What a missing required field is told.
_REQUIRED = {
    "name": "is required",
    "question": "is required",
    "options": "is required: a list of 2-10 strings",
    "server_id": "is required (in the file or on the command line)",
    "channel_id": "is required (in the file or on the command line)",
}
#: The rule said when pydantic's own type or length check of a field (``[]``: of its items) fails.
_SHAPES = {
    "options[]": "must be a string of 1-500 characters",
    "max_choices": "must be an integer",
    "timezone": "must be an IANA time zone name such as US/Eastern or Europe/Berlin",
}
_EMOJI_RULE = "must be one emoji (as Discord accepts for a reaction) or <:name:id> / <a:name:id>"
_BOOL_SHAPE = "must be true or false, got {got}"
_TEXT_SHAPE = "must be a string, got {got}"


def _rule(text: str, kind: str = "poll_rule") -> PydanticCustomError:
    """A broken rule, worded as the user reads it (``text`` goes in as data, never as a template)."""
    return PydanticCustomError(kind, "{rule}", {"rule": text})


def _broken(text: str, kind: str = "poll_rule") -> NoReturn:
    raise _rule(text, kind)


def _storable(value: Any) -> Any:
    if isinstance(value, str) and (problem := text_problem(value)) is not None:
        _broken(problem)
    return value


def _length(low: int, high: int, rule: str = "must be {low}-{high} characters, got {got}") -> AfterValidator:
    """``low``-``high`` characters once stripped (and stored stripped)."""

    def check(value: str) -> str:
        if not low <= len(value := value.strip()) <= high:
            _broken(rule.format(low=low, high=high, got=len(value)))
        return value

    return AfterValidator(check)


def _snowflake(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not is_snowflake(value):
        _broken("must be a Discord id: 15-21 digits, at most 18446744073709551615")
    return value


def _two_to_ten(value: Any) -> Any:
    if not isinstance(value, list) or not 2 <= len(value) <= 10:
        _broken("must be a list of 2-10 strings")
    return value


def _known_zone(value: Any) -> Any:
    if isinstance(value, str) and zone_or_none(value) is None:
        _broken("is not a known IANA time zone name (e.g. US/Eastern, Europe/Berlin, UTC)")
    return value


_STORABLE = BeforeValidator(_storable)
Snowflake = Annotated[str, BeforeValidator(_snowflake)]
Option = Annotated[str, Strict(), _STORABLE, _length(1, 500, "must be a string of 1-500 characters")]


class PollDefinition(BaseModel):
    """A validated poll, ready to be written. Times are naive UTC, as upstream stores them.

    :func:`validate_poll` validates (``context={"now": naive_utc_now}``) and words the problems.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, _STORABLE, _length(3, 255)]
    question: Annotated[str, _STORABLE, _length(5, 2000)]
    options: Annotated[tuple[Option, ...], Field(strict=False), BeforeValidator(_two_to_ten)]
    emojis: tuple[str, ...] = Field(None, validate_default=True)
    server_id: Snowflake
    channel_id: Snowflake
    multiple_choice: bool = False
    anonymous: bool = False
    ping_role_on_close: bool = False
    ping_role_on_update: bool = False
    max_choices: int | None = None
    ping_role_enabled: bool = False
    ping_role_id: str | None = Field(None, validate_default=True)
    image_message_text: Annotated[str | None, _STORABLE, _length(0, 2000)] = None
    open_immediately: bool = False
    timezone: Annotated[str, BeforeValidator(_known_zone)] = DEFAULT_TIMEZONE
    open_time: datetime = Field(None, validate_default=True)
    close_time: datetime = Field(None, validate_default=True)

    @field_validator("emojis", mode="plain")
    @classmethod
    def _one_per_option(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        count = len(info.data["options"]) if "options" in info.data else None
        if value is None or value == []:
            return tuple(POLL_EMOJIS[: count or 0])
        if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
            _broken("must be a list of strings, one per option")
        emojis = tuple(e.strip() for e in value)
        found: list[tuple[tuple[int, ...], Any, str]] = []
        if count is not None and count != len(emojis):
            found.append(
                ((), value, f"must have exactly one emoji per option: {count} options, {len(emojis)} emojis")
            )
        found += [((i,), one, _EMOJI_RULE) for i, one in enumerate(emojis) if not is_valid_emoji(one)]
        if len(set(emojis)) != len(emojis):
            found.append(((), value, "must be distinct: a reaction has to map to one option"))
        if found:  # all at once, as pydantic reports a model's fields
            errors = [InitErrorDetails(type=_rule(rule), loc=loc, input=shown) for loc, shown, rule in found]
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return emojis

    @field_validator("max_choices")
    @classmethod
    def _within_options(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("multiple_choice"):
            _broken("is only allowed with multiple_choice: true")
        high = len(info.data.get("options", range(10)))
        if value is not None and not 1 <= value <= high:
            _broken(f"must be from 1 to the number of options ({high})")
        return value

    @field_validator("ping_role_id", mode="plain")
    @classmethod
    def _role_when_pinging(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("ping_role_enabled"):
            _broken("is required when ping_role_enabled is true", "missing")
        return None if value is None else _snowflake(value)

    @field_validator("open_time", mode="plain")
    @classmethod
    def _opens(cls, value: Any, info: ValidationInfo) -> datetime | None:
        context = info.context or {}
        now: datetime = context["now"]
        opened = _utc(value, info)
        if value is None or info.data.get("open_immediately"):
            return now.replace(second=0, microsecond=0)
        if opened is not None and opened <= now:
            context["past_open_time"] = opened  # close_time is still checked against it
            _broken("must be in the future (or set open_immediately: true)")
        return opened

    @field_validator("close_time", mode="plain")
    @classmethod
    def _closes(cls, value: Any, info: ValidationInfo) -> datetime | None:
        opened: datetime | None = info.data.get("open_time", (info.context or {}).get("past_open_time"))
        closes = _utc(value, info)
        if opened is None:
            return closes
        if value is None:
            return opened + DEFAULT_DURATION
        if closes is not None and closes - opened < MIN_DURATION:
            _broken("must be at least 1 minute after open_time")
        if closes is not None and closes - opened > MAX_DURATION:
            _broken("must be at most 30 days after open_time")
        return closes


def _utc(value: Any, info: ValidationInfo) -> datetime | None:
    """A ``YYYY-MM-DDTHH:MM`` wall time in the poll's zone as naive UTC; ``None`` if absent or no zone."""
    if value is None:
        return None
    if not isinstance(value, str):
        _broken("must be a string YYYY-MM-DDTHH:MM")
    try:
        local = datetime.strptime(value, TIME_FORMAT)  # noqa: DTZ007 - the zone is attached below
    except ValueError:
        _broken("must be a time in the form YYYY-MM-DDTHH:MM (e.g. 2025-01-20T09:00)")
    zone = zone_or_none(info.data.get("timezone", ""))
    if zone is None:  # the zone's own problem is reported
        return None
    if not EARLIEST_TIME <= local < LATEST_TIME:
        _broken(f"must be from {EARLIEST_TIME.year} to {LATEST_TIME.year - 1}")
    aware = local.replace(tzinfo=zone)
    # A wall time skipped by a DST change does not survive the round trip through UTC.
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
        _broken(f"does not exist in {zone.key} (skipped by a daylight-saving change)")
    return aware.astimezone(UTC).replace(tzinfo=None)


def _absent(value: Any) -> bool:
    return value is None or value == ""


def _short(value: Any) -> str:
    """``value`` as JSON, cut to 80 characters, printable on any terminal (surrogates escaped)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        text = f"<{type(value).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."


def _line(where: str, error: ErrorDetails) -> str:
    """One problem as the user reads it: ``where: field[index]: value: rule``."""
    field, *index = error["loc"]
    at = f"{field}" + "".join(f"[{i}]" for i in index)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = field if str(field).isprintable() else _short(field)
        return f"{where}: {key}: unknown field; allowed: {', '.join(FIELDS)}"
    if kind == "missing":
        return f"{where}: {at}: {_REQUIRED.get(at, error['msg'])}"
    got = type(error["input"]).__name__
    if kind == "poll_rule":
        rule = error["msg"]
    elif kind == "bool_type":
        rule = _BOOL_SHAPE.format(got=got)
    else:
        rule = _SHAPES.get(f"{field}[]" if index else at, _TEXT_SHAPE).format(got=got)
    return f"{where}: {at}: {_short(error['input'])}: {rule}"


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
    merged = {
        k: v for part in (defaults or {}, data) for k, v in part.items() if k not in FIELDS or not _absent(v)
    }
    label = merged.get("name")
    if isinstance(label, str) and label.strip():
        where = f"{where} ({label.strip()!r})"
    try:
        return PollDefinition.model_validate(merged, context={"now": now}), []
    except ValidationError as err:
        errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
        return None, [_line(where, e) for e in errors]


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
