"""Upstream's schema on SQLite, PostgreSQL and MariaDB: check, additive upgrade, atomicity, fresh create."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from polly.db.schema import LATEST_VERSION, MIGRATIONS, check_schema, create_schema, upgrade_schema
from polly.db.urls import driver_url
from polly.errors import SchemaError
from tests.polly.db.upstream import RawDB, create_upstream_schema, kind_of

HOT = {
    "ix_polls_status",
    "ix_polls_message_id",
    "ix_polls_server_id_status_id",
    "ix_votes_poll_id_user_id",
    "ix_user_preferences_user_id",
}


def snapshot(url: str) -> dict[str, Any]:
    """Everything an upgrade may touch: tables, columns, index names and the ledger rows."""
    engine = create_engine(driver_url(url, "sync"), poolclass=NullPool)
    try:
        insp = inspect(engine)
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            cols = tuple(c["name"] for c in insp.get_columns(table))
            idx = tuple(sorted(str(i["name"]) for i in insp.get_indexes(table)))
            out[table] = (cols, idx)
    finally:
        engine.dispose()
    if "schema_migrations" in out:
        with RawDB(url) as raw:
            out["ledger"] = raw.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return out


@pytest.fixture(params=["sqlite-v11", "sqlite-v4", "postgres", "mariadb"])
def upstream_url(request: pytest.FixtureRequest) -> str:
    """upstream's schema at v11 on each dialect, plus the older v4 SQLite deployment."""
    url = request.getfixturevalue(
        "sqlite_url" if request.param.startswith("sqlite") else f"{request.param}_url"
    )
    assert isinstance(url, str)
    create_upstream_schema(url, "sqlite-v4" if request.param == "sqlite-v4" else "sqlite")
    return url


def test_check_reports_what_upstream_lacks(upstream_url: str) -> None:
    report = check_schema(upstream_url)
    assert set(report.missing_indexes) <= HOT
    assert report.missing_indexes, "upstream has none of the hot-path indexes"
    if report.missing_columns:  # the v4 deployment
        assert report.detected_version == 4
        assert not report.usable
        assert {(c.table, c.column, c.version) for c in report.missing_columns} >= {
            ("polls", "image_message_text", 5),
            ("polls", "multiple_choice", 6),
            ("user_preferences", "last_role_id", 7),
            ("user_preferences", "timezone_explicitly_set", 8),
            ("polls", "max_choices", 11),
        }
        assert min(c.version for c in report.missing_columns) == 5
    else:
        assert report.usable
        assert report.detected_version == LATEST_VERSION
    assert not report.up_to_date


def test_upgrade_is_additive_and_idempotent(upstream_url: str) -> None:
    before = snapshot(upstream_url)
    report = upgrade_schema(upstream_url)
    assert report.up_to_date, report.lines()
    after = snapshot(upstream_url)
    for table, entry in before.items():
        if table == "ledger":
            continue
        cols, idx = entry
        assert after[table][0][: len(cols)] == cols, f"{table}: existing columns kept, in order"
        kept = set(idx) <= set(after[table][1])
        if kind_of(upstream_url) == "mysql":  # InnoDB drops its implicit FK index once ours covers the key
            kept = {i for i in idx if i not in cols} <= set(after[table][1])
        assert kept, (table, idx, after[table][1])
    assert after["ledger"] == [(v, n) for v, n in sorted(MIGRATIONS.items())]
    steps: list[str] = []
    again = upgrade_schema(upstream_url, before_step=steps.append)
    assert steps == []
    assert again.up_to_date
    assert snapshot(upstream_url) == after


@pytest.mark.parametrize("fail_at", [0, 3, -1])
def test_failed_upgrade_leaves_the_database_as_it_was(upstream_url: str, fail_at: int) -> None:
    """A failure at the first, a middle, or the last step: nothing of the upgrade remains."""
    planned: list[str] = []
    check = check_schema(upstream_url)
    plan_len = len(check.missing_tables) + len(check.missing_columns) + len(check.missing_indexes) + 1
    target = fail_at % plan_len
    before = snapshot(upstream_url)

    def hook(step: str) -> None:
        planned.append(step)
        if len(planned) - 1 == target:
            raise RuntimeError(f"injected failure at {step}")

    with pytest.raises(SchemaError, match="injected failure") as info:
        upgrade_schema(upstream_url, before_step=hook)
    assert planned[-1] in str(info.value)
    assert snapshot(upstream_url) == before
    assert upgrade_schema(upstream_url).up_to_date  # and a rerun completes it


def test_real_ddl_failure_rolls_back(upstream_url: str) -> None:
    """A genuine server error mid-upgrade (an index name already taken), not an injected one."""
    if kind_of(upstream_url) == "mysql":
        pytest.skip("MariaDB index names are per table, so no clash exists; the injected failures cover it")
    with RawDB(upstream_url) as raw:
        raw.execute("CREATE TABLE blocker (x INTEGER)")
        raw.execute("CREATE INDEX ix_votes_poll_id_user_id ON blocker (x)")
    before = snapshot(upstream_url)
    with pytest.raises(SchemaError, match="ix_votes_poll_id_user_id"):
        upgrade_schema(upstream_url)
    assert snapshot(upstream_url) == before


def test_create_schema_on_a_fresh_database(db_url: str) -> None:
    report = create_schema(db_url)
    assert report.up_to_date
    snap = snapshot(db_url)
    assert {"polls", "votes", "users", "user_preferences", "guilds", "channels", "schema_migrations"} <= set(
        snap
    )
    indexes = {name for table, entry in snap.items() if table != "ledger" for name in entry[1]}
    assert indexes >= HOT | {"ix_polls_id", "ix_votes_id", "ix_user_preferences_id"}
    assert [v for v, _ in snap["ledger"]] == list(range(1, LATEST_VERSION + 1))
    # upstream's own ORM inserts (client-side defaults omitted) still work thanks to the server defaults
    with RawDB(db_url) as raw:
        raw.execute(
            "INSERT INTO polls (name, question, options_json, server_id, channel_id, creator_id, "
            "open_time, close_time) VALUES ('n', 'q', '[\"a\"]', '1', '2', '3', "
            "'2025-01-01 00:00:00', '2025-01-02 00:00:00')"
        )
        row = raw.execute("SELECT status, timezone, anonymous, multiple_choice FROM polls")[0]
    assert (row[0], row[1], bool(row[2]), bool(row[3])) == ("scheduled", "UTC", False, False)


def test_newer_upstream_version_is_refused(upstream_url: str) -> None:
    upgrade_schema(upstream_url)
    with RawDB(upstream_url) as raw:
        raw.execute("INSERT INTO schema_migrations (version, name) VALUES (12, 'from_the_future')")
    report = check_schema(upstream_url)
    assert not report.usable
    assert "version 12, newer than the 11" in " ".join(report.problems)
    before = snapshot(upstream_url)
    with pytest.raises(SchemaError, match="newer than"):
        upgrade_schema(upstream_url)
    assert snapshot(upstream_url) == before
