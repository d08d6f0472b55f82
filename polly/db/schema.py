"""Schema check and additive upgrade, compatible with upstream Polly's migration ledger.

:func:`check_schema` compares a database with the models and reports what is missing: tables, the
columns upstream's migrations v2-v11 added (each with its version), and the hot-path indexes polly
adds. :func:`upgrade_schema` adds exactly those, never drops or alters anything, and then records
versions 1..11 in ``schema_migrations`` so upstream's own migrator finds nothing to do. Running it
twice changes nothing the second time.

Atomicity per dialect:

* **SQLite** and **PostgreSQL** run every step in one transaction (SQLite: ``BEGIN IMMEDIATE``, which
  also keeps other writers out); any error rolls everything back.
* **MySQL / MariaDB** commit each DDL statement implicitly, so a transaction cannot undo them. The
  upgrade therefore plans everything first (refusing, before any change, what it cannot do), applies
  step by step, and on an error undoes the steps it applied, newest first (``DROP COLUMN`` /
  ``DROP INDEX`` / ``DROP TABLE`` of what it had just added, nothing else). If an undo step also
  fails, :class:`~polly.errors.SchemaError` lists what is left; every step is idempotent, so rerunning
  the upgrade completes it. The ledger rows are written last, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine, create_engine, insert, inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from polly.config import redact_url
from polly.db.engine import Database, describe_connect_error
from polly.db.models import HOT_PATH_INDEXES, Base, SchemaMigration, utcnow_naive
from polly.db.urls import driver_url, parse_url
from polly.errors import DatabaseUnavailableError, SchemaError

logger = logging.getLogger(__name__)

#: Upstream's migrations (``polly/migrations.py``): version -> name.
MIGRATIONS: dict[int, str] = {
    1: "initial_schema",
    2: "add_emojis_column",
    3: "add_server_channel_names",
    4: "add_timezone_anonymous",
    5: "add_image_message_text",
    6: "add_multiple_choice",
    7: "add_role_ping_columns",
    8: "add_timezone_explicitly_set",
    9: "add_open_immediately",
    10: "add_role_ping_notification_options",
    11: "add_max_choices",
}
LATEST_VERSION = max(MIGRATIONS)

#: Columns added after v1: (table, column) -> the version that added it. Every other column is v1.
ADDED_IN: dict[tuple[str, str], int] = {
    ("polls", "emojis_json"): 2,
    ("polls", "server_name"): 3,
    ("polls", "channel_name"): 3,
    ("polls", "timezone"): 4,
    ("polls", "anonymous"): 4,
    ("polls", "image_message_text"): 5,
    ("polls", "multiple_choice"): 6,
    ("polls", "ping_role_id"): 7,
    ("polls", "ping_role_name"): 7,
    ("polls", "ping_role_enabled"): 7,
    ("user_preferences", "last_role_id"): 7,
    ("user_preferences", "timezone_explicitly_set"): 8,
    ("polls", "open_immediately"): 9,
    ("polls", "ping_role_on_close"): 10,
    ("polls", "ping_role_on_update"): 10,
    ("polls", "max_choices"): 11,
}
DATA_TABLES = ("polls", "votes", "users", "user_preferences", "guilds", "channels")
LEDGER = "schema_migrations"

Target = Engine | Database | URL | str


@dataclass(frozen=True, slots=True)
class MissingColumn:
    table: str
    column: str
    version: int


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """How a database differs from the current schema.

    ``detected_version`` is the highest version in ``schema_migrations`` when it has rows
    (``version_source="ledger"``), else inferred from the columns present (``"columns"``), ``None`` for
    an empty database. ``problems`` are differences :func:`upgrade_schema` will not fix.
    """

    dialect: str
    detected_version: int | None
    version_source: Literal["ledger", "columns", "none"]
    recorded_versions: tuple[int, ...]
    missing_tables: tuple[str, ...]
    missing_columns: tuple[MissingColumn, ...]
    missing_indexes: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def usable(self) -> bool:
        """polly can read and write it: every data table and column exists (indexes only speed it up)."""
        return (
            not self.problems
            and not self.missing_columns
            and not (set(self.missing_tables) & set(DATA_TABLES))
        )

    @property
    def up_to_date(self) -> bool:
        """Nothing for :func:`upgrade_schema` to do."""
        return (
            self.usable
            and not self.missing_tables
            and not self.missing_indexes
            and set(MIGRATIONS) <= set(self.recorded_versions)
        )

    def lines(self) -> list[str]:
        """A human-readable account, one finding per line."""
        version = "none (empty database)" if self.detected_version is None else str(self.detected_version)
        out = [f"dialect: {self.dialect}", f"schema version: {version} (from {self.version_source})"]
        out += [f"missing table: {t} (upstream v1)" for t in self.missing_tables]
        out += [f"missing column: {c.table}.{c.column} (upstream v{c.version})" for c in self.missing_columns]
        out += [f"missing index: {name}" for name in self.missing_indexes]
        missing_versions = sorted(set(MIGRATIONS) - set(self.recorded_versions))
        if missing_versions and LEDGER not in self.missing_tables:
            out.append(f"schema_migrations lacks versions: {', '.join(map(str, missing_versions))}")
        out += [f"problem: {p}" for p in self.problems]
        return out


@contextmanager
def _engine_for(target: Target) -> Iterator[tuple[Engine, str]]:
    if isinstance(target, Engine):
        yield target, target.url.render_as_string(hide_password=True)
        return
    if isinstance(target, Database):
        yield target.sync_engine, target.redacted_url
        return
    url = parse_url(target) if isinstance(target, str) else target
    # Redact the URL as given: re-rendering a misparsed one could move part of the password elsewhere.
    shown = redact_url(target) if isinstance(target, str) else url.render_as_string(hide_password=True)
    engine = create_engine(driver_url(url, "sync"), poolclass=NullPool)
    try:
        yield engine, shown
    finally:
        engine.dispose()


def _connect(engine: Engine, shown_url: str) -> Connection:
    try:
        return engine.connect()
    except (SQLAlchemyError, OSError) as err:
        detail = describe_connect_error(err, engine.url.password)
        msg = f"cannot connect to the database at {shown_url}: {detail}"
        raise DatabaseUnavailableError(msg) from err


def _inspect(conn: Connection) -> SchemaReport:
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    missing_tables = tuple(t.name for t in Base.metadata.sorted_tables if t.name not in existing)
    missing_columns: list[MissingColumn] = []
    problems: list[str] = []
    for table in Base.metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {c["name"] for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            version = ADDED_IN.get((table.name, column.name), 1)
            missing_columns.append(MissingColumn(table.name, column.name, version))
            if not column.nullable and column.server_default is None:
                problems.append(
                    f"{table.name}.{column.name} is missing and NOT NULL without a default: "
                    "it cannot be added to existing rows (restore the table from upstream's schema)"
                )
    missing_columns.sort(key=lambda c: (c.version, c.table, c.column))
    missing_indexes = tuple(
        name
        for table, name, columns in HOT_PATH_INDEXES
        if table in existing
        and not any(
            ix["name"] == name or tuple(ix["column_names"]) == columns for ix in insp.get_indexes(table)
        )
    )
    recorded: tuple[int, ...] = ()
    if LEDGER in existing:
        rows = conn.execute(select(SchemaMigration.version)).scalars()
        recorded = tuple(sorted(int(v) for v in rows))
    detected: int | None
    source: Literal["ledger", "columns", "none"]
    if recorded:
        detected, source = recorded[-1], "ledger"
        if recorded[-1] > LATEST_VERSION:
            problems.append(
                f"schema_migrations records version {recorded[-1]}, newer than the {LATEST_VERSION} "
                "polly knows: upgrade polly first"
            )
    elif set(DATA_TABLES) & existing:
        lacking = {c.version for c in missing_columns}
        detected = 0 if set(DATA_TABLES) - existing else min(lacking, default=LATEST_VERSION + 1) - 1
        source = "columns"
    else:
        detected, source = None, "none"
    return SchemaReport(
        dialect="mariadb" if getattr(conn.dialect, "is_mariadb", False) else conn.dialect.name,
        detected_version=detected,
        version_source=source,
        recorded_versions=recorded,
        missing_tables=missing_tables,
        missing_columns=tuple(missing_columns),
        missing_indexes=missing_indexes,
        problems=tuple(problems),
    )


def check_schema(target: Target) -> SchemaReport:
    """Report how the database at ``target`` (engine, :class:`Database`, or URL) differs from the schema.

    Read-only. Raises :class:`DatabaseUnavailableError` (redacted URL) when it cannot connect.
    """
    with _engine_for(target) as (engine, shown), _connect(engine, shown) as conn:
        report = _inspect(conn)
        conn.rollback()
        return report


@dataclass(frozen=True, slots=True)
class _Step:
    description: str
    sql: tuple[str, ...]
    undo: tuple[str, ...]
    index_table: str | None = None


def _plan(conn: Connection, report: SchemaReport) -> list[_Step]:
    dialect = conn.dialect
    preparer = dialect.identifier_preparer
    steps: list[_Step] = []
    for name in report.missing_tables:
        table = Base.metadata.tables[name]
        sql = [str(CreateTable(table).compile(dialect=dialect)).strip()]
        indexes = sorted(table.indexes, key=lambda ix: ix.name or "")
        sql += [str(CreateIndex(ix).compile(dialect=dialect)) for ix in indexes]
        steps.append(_Step(f"create table {name}", tuple(sql), (f"DROP TABLE {preparer.quote(name)}",)))
    for missing in report.missing_columns:
        column = Base.metadata.tables[missing.table].c[missing.column]
        spec = str(CreateColumn(column).compile(dialect=dialect)).strip()
        tbl, col = preparer.quote(missing.table), preparer.quote(missing.column)
        steps.append(
            _Step(
                f"add column {missing.table}.{missing.column} (upstream v{missing.version})",
                (f"ALTER TABLE {tbl} ADD COLUMN {spec}",),
                (f"ALTER TABLE {tbl} DROP COLUMN {col}",),
            )
        )
    for table_name, name, columns in HOT_PATH_INDEXES:
        if name not in report.missing_indexes:
            continue
        cols = ", ".join(preparer.quote(c) for c in columns)
        tbl, ix = preparer.quote(table_name), preparer.quote(name)
        drop = f"DROP INDEX {ix} ON {tbl}" if dialect.name in ("mysql", "mariadb") else f"DROP INDEX {ix}"
        create = f"CREATE INDEX {ix} ON {tbl} ({cols})"
        steps.append(_Step(f"create index {name}", (create,), (drop,), index_table=table_name))
    return steps


def _record_versions(conn: Connection) -> list[int]:
    have = set(conn.execute(select(SchemaMigration.version)).scalars())
    new = [v for v in MIGRATIONS if v not in have]
    if new:
        now = utcnow_naive()
        conn.execute(
            insert(SchemaMigration),
            [{"version": v, "name": MIGRATIONS[v], "applied_at": now} for v in new],
        )
    return new


StepHook = Callable[[str], None]
#: The description the last step (writing the ledger rows) is announced with.
RECORD_STEP = "record versions in schema_migrations"


def upgrade_schema(target: Target, *, before_step: StepHook | None = None) -> SchemaReport:
    """Apply the additive changes :func:`check_schema` reports and record versions 1..11.

    Returns the report after the upgrade. ``before_step`` (for tests and progress output) is called
    with each step's description before it runs; an exception from it counts as that step failing.
    Raises :class:`SchemaError` when the database cannot be upgraded; the database is left as it was
    (see the module docstring for MySQL/MariaDB).
    """
    with _engine_for(target) as (engine, shown), _connect(engine, shown) as conn:
        transactional = conn.dialect.name in ("sqlite", "postgresql")
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        report = _inspect(conn)
        if report.problems:
            conn.rollback()
            raise SchemaError("cannot upgrade the schema:\n" + "\n".join(f"  - {p}" for p in report.problems))
        if report.up_to_date:
            conn.rollback()
            return report
        steps = _plan(conn, report)
        if transactional:
            _apply_in_transaction(conn, steps, before_step)
        else:
            conn.rollback()
            _apply_with_undo(conn, steps, before_step)
        for step in steps:
            logger.info("schema upgrade: %s", step.description)
        after = _inspect(conn)
        conn.rollback()
        return after


def _run(conn: Connection, step: _Step, before_step: StepHook | None) -> None:
    if before_step is not None:
        before_step(step.description)
    for statement in step.sql:
        conn.exec_driver_sql(statement)


def _apply_in_transaction(conn: Connection, steps: list[_Step], before_step: StepHook | None) -> None:
    current = RECORD_STEP
    try:
        for step in steps:
            current = step.description
            _run(conn, step, before_step)
        current = RECORD_STEP
        if before_step is not None:
            before_step(RECORD_STEP)
        _record_versions(conn)
        conn.commit()
    except Exception as err:
        conn.rollback()
        msg = f"schema upgrade failed at step {current!r} and was rolled back; nothing changed: {err}"
        raise SchemaError(msg) from err


def _apply_with_undo(conn: Connection, steps: list[_Step], before_step: StepHook | None) -> None:
    applied: list[_Step] = []
    current = RECORD_STEP
    try:
        for step in steps:
            current = step.description
            implicit = _implicit_indexes(conn, step.index_table)
            _run(conn, step, before_step)
            conn.commit()
            applied.append(_with_restored_indexes(conn, step, implicit))
        current = RECORD_STEP
        if before_step is not None:
            before_step(RECORD_STEP)
        _record_versions(conn)
        conn.commit()
    except Exception as err:
        conn.rollback()
        left = _undo(conn, applied)
        if left:
            msg = (
                f"schema upgrade failed at step {current!r} ({err}); these applied steps could not be "
                f"undone: {'; '.join(left)}. They are additive; rerun `polly db upgrade` to complete it"
            )
        else:
            msg = (
                f"schema upgrade failed at step {current!r} and its {len(applied)} applied step(s) "
                f"were undone: {err}"
            )
        raise SchemaError(msg) from err


def _implicit_indexes(conn: Connection, table: str | None) -> dict[str, list[str]]:
    """The indexes of ``table`` (name -> columns) before an index step, or ``{}`` for other steps."""
    if table is None:
        return {}
    return {str(ix["name"]): [str(c) for c in ix["column_names"]] for ix in inspect(conn).get_indexes(table)}


def _with_restored_indexes(conn: Connection, step: _Step, before: dict[str, list[str]]) -> _Step:
    """InnoDB drops the index it made for a foreign key once a new index covers the key, and refuses
    to drop the new one while it is the only one: the undo recreates the implicit index first."""
    if step.index_table is None:
        return step
    after = {str(ix["name"]) for ix in inspect(conn).get_indexes(step.index_table)}
    preparer = conn.dialect.identifier_preparer
    tbl = preparer.quote(step.index_table)
    restore = tuple(
        f"CREATE INDEX {preparer.quote(name)} ON {tbl} ({', '.join(preparer.quote(c) for c in cols)})"
        for name, cols in before.items()
        if name not in after
    )
    return _Step(step.description, step.sql, restore + step.undo, step.index_table)


def _undo(conn: Connection, applied: list[_Step]) -> list[str]:
    left: list[str] = []
    for step in reversed(applied):
        try:
            for statement in step.undo:
                conn.exec_driver_sql(statement)
            conn.commit()
        except SQLAlchemyError:
            logger.exception("could not undo schema step %r", step.description)
            conn.rollback()
            left.append(step.description)
    return left


def create_schema(target: Target) -> SchemaReport:
    """Make a database usable by polly and upstream: on an empty one, create every table and index and
    record versions 1..11; on an existing one this is :func:`upgrade_schema` (additive only)."""
    return upgrade_schema(target)
