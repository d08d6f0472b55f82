"""``polly poll`` on SQLite and PostgreSQL: every command, its output and exit status."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from polly.cli import main
from polly.db.schema import create_schema
from tests.polly.polls.conftest import EXAMPLES, IDS, future_example, local_time

FLAGS = [
    "--name", "Lunch", "--question", "Where to eat?", "--option", "Pizza", "--option", "Tacos",
    "--server-id", IDS["server_id"], "--channel-id", IDS["channel_id"], "--timezone", "Europe/Berlin",
    "--open-time", local_time(timedelta(days=1), "Europe/Berlin"),
    "--close-time", local_time(timedelta(days=2), "Europe/Berlin"),
]  # fmt: skip


def polly(url: str, *args: str, stdin: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(main, ["poll", *args], env={"DATABASE_URL": url, **env}, input=stdin)


def out(result: Result) -> str:
    """stdout and stderr as the user saw them (click's runner interleaves both in ``output``)."""
    return result.output


def created_ids(result: Result) -> list[int]:
    assert result.exit_code == 0, out(result)
    return [int(m) for m in re.findall(r"^created poll (\d+):", result.output, re.MULTILINE)]


def listed(url: str, *args: str) -> list[dict[str, object]]:
    result = polly(url, "list", "--json", *args)
    assert result.exit_code == 0, out(result)
    polls = json.loads(result.stdout)["polls"]
    assert isinstance(polls, list)
    return polls


def test_create_from_flags_then_list_show_close(schema_url: str) -> None:
    [poll_id] = created_ids(polly(schema_url, "create", *FLAGS, "--ping-role-id", "456789012345678901"))
    result = polly(schema_url, "list")
    assert result.exit_code == 0
    header, row = result.output.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "OPENS", "CLOSES", "TIMEZONE", "VOTES", "VOTERS"]
    opens = FLAGS[FLAGS.index("--open-time") + 1].replace("T", " ")
    assert row.split()[:5] == [str(poll_id), "Lunch", "scheduled", *opens.split()]
    show = polly(schema_url, "show", str(poll_id))
    assert show.exit_code == 0, out(show)
    assert f"poll {poll_id}: Lunch" in show.output
    assert "ping: role 456789012345678901" in show.output
    assert "winner: none (no votes)" in show.output
    data = json.loads(polly(schema_url, "show", str(poll_id), "--json").stdout)
    assert (data["ping_role_enabled"], data["timezone"], data["status"]) == (
        True,
        "Europe/Berlin",
        "scheduled",
    )
    assert [r["option"] for r in data["results"]] == ["Pizza", "Tacos"]
    assert polly(schema_url, "close", str(poll_id)).output == f"poll {poll_id} closed (was scheduled)\n"
    again = polly(schema_url, "close", str(poll_id))
    assert (again.exit_code, again.output) == (0, f"poll {poll_id} is already closed\n")
    assert [p["status"] for p in listed(schema_url, "--status", "closed")] == ["closed"]
    assert listed(schema_url, "--status", "active") == []


def test_upstreams_examples_import_from_a_directory_with_ids_from_the_flags(
    schema_url: str, tmp_path: Path
) -> None:
    for name in EXAMPLES:
        future_example(name, tmp_path)
    result = polly(schema_url, "create", "--file", str(tmp_path), "--server-id", IDS["server_id"],
                   "--channel-id", "111111111111111111")  # fmt: skip
    ids = created_ids(result)
    assert len(ids) == 3
    polls = {p["name"]: p for p in listed(schema_url)}
    assert set(polls) == {"Lunch Choice", "Weekly Team Meeting Poll", "Annual Company Retreat Planning Poll"}
    assert polls["Lunch Choice"]["channel_id"] == "111111111111111111"  # from the flag
    assert polls["Annual Company Retreat Planning Poll"]["channel_id"] == IDS["channel_id"]  # the file wins
    assert all(p["status"] == "scheduled" for p in polls.values())


def test_dry_run_validates_and_writes_nothing(schema_url: str, tmp_path: Path) -> None:
    path = future_example("comprehensive_poll_example.json", tmp_path)
    result = polly(schema_url, "create", "--file", str(path), "--dry-run")
    assert result.exit_code == 0, out(result)
    assert "1 poll(s) valid; nothing was written (--dry-run)" in result.output
    assert listed(schema_url) == []


def test_an_invalid_file_writes_nothing_and_lists_every_problem(schema_url: str, tmp_path: Path) -> None:
    good = json.loads(future_example("comprehensive_poll_example.json", tmp_path).read_text(encoding="utf-8"))
    bad = {**good, "name": "x", "options": ["only one"], "timezone": "Mars/Olympus", "colour": "red"}
    path = tmp_path / "polls.json"
    path.write_text(json.dumps([good, bad]), encoding="utf-8")
    result = polly(schema_url, "create", "--file", str(path))
    assert result.exit_code == 1
    text = out(result)
    assert "invalid poll definition (4 problem(s)); nothing was written" in text
    for problem in ('name: "x": must be 3-255 characters', 'options: ["only one"]: must be a list',
                    'timezone: "Mars/Olympus": is not a known IANA', "colour: unknown field"):  # fmt: skip
        assert f"{path}: poll 2 ('x'): {problem}" in text
    assert listed(schema_url) == []


def test_flags_without_required_fields_name_them(schema_url: str) -> None:
    result = polly(schema_url, "create", "--name", "Lunch", "--option", "A", "--option", "B")
    assert result.exit_code == 1
    assert "command line ('Lunch'): question: is required" in out(result)
    assert "server_id: is required (in the file or on the command line)" in out(result)
    bad_creator = polly(schema_url, "create", *FLAGS, "--creator-id", "bob")
    assert bad_creator.exit_code == 1
    assert "creator_id: 'bob': must be a Discord user id (digits) or 0" in out(bad_creator)
    assert listed(schema_url) == []


def test_export_to_a_file_then_import_round_trips(schema_url: str, tmp_path: Path) -> None:
    [poll_id] = created_ids(polly(schema_url, "create", *FLAGS, "--multiple-choice", "--max-choices", "2",
                                  "--emoji", "🍕", "--emoji", "🌮", "--anonymous"))  # fmt: skip
    exported = tmp_path / "lunch.json"
    result = polly(schema_url, "export", str(poll_id), "--output", str(exported))
    assert result.exit_code == 0, out(result)
    data = json.loads(exported.read_text(encoding="utf-8"))
    assert data["emojis"] == ["🍕", "🌮"]
    assert data["open_time"] == FLAGS[FLAGS.index("--open-time") + 1]
    [copy_id] = created_ids(polly(schema_url, "create", "--file", str(exported)))
    stdout = polly(schema_url, "export", str(copy_id)).stdout
    assert json.loads(stdout) == data


def test_reopen_rules(schema_url: str) -> None:
    [poll_id] = created_ids(polly(schema_url, "create", *FLAGS))
    refused = polly(schema_url, "reopen", str(poll_id))
    assert refused.exit_code == 1
    assert f"poll {poll_id} is scheduled; only a closed poll can be reopened" in out(refused)
    polly(schema_url, "close", str(poll_id))
    result = polly(schema_url, "reopen", str(poll_id), "--reset-votes")
    assert result.exit_code == 0, out(result)
    assert "reopened: scheduled (never posted: the engine posts it)" in result.output
    assert "0 vote(s) deleted" in result.output
    usage = polly(schema_url, "reopen", str(poll_id), "--extend-minutes", "0")
    assert usage.exit_code == 2
    assert "0 is not in the range 1<=x<=43200" in out(usage)


def test_reopen_after_the_close_time_needs_an_extension(sqlite_url: str) -> None:
    create_schema(sqlite_url)
    closes = local_time(timedelta(minutes=3), "US/Eastern")
    [poll_id] = created_ids(
        polly(sqlite_url, "create", *FLAGS[:12], "--open-immediately", "--close-time", closes)
    )
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE polls SET status='closed', message_id='123456789012345678', "
            "close_time=datetime('now','-1 minutes') WHERE id=?",
            (poll_id,),
        )
    refused = polly(sqlite_url, "reopen", str(poll_id))
    assert refused.exit_code == 1
    assert "which has passed: nobody could vote in it; pass --extend-minutes N" in out(refused)
    result = polly(sqlite_url, "reopen", str(poll_id), "--extend-minutes", "60")
    assert result.exit_code == 0, out(result)
    assert f"poll {poll_id} reopened: active, closes" in result.output
    assert listed(sqlite_url)[0]["status"] == "active"


def test_delete_asks_unless_yes_and_removes_votes(schema_url: str) -> None:
    [poll_id] = created_ids(polly(schema_url, "create", *FLAGS))
    declined = polly(schema_url, "delete", str(poll_id), stdin="n\n")
    assert declined.exit_code == 1
    assert f"delete poll {poll_id} and all its votes?" in out(declined)
    assert len(listed(schema_url)) == 1
    confirmed = polly(schema_url, "delete", str(poll_id), stdin="y\n")
    assert confirmed.exit_code == 0, out(confirmed)
    assert f"poll {poll_id} deleted with 0 vote(s)" in confirmed.output
    assert listed(schema_url) == []
    [other] = created_ids(polly(schema_url, "create", *FLAGS))
    assert polly(schema_url, "delete", str(other), "--yes").exit_code == 0


@pytest.mark.parametrize("command", [["show"], ["close"], ["reopen"], ["delete", "--yes"], ["export"]])
def test_unknown_ids_exit_1(schema_url: str, command: list[str]) -> None:
    result = polly(schema_url, command[0], "4242", *command[1:])
    assert result.exit_code == 1
    assert out(result).strip() == "polly: no poll 4242"


def test_corrupt_rows_are_reported_with_their_id(sqlite_url: str) -> None:
    create_schema(sqlite_url)
    good, bad = created_ids(polly(sqlite_url, "create", *FLAGS)) + created_ids(
        polly(sqlite_url, "create", *FLAGS)
    )
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE polls SET options_json='{oops' WHERE id=?", (bad,))
    result = polly(sqlite_url, "list")
    assert result.exit_code == 0
    assert f"polly: skipped corrupt poll {bad}: options_json is not valid JSON" in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [str(good)]
    for command in ("show", "export"):
        refused = polly(sqlite_url, command, str(bad))
        assert refused.exit_code == 1
        assert f"polly: poll {bad}: options_json: is not valid JSON" in out(refused)


def test_an_empty_or_missing_database_and_bad_settings(sqlite_url: str, tmp_path: Path) -> None:
    missing = polly(sqlite_url, "list")
    assert missing.exit_code == 1
    assert "no database file at" in out(missing)
    assert "run `polly db upgrade` to create it" in out(missing)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    result = polly(f"sqlite:///{empty}", "list")
    assert result.exit_code == 1
    assert "is empty: run `polly db upgrade` to create the schema" in out(result)
    bad = polly(sqlite_url, "list", DB_POOL_SIZE="0")
    assert bad.exit_code == 2
    assert "pool_size" in out(bad)
    assert polly(sqlite_url, "list", "--limit", "0").exit_code == 2
    assert polly(sqlite_url, "show", "abc").exit_code == 2


def test_list_is_bounded_by_limit(sqlite_url: str) -> None:
    create_schema(sqlite_url)
    for _ in range(3):
        created_ids(polly(sqlite_url, "create", *FLAGS))
    result = polly(sqlite_url, "list", "--limit", "2")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["3", "2"]
    assert lines[-1] == "(showing the newest 2; raise --limit for more)"
    data = json.loads(polly(sqlite_url, "list", "--json", "--limit", "2").stdout)
    assert (len(data["polls"]), data["truncated"]) == (2, True)


def test_an_unreachable_database_exits_1_without_the_password() -> None:
    result = polly("postgresql://alice:hunter2@127.0.0.1:1/polly", "list")
    assert result.exit_code == 1
    assert "cannot connect to the database at postgresql+psycopg://alice:***@127.0.0.1:1/polly" in out(result)
    assert "hunter2" not in out(result)


def test_a_schema_missing_a_table_names_it(sqlite_url: str) -> None:
    create_schema(sqlite_url)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE votes")
    result = polly(sqlite_url, "list")
    assert result.exit_code == 1
    assert "missing table: votes" in out(result)
    assert "run `polly db upgrade`" in out(result)


def test_a_database_error_mid_command_is_reported_and_nothing_is_written(sqlite_url: str) -> None:
    create_schema(sqlite_url)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")  # what polly sets: readers never wait for the writer
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        result = polly(sqlite_url, "create", *FLAGS, POLLY_DATABASE__SQLITE_BUSY_TIMEOUT_MS="100")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    assert "polly: database error on sqlite:///" in out(result)
    assert "OperationalError: database is locked" in out(result)
    assert listed(sqlite_url) == []
