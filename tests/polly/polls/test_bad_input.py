"""Bad input gets one clear line naming what is wrong and what is allowed, never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from polly.cli import main
from polly.db.schema import create_schema
from polly.polls.definition import is_valid_emoji, validate_poll
from tests.polly.polls.test_definition import NOW, base

IDS = {"server_id": "123456789012345678", "channel_id": "987654321098765432"}
FLAGS = [
    "--name", "Lunch", "--question", "Where to eat?", "--option", "Pizza", "--option", "Tacos",
    "--server-id", IDS["server_id"], "--channel-id", IDS["channel_id"], "--dry-run",
]  # fmt: skip


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_clean(result: Result, code: int, *expected: str) -> None:
    """Exited with ``code`` (not an exception) and said each of ``expected``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


def problems(**overrides: Any) -> list[str]:
    poll, found = validate_poll(base(**overrides), "f.json: poll 1", now=NOW)
    assert poll is None
    return found


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [("Europe", "not a known IANA time zone"), ("A" * 300, "not a known IANA"), ("UTC\x00", "not a known")],
)
def test_bad_timezones_are_one_problem(timezone: str, expected: str) -> None:
    assert any(expected in p for p in problems(timezone=timezone))
    result = invoke("poll", "create", *FLAGS, "--timezone", timezone.replace("\x00", "?"))
    assert_clean(result, 1, "timezone", "IANA")


@pytest.mark.parametrize("when", ["9999-12-31T23:59", "0001-01-01T00:00"])
def test_times_at_the_ends_of_the_calendar_are_refused(when: str) -> None:
    assert any("must be from 1971 to 8999" in p for p in problems(open_time=when, close_time=...))
    result = invoke("poll", "create", *FLAGS, "--open-time", when, "--timezone", "Pacific/Kiritimati")
    assert_clean(result, 1, "open_time", "1971")


@pytest.mark.parametrize("command", ["show", "close", "reopen", "delete", "export"])
def test_huge_poll_ids_are_a_usage_error(command: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    create_schema(url)
    result = invoke("poll", command, "99999999999999999999999", DATABASE_URL=url)
    assert_clean(result, 2, "1<=x<=2147483647")


def test_deeply_nested_json_is_one_problem(tmp_path: Path) -> None:
    file = tmp_path / "deep.json"
    file.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = invoke("poll", "create", "--file", str(file), "--dry-run")
    assert_clean(result, 1, "nested too deeply")


def test_a_moderately_nested_field_is_reported_not_crashed_on(tmp_path: Path) -> None:
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    file = tmp_path / "p.json"
    file.write_text(json.dumps(base(**IDS, options=nested, name=nested)), encoding="utf-8")
    result = invoke("poll", "create", "--file", str(file), "--dry-run")
    assert_clean(result, 1, "options")


@pytest.mark.parametrize("field", ["name", "question", "image_message_text"])
@pytest.mark.parametrize(("bad", "rule"), [("\ud800", "lone surrogate"), ("\x00", "control character")])
def test_surrogates_and_nul_are_refused_before_anything_is_written(field: str, bad: str, rule: str) -> None:
    assert any(rule in p and field in p for p in problems(**{field: f"Lunch {bad} time"}))


@pytest.mark.parametrize(("bad", "rule"), [("\ud800", "lone surrogate"), ("\x00", "U+0000")])
def test_surrogates_and_nul_in_a_file_give_a_printable_problem(tmp_path: Path, bad: str, rule: str) -> None:
    file = tmp_path / "p.json"
    # json.dumps escapes both, as a JSON file would hold them
    file.write_text(json.dumps(base(name=f"Lunch{bad}", options=["a", f"b{bad}"])), encoding="utf-8")
    result = invoke("poll", "create", "--file", str(file), "--dry-run")
    assert_clean(result, 1, rule, "options[1]")


def test_surrogate_on_the_command_line_is_refused_by_dry_run() -> None:
    args = [*FLAGS]
    args[args.index("Lunch")] = "Lunch\udcff"  # what a non-UTF-8 argv byte becomes
    result = invoke("poll", "create", *args)
    assert_clean(result, 1, "lone surrogate")


def test_poll_list_server_id_must_be_an_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    create_schema(url)
    assert_clean(invoke("poll", "list", "--server-id", "abc", DATABASE_URL=url), 2, "not a Discord id")
    assert_clean(invoke("poll", "list", "--channel-id", "1 OR 1=1", DATABASE_URL=url), 2, "not a Discord id")
    assert_clean(invoke("poll", "list", "--server-id", IDS["server_id"], DATABASE_URL=url), 0, "ID")


def _raw_poll(path: Path, **columns: Any) -> None:
    row = {
        "name": "Lunch", "question": "Where?", "options_json": '["Pizza", "Tacos"]',
        "server_id": IDS["server_id"], "channel_id": IDS["channel_id"], "creator_id": "0",
        "open_time": "2026-01-01 10:00:00.000000", "close_time": "2026-01-02 10:00:00.000000",
        "status": "closed", **columns,
    }  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"INSERT INTO polls ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )


def test_poll_list_shows_a_row_without_a_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    create_schema(url)
    with sqlite3.connect(tmp_path / "p.db") as conn:  # upstream's NOT NULL is not everywhere: drop it
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'name VARCHAR(255) NOT NULL', 'name VARCHAR(255)') "
            "WHERE name = 'polls'"
        )
    _raw_poll(tmp_path / "p.db", name=None)
    _raw_poll(tmp_path / "p.db", name="Second")
    result = invoke("poll", "list", DATABASE_URL=url)
    assert_clean(result, 0, "(no name)", "Second")
    listed = json.loads(invoke("poll", "list", "--json", DATABASE_URL=url).stdout)
    assert [p["name"] for p in listed["polls"]] == ["Second", None]


def test_poll_show_names_no_option_for_an_out_of_range_vote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    create_schema(url)
    _raw_poll(tmp_path / "p.db")
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.executemany(
            "INSERT INTO votes (poll_id, user_id, option_index) VALUES (1, ?, ?)",
            [("111", -1), ("222", 0), ("333", 7)],
        )
    result = invoke("poll", "show", "1", DATABASE_URL=url)
    assert_clean(result, 0, "222: Pizza")
    assert "111: Tacos" not in result.output  # -1 must not count as the last option
    assert "Tacos      1" not in result.output.replace("  ", " ")
    data = json.loads(invoke("poll", "show", "1", "--json", DATABASE_URL=url).stdout)
    assert data["voters"] == {"222": [0]}
    assert [r["votes"] for r in data["results"]] == [1, 0]


@pytest.mark.parametrize(
    "value", ["👍", "❤️", "❤", "👍🏽", "🏳️‍🌈", "👨‍👩‍👧‍👦", "1️⃣", "🇦", "🇯", "🇺🇸", "<:party:123456789012345678>"]
)
def test_emojis_discord_accepts(value: str) -> None:
    assert is_valid_emoji(value)


@pytest.mark.parametrize(
    "value",
    ["^", "°", "█", "😀1", "👍👎", "🇦🇧", "A", "1", "#", "", " ", "👍 ", "\u20e3", "\ufe0f",
     "<:x:1>", "<:party:123456789012345678>\n", "<:party:123456789012345678><:a:123456789012345678>"],
)  # fmt: skip
def test_everything_else_is_not_an_emoji(value: str) -> None:
    assert not is_valid_emoji(value)


def test_snowflakes_with_a_trailing_newline_or_beyond_64_bits_are_refused() -> None:
    assert any("server_id" in p for p in problems(server_id="123456789012345678\n"))
    assert any("server_id" in p for p in problems(server_id="999999999999999999999"))
