"""Fuzzing the import format and the poll flags (hypothesis, bounded by a fixed number of examples).

For any input: a valid poll is stored and read back equal, on SQLite, PostgreSQL and MariaDB; an
invalid one gives listed problems (one line each, naming the poll); nothing ever raises. Inputs mix
well-formed values with the kinds of garbage a fuzzer found before: lone surrogates, NUL and other
control characters, zone directories and overlong names, the ends of the calendar, huge ids, deep
nesting, mutated JSON text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import emoji
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polly.cli import main
from polly.db.engine import Database
from polly.errors import PollValidationError
from polly.polls import reports, service
from polly.polls.definition import FIELDS, PollDefinition, load_definitions, validate_poll

NOW = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
#: Examples per test: fixed, so the suite's time is bounded (a few seconds per test).
PURE_EXAMPLES = 400
CLI_EXAMPLES = 80
DB_EXAMPLES = 20

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # includes surrogates and controls
NASTY = st.sampled_from(
    ["\ud800", "\x00", "\x1b", "\u202e", "\ufeff", "\r\n", "\t", " ", "😀", "🇦", "\ufe0f"]
)
TEXT = st.one_of(
    st.text(min_size=0, max_size=40),
    st.text(ANY_CHAR, min_size=0, max_size=20),
    st.lists(st.one_of(st.text(max_size=5), NASTY), max_size=8).map("".join),
    st.text(min_size=250, max_size=600),
)
GOOD_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=5, max_size=60
).filter(lambda s: 5 <= len(s.strip()) <= 60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EMOJIS = sorted(e for e in emoji.EMOJI_DATA if len(e) <= 8)[:400]
ZONES = st.sampled_from(["UTC", "US/Eastern", "Europe/Berlin", "Asia/Kolkata", "Pacific/Kiritimati"])
BAD_ZONES = st.sampled_from(["Europe", "A" * 300, "../etc/passwd", "UTC\x00", "Mars/Olympus", "", "\ud800"])
IDS = st.one_of(
    st.integers(10**14, 2**64 - 1).map(str),
    st.integers(2**64, 10**21).map(str),
    st.sampled_from(
        [
            "",
            "abc",
            "1" * 22,
            "123456789012345678\n",
            "-123456789012345678",
            "\uff11" * 18,
        ]
    ),
)


def local(delta_minutes: int, zone: str = "UTC") -> str:
    """``NOW`` plus ``delta_minutes`` as wall time in ``zone`` (the import format)."""
    when = (NOW + timedelta(minutes=delta_minutes)).replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    return when.strftime("%Y-%m-%dT%H:%M")


TIMES = st.one_of(
    st.integers(-60 * 24, 60 * 24 * 40).map(local),
    st.sampled_from(["9999-12-31T23:59", "0001-01-01T00:00", "2026-13-01T00:00", "yesterday", ""]),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M")),
)


@st.composite
def good_polls(draw: st.DrawFn) -> dict[str, Any]:
    """Valid polls (zones without daylight saving, so no wall time is skipped), rich in odd text."""
    count = draw(st.integers(2, 10))
    opens = draw(st.integers(5, 60 * 24 * 20))
    zone = draw(st.sampled_from(["UTC", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Kiritimati"]))
    poll: dict[str, Any] = {
        "name": draw(GOOD_TEXT),
        "question": draw(GOOD_TEXT),
        "options": draw(st.lists(GOOD_TEXT, min_size=count, max_size=count)),
        "emojis": draw(st.lists(st.sampled_from(EMOJIS), min_size=count, max_size=count, unique=True)),
        "server_id": draw(st.integers(10**14, 2**64 - 1).map(str)),
        "channel_id": draw(st.integers(10**14, 2**64 - 1).map(str)),
        "multiple_choice": draw(st.booleans()),
        "anonymous": draw(st.booleans()),
        "open_time": local(opens, zone),
        "close_time": local(opens + draw(st.integers(1, 60 * 24 * 30)), zone),
        "timezone": zone,
    }
    if poll["multiple_choice"] and draw(st.booleans()):
        poll["max_choices"] = draw(st.integers(1, count))
    if draw(st.booleans()):
        poll["image_message_text"] = draw(GOOD_TEXT)
    return poll


@st.composite
def any_polls(draw: st.DrawFn) -> Any:
    """Anything: a good poll with fields replaced by garbage, or garbage outright."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    poll = draw(good_polls())
    for field in draw(st.lists(st.sampled_from([*FIELDS, "nope"]), max_size=5)):
        garbage = {
            "timezone": st.one_of(BAD_ZONES, ZONES, JSON),
            "open_time": st.one_of(TIMES, JSON),
            "close_time": st.one_of(TIMES, JSON),
            "server_id": st.one_of(IDS, JSON),
            "channel_id": st.one_of(IDS, JSON),
            "ping_role_id": st.one_of(IDS, JSON),
            "emojis": st.lists(st.one_of(TEXT, st.sampled_from(EMOJIS)), max_size=11),
            "options": st.lists(TEXT, max_size=11),
        }.get(field, st.one_of(TEXT, JSON))
        poll[field] = draw(garbage)
    return poll


def check_result(result: tuple[PollDefinition | None, list[str]]) -> None:
    definition, problems = result
    assert (definition is None) == bool(problems)
    for problem in problems:
        assert isinstance(problem, str)
        assert "\n" not in problem, problem
        problem.encode("utf-8")  # printable: no lone surrogate reaches the terminal


@settings(max_examples=PURE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_polls())
def test_validation_never_raises(data: Any) -> None:
    check_result(validate_poll(data, "f.json: poll 1", now=NOW))


@settings(
    max_examples=PURE_EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(any_polls(), max_size=3), st.data())
def test_mutated_files_give_listed_problems(tmp_path: Path, polls: list[Any], data: st.DataObject) -> None:
    raw = json.dumps(polls).encode("utf-8")
    mutation = data.draw(st.sampled_from(["none", "cut", "flip", "nest", "bytes"]))
    if mutation == "cut" and raw:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif mutation == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1 :]
    elif mutation == "nest":
        depth = data.draw(st.sampled_from([50, 5_000, 100_000]))
        raw = b"[" * depth + raw + b"]" * depth
    elif mutation == "bytes":
        raw = data.draw(st.binary(max_size=64))
    file = tmp_path / "polls.json"
    file.write_bytes(raw)
    problems: list[str] = []
    try:
        definitions = load_definitions([file], now=NOW)
    except PollValidationError as err:
        problems = list(err.problems)
        assert problems
    else:
        assert all(isinstance(d, PollDefinition) for d in definitions)
    for problem in problems:
        assert "\n" not in problem
        problem.encode("utf-8")


FLAG_VALUES = st.one_of(TEXT, IDS, TIMES, BAD_ZONES, ZONES)


@settings(max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["--name", "--question", "--option", "--emoji", "--server-id", "--channel-id",
                             "--max-choices", "--ping-role-id", "--open-time", "--close-time", "--timezone",
                             "--image-message-text", "--creator-id"]),
            FLAG_VALUES,
        ),
        max_size=12,
    ),
    st.booleans(),
)  # fmt: skip
def test_poll_flags_never_raise(flags: list[tuple[str, str]], multiple: bool) -> None:
    args = ["poll", "create", "--dry-run", *(part for pair in flags for part in pair)]
    if multiple:
        args.append("--multiple-choice")
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output


@settings(
    max_examples=DB_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(good_polls())
def test_valid_polls_are_stored_and_read_back_equal(database: Database, data: dict[str, Any]) -> None:
    definition, problems = validate_poll(data, "f.json: poll 1", now=NOW)
    assert definition is not None, problems
    [poll_id] = service.create_polls(database, [definition])
    details = reports.show_poll(database, poll_id)
    view = details.poll
    assert view.name == definition.name
    assert view.question == definition.question
    assert view.options == definition.options
    assert view.emojis == definition.emojis
    assert (str(view.server_id), str(view.channel_id)) == (definition.server_id, definition.channel_id)
    assert (view.open_time, view.close_time) == (definition.open_time, definition.close_time)
    assert view.timezone == definition.timezone
    assert view.multiple_choice == definition.multiple_choice
    assert view.max_choices == definition.max_choices
    assert view.anonymous == definition.anonymous
    assert view.image_message_text == definition.image_message_text
    exported = reports.export_poll(database, poll_id, now=NOW)
    again, problems = validate_poll(exported, "export", now=NOW)
    assert problems == []
    assert again is not None
    assert (again.name, again.options, again.emojis) == (
        definition.name,
        definition.options,
        definition.emojis,
    )
