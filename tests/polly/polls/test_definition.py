"""Upstream's JSON import format: the example files import and every rule has a failing case."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from polly.db.models import POLL_EMOJIS
from polly.errors import PollValidationError
from polly.polls.definition import (
    FIELDS,
    PollDefinition,
    format_local,
    is_valid_emoji,
    load_definitions,
    validate_poll,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "import"
NOW = datetime(2026, 3, 1, 12, 0)  # naive UTC
IDS = {"server_id": "123456789012345678", "channel_id": "987654321098765432"}


def base(**overrides: Any) -> dict[str, Any]:
    poll: dict[str, Any] = {
        "name": "Lunch",
        "question": "Where to eat?",
        "options": ["Pizza", "Tacos"],
        "open_time": "2026-03-02T09:00",
        "close_time": "2026-03-02T17:00",
        "timezone": "UTC",
        **IDS,
    }
    poll.update(overrides)
    return {k: v for k, v in poll.items() if v is not ...}


def problems_of(data: Any) -> list[str]:
    poll, problems = validate_poll(data, "f.json: poll 1", now=NOW)
    assert (poll is None) == bool(problems)
    return problems


def test_a_valid_poll_is_normalised() -> None:
    poll, problems = validate_poll(base(timezone="US/Eastern"), "x", now=NOW)
    assert problems == []
    assert isinstance(poll, PollDefinition)
    assert list(poll.emojis) == POLL_EMOJIS[:2]
    assert poll.open_time == datetime(2026, 3, 2, 14, 0)  # 09:00 EST is 14:00 UTC
    assert poll.close_time == datetime(2026, 3, 2, 22, 0)
    assert poll.open_time.tzinfo is None


def future(path: Path, tmp_path: Path) -> Path:
    """The example file with its times moved into the future (one week after NOW)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "open_time" in data:
        data["open_time"] = "2026-03-08T09:00"
        data["close_time"] = "2026-03-09T17:00"
    out = tmp_path / path.name
    out.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out


@pytest.mark.parametrize(
    "name", ["simple_poll_example.json", "example_poll.json", "comprehensive_poll_example.json"]
)
def test_upstream_examples_import(name: str, tmp_path: Path) -> None:
    [poll] = load_definitions([future(FIXTURES / name, tmp_path)], now=NOW, defaults=IDS)
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert poll.name == data["name"]
    assert list(poll.options) == [o.strip() for o in data["options"]]
    if "emojis" in data:
        assert list(poll.emojis) == [e.strip() for e in data["emojis"]]


def test_simple_example_without_times_opens_now_for_a_day(tmp_path: Path) -> None:
    [poll] = load_definitions([FIXTURES / "simple_poll_example.json"], now=NOW, defaults=IDS)
    assert poll.open_time == NOW
    assert poll.close_time == NOW + timedelta(hours=24)


def test_comprehensive_example_keeps_every_setting(tmp_path: Path) -> None:
    [poll] = load_definitions([future(FIXTURES / "comprehensive_poll_example.json", tmp_path)], now=NOW)
    assert poll.multiple_choice is True
    assert poll.ping_role_enabled is True
    assert poll.ping_role_id == "456789012345678901"
    assert poll.server_id == "123456789012345678"
    assert poll.image_message_text is not None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": ...}, "name: is required"),
        ({"name": "ab"}, 'name: "ab": must be 3-255 characters, got 2'),
        ({"name": "x" * 256}, "must be 3-255 characters, got 256"),
        ({"name": 5}, "name: 5: must be a string, got int"),
        ({"question": "why"}, 'question: "why": must be 5-2000 characters, got 3'),
        ({"question": "q" * 2001}, "must be 5-2000 characters, got 2001"),
        ({"options": ["one"]}, 'options: ["one"]: must be a list of 2-10 strings'),
        ({"options": [str(i) for i in range(11)]}, "must be a list of 2-10 strings"),
        ({"options": ["a", "x" * 501]}, "options[1]:"),
        ({"options": ["a", ""]}, 'options[1]: "": must be a string of 1-500 characters'),
        ({"options": ...}, "options: is required"),
        ({"emojis": ["🍕"]}, "must have exactly one emoji per option: 2 options, 1 emojis"),
        ({"emojis": ["🍕", "abc"]}, 'emojis[1]: "abc": must be one emoji'),
        ({"emojis": ["🍕", "🍕"]}, 'emojis: ["🍕", "🍕"]: must be distinct'),
        ({"emojis": "🍕"}, 'emojis: "🍕": must be a list of strings'),
        ({"server_id": "abc"}, 'server_id: "abc": must be a Discord id: 15-21 digits'),
        ({"channel_id": ...}, "channel_id: is required"),
        ({"multiple_choice": "yes"}, 'multiple_choice: "yes": must be true or false, got str'),
        ({"anonymous": 1}, "anonymous: 1: must be true or false, got int"),
        ({"max_choices": 2}, "max_choices: 2: is only allowed with multiple_choice: true"),
        ({"multiple_choice": True, "max_choices": 3}, "must be from 1 to the number of options (2)"),
        ({"multiple_choice": True, "max_choices": 0}, "must be from 1 to the number of options"),
        ({"multiple_choice": True, "max_choices": "2"}, 'max_choices: "2": must be an integer'),
        ({"ping_role_enabled": True}, "ping_role_id: is required when ping_role_enabled is true"),
        ({"ping_role_enabled": True, "ping_role_id": "role"}, 'ping_role_id: "role": must be a Discord id'),
        ({"image_message_text": "i" * 2001}, "image_message_text:"),
        ({"open_time": "2026-03-02 09:00"}, 'open_time: "2026-03-02 09:00": must be a time in the form'),
        ({"close_time": "tomorrow"}, 'close_time: "tomorrow": must be a time in the form YYYY-MM-DDTHH:MM'),
        ({"open_time": "2026-02-01T09:00"}, 'open_time: "2026-02-01T09:00": must be in the future'),
        (
            {"close_time": "2026-03-02T08:00"},
            'close_time: "2026-03-02T08:00": must be at least 1 minute after',
        ),
        ({"close_time": "2026-03-02T09:00"}, "must be at least 1 minute after open_time"),
        ({"close_time": "2026-04-02T09:00"}, 'close_time: "2026-04-02T09:00": must be at most 30 days after'),
        ({"timezone": "Mars/Olympus"}, 'timezone: "Mars/Olympus": is not a known IANA time zone name'),
        ({"timezone": 3}, "timezone: 3: must be an IANA time zone name"),
        ({"colour": "red"}, "colour: unknown field; allowed: name, question"),
        (
            {"timezone": "US/Eastern", "open_time": "2026-03-08T02:30", "close_time": "2026-03-08T05:00"},
            "does not exist in US/Eastern (skipped by a daylight-saving change)",
        ),
    ],
)
def test_every_rule_has_a_failing_case(overrides: dict[str, Any], expected: str) -> None:
    found = problems_of(base(**overrides))
    assert any(expected in p for p in found), found
    assert all(p.startswith("f.json: poll 1") for p in found)


def test_open_immediately_allows_a_past_open_time() -> None:
    poll, problems = validate_poll(base(open_time="2026-01-01T00:00", open_immediately=True), "x", now=NOW)
    assert problems == []
    assert poll is not None
    assert poll.open_time == NOW


def test_custom_and_unicode_emojis() -> None:
    assert is_valid_emoji("<:party:123456789012345678>")
    assert is_valid_emoji("<a:dance:123456789012345678>")
    assert is_valid_emoji("🏔️")
    assert is_valid_emoji("1️⃣")
    assert is_valid_emoji("🇦")
    assert not is_valid_emoji("<:x:1>")
    assert not is_valid_emoji("A")
    assert not is_valid_emoji("🍕 🍕")


def test_all_problems_of_a_file_are_listed_with_poll_and_file(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    path.write_text(json.dumps([base(name="ok poll"), base(name="x", question="q"), {"name": "Third"}]))
    with pytest.raises(PollValidationError) as info:
        load_definitions([path], now=NOW)
    text = str(info.value)
    assert f"{path}: poll 2 ('x'): name: \"x\": must be 3-255 characters" in text
    assert f"{path}: poll 2 ('x'): question: \"q\": must be 5-2000 characters" in text
    assert f"{path}: poll 3 ('Third'): question: is required" in text
    assert "poll 1" not in text


def test_directory_loads_every_json_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(json.dumps(base(name="Second")))
    (tmp_path / "a.json").write_text(json.dumps(base(name="First")))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in load_definitions([tmp_path], now=NOW)] == ["First", "Second"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b"{not json", "is not valid JSON"),
        (b"[]", "the list holds no polls"),
        (b"42", "must be a JSON object"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(PollValidationError, match=expected):
        load_definitions([path], now=NOW)


def test_files_over_8_mb_are_rejected_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.truncate(8 * 1024 * 1024 + 1)
    with pytest.raises(PollValidationError, match=r"8,388,609 bytes; the limit is 8,388,608 \(8 MB\)"):
        load_definitions([path], now=NOW)


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PollValidationError, match="cannot be read"):
        load_definitions([tmp_path / "nope.json"], now=NOW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PollValidationError, match="no JSON files found"):
        load_definitions([empty], now=NOW)


def test_format_local_shows_the_polls_zone() -> None:
    assert format_local(datetime(2026, 3, 2, 14, 0), "US/Eastern") == "2026-03-02T09:00"
    assert format_local(datetime(2026, 3, 2, 14, 0), "Nowhere/Else") == "2026-03-02T14:00"


def test_the_allowed_fields_are_the_models() -> None:
    assert sorted(FIELDS) == sorted(PollDefinition.model_fields)


def test_every_problem_of_one_field_is_listed_at_once() -> None:
    found = problems_of(base(options=["a", "b", "c"], emojis=["x", "x"]))
    assert [p.split(": ")[2] for p in found] == ["emojis", "emojis[0]", "emojis[1]", "emojis"]
    assert "3 options, 2 emojis" in found[0]
    assert "must be distinct" in found[3]


def test_a_close_time_is_checked_against_an_open_time_in_the_past() -> None:
    found = problems_of(base(open_time="2026-02-01T09:00", close_time="2026-02-01T09:00"))
    assert any("open_time" in p and "must be in the future" in p for p in found)
    assert any("close_time" in p and "at least 1 minute after open_time" in p for p in found)


def test_problems_name_the_field_the_value_and_the_rule_in_field_order() -> None:
    found = problems_of(base(name="ab", anonymous="no", options=["a", 5], colour=1, timezone="Nowhere"))
    zone_rule = "is not a known IANA time zone name (e.g. US/Eastern, Europe/Berlin, UTC)"
    assert found == [
        "f.json: poll 1 ('ab'): colour: unknown field; allowed: " + ", ".join(FIELDS),
        "f.json: poll 1 ('ab'): name: \"ab\": must be 3-255 characters, got 2",
        "f.json: poll 1 ('ab'): options[1]: 5: must be a string of 1-500 characters",
        "f.json: poll 1 ('ab'): anonymous: \"no\": must be true or false, got str",
        f"f.json: poll 1 ('ab'): timezone: \"Nowhere\": {zone_rule}",
    ]
