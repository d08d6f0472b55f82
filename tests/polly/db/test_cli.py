"""``polly db check`` and ``polly db upgrade`` against real databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from polly.cli import main
from tests.polly.db.upstream import create_upstream_schema


def run(args: list[str], url: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env={"DATABASE_URL": url})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_check_fails_on_an_old_deployment_and_upgrade_fixes_it(sqlite_url: str) -> None:
    create_upstream_schema(sqlite_url, "sqlite-v4")
    code, out = run(["db", "check"], sqlite_url)
    assert code == 1
    assert "missing column: polls.max_choices (upstream v11)" in out
    assert "schema version: 4 (from columns)" in out
    code, out = run(["db", "upgrade"], sqlite_url)
    assert code == 0, out
    assert "applying: add column polls.multiple_choice (upstream v6)" in out
    assert "schema is at version 11" in out
    code, out = run(["db", "upgrade"], sqlite_url)
    assert (code, "nothing to do" in out) == (0, True)
    code, out = run(["db", "check"], sqlite_url)
    assert code == 0
    assert "database is usable" in out


def test_check_passes_on_upstream_postgres_and_lists_missing_indexes(postgres_url: str) -> None:
    create_upstream_schema(postgres_url)
    code, out = run(["db", "check"], postgres_url)
    assert code == 0, out
    assert "missing index: ix_polls_status" in out


def test_upgrade_creates_a_fresh_mariadb(mariadb_url: str) -> None:
    code, out = run(["db", "upgrade"], mariadb_url)
    assert code == 0, out
    assert run(["db", "check"], mariadb_url)[0] == 0


def test_unreachable_database_exits_nonzero_without_the_password() -> None:
    code, out = run(["db", "check"], "postgresql://alice:hunter2@127.0.0.1:1/polly")
    assert code == 1
    assert "cannot connect to the database at postgresql://alice:***@127.0.0.1:1/polly" in out
    assert "hunter2" not in out


def test_missing_sqlite_file_is_not_created_by_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nope/polly.db"
    code, out = run(["db", "check"], url)
    assert code == 1
    assert "no database file" in out
    assert not (tmp_path / "nope").exists()


def test_bad_settings_exit_2(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["db", "check"], env={"DATABASE_URL": sqlite_url, "DB_POOL_SIZE": "0"})
    assert result.exit_code == 2
    assert "pool_size" in result.output


@pytest.mark.parametrize("command", ["check", "upgrade"])
def test_unsupported_backend_is_named(command: str) -> None:
    code, out = run(["db", command], "oracle://x/y")
    assert code == 2
    assert "unsupported database 'oracle'" in out
