"""Pooled engines: scopes, exhaustion, stats from the pool itself, slow holders, dialect choices, outages."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.models import Poll, utcnow_naive
from polly.db.schema import create_schema
from polly.db.urls import driver_url, pool_name
from polly.errors import DatabaseUnavailableError, PoolExhaustedError
from polly.stats import DurationEvent, PoolStats, StatsRegistry
from tests.polly.db.upstream import kind_of


def settings(url: str, **overrides: Any) -> DatabaseSettings:
    return DatabaseSettings(url=SecretUrl(url), **overrides)


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    create_schema(db_url)
    db = Database(
        settings(db_url, pool_size=2, max_overflow=1, pool_timeout_seconds=0.5), registry=StatsRegistry()
    )
    try:
        yield db
    finally:
        await db.dispose()


def new_poll(name: str = "p") -> Poll:
    now = utcnow_naive()
    return Poll(
        name=name,
        question="q?",
        options_json='["a", "b"]',
        server_id="1",
        channel_id="2",
        creator_id="3",
        open_time=now,
        close_time=now,
    )


async def count_polls(db: Database) -> int:
    async with db.async_session_scope() as session:
        return int((await session.execute(select(func.count()).select_from(Poll))).scalar_one())


async def test_scopes_commit_on_success_and_roll_back_on_error(database: Database) -> None:
    with database.session_scope() as session:
        session.add(new_poll("sync"))
    async with database.async_session_scope() as async_session:
        async_session.add(new_poll("async"))

    def fail_sync() -> None:
        with database.session_scope() as session:
            session.add(new_poll("lost"))
            session.flush()
            raise RuntimeError

    async def fail_async() -> None:
        async with database.async_session_scope() as session:
            session.add(new_poll("lost too"))
            await session.flush()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_sync()
    with pytest.raises(RuntimeError):
        await fail_async()
    assert await count_polls(database) == 2
    assert all(s.used == 0 for s in database.engine_stats())


async def test_pool_exhaustion_names_the_limits(database: Database) -> None:
    held = [await database.async_engine.connect() for _ in range(3)]  # pool_size 2 + overflow 1
    try:
        with pytest.raises(PoolExhaustedError) as info:
            async with database.async_session_scope() as session:
                await session.execute(text("SELECT 1"))
        message = str(info.value)
        assert "pool_size=2" in message
        assert "max_overflow=1" in message
        assert "pool_timeout_seconds=0.5" in message
        (snap,) = [s for s in database.engine_stats() if s.name.startswith("async:")]
        assert (snap.used, snap.overflow, snap.timeouts, snap.max_connections, snap.max_idle) == (
            3,
            1,
            1,
            3,
            2,
        )
    finally:
        for conn in held:
            await conn.close()
    (snap,) = [s for s in database.engine_stats() if s.name.startswith("async:")]
    assert (snap.used, snap.idle, snap.pending) == (0, 2, 0)


def test_sync_pool_exhaustion_too(database: Database) -> None:
    held = [database.sync_engine.connect() for _ in range(3)]
    try:
        with pytest.raises(PoolExhaustedError, match="pool_size=2 max_overflow=1"):
            database.sync_engine.connect()
    finally:
        for conn in held:
            conn.close()


async def test_waiters_are_counted_while_blocked(database: Database) -> None:
    held = [await database.async_engine.connect() for _ in range(3)]
    pending_seen: list[int] = []

    async def try_connect() -> None:
        async with database.async_engine.connect():
            pass

    async def observe_then_release() -> None:
        await asyncio.sleep(0.1)
        (snap,) = [s for s in database.engine_stats() if s.name.startswith("async:")]
        pending_seen.append(snap.pending)
        for conn in held:
            await conn.close()

    async with asyncio.TaskGroup() as group:
        group.create_task(try_connect())
        group.create_task(try_connect())
        group.create_task(observe_then_release())
    assert pending_seen == [2]
    (snap,) = [s for s in database.engine_stats() if s.name.startswith("async:")]
    assert (snap.pending, snap.used, snap.timeouts) == (0, 0, 0)


async def test_stats_registered_on_open_and_removed_on_dispose(db_url: str) -> None:
    registry = StatsRegistry()
    events: list[DurationEvent] = []
    registry.add_listener(events.append)
    db = Database(settings(db_url), registry=registry)
    assert registry.collect("db_pool") == []
    async with db.async_session_scope() as session:
        await session.execute(text("SELECT 1"))
    snaps = registry.collect("db_pool")
    names = [s.name for s in snaps if isinstance(s, PoolStats)]
    assert names == [pool_name(driver_url(db_url, "async"), "async")]
    assert "@" not in names[0]
    assert {e.kind for e in events} == {"wait_time", "use_time", "create_time"}
    assert all(e.seconds >= 0 for e in events)
    if kind_of(db_url) == "mysql":
        assert {e.system for e in events if e.kind == "use_time"} == {"mariadb"}
    await db.dispose()
    assert registry.collect("db_pool") == []


def test_password_never_in_pool_name_or_repr() -> None:
    db = Database(settings("postgresql://alice:hunter2@db.example:5433/polly"), registry=StatsRegistry())
    assert "hunter2" not in repr(db)
    assert pool_name(driver_url("postgresql://alice:hunter2@db.example:5433/polly", "sync"), "sync") == (
        "sync:postgresql://db.example:5433/polly"
    )


async def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    db = Database(settings("postgresql://alice:hunter2@127.0.0.1:1/polly"), registry=StatsRegistry())
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            await db.check_connection()
        assert "postgresql://alice:***@127.0.0.1:1/polly" in str(info.value)
        assert "hunter2" not in str(info.value)
        with pytest.raises(DatabaseUnavailableError, match="alice:\\*\\*\\*@"):
            db.check_connection_sync()
    finally:
        await db.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    db = Database(settings(sqlite_url, sqlite_busy_timeout_ms=1234), registry=StatsRegistry())
    try:
        with db.sync_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        (snap,) = db.engine_stats()
        assert (snap.max_idle, snap.max_connections) == (5, 15)
    finally:
        db.dispose_sync()


async def test_async_sqlite_pragmas_too(sqlite_url: str) -> None:
    db = Database(settings(sqlite_url), registry=StatsRegistry())
    try:
        async with db.async_engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        await db.dispose()


def test_slow_checkout_is_logged_once_with_the_stack(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    db = Database(
        settings(sqlite_url, slow_checkout_seconds=5), registry=StatsRegistry(), clock=lambda: now[0]
    )
    caplog.set_level(logging.WARNING, logger="polly.db.pool")
    try:

        def hold_a_connection_here() -> Any:
            return db.sync_engine.connect()

        conn = hold_a_connection_here()
        now[0] = 4.0
        assert db.check_slow_checkouts() == 0
        now[0] = 6.0
        assert db.check_slow_checkouts() == 1
        assert db.check_slow_checkouts() == 0  # once
        now[0] = 60.0
        conn.close()  # returning it late does not log again
        slow = [r for r in caplog.records if "is held" in r.getMessage() or "was held" in r.getMessage()]
        assert len(slow) == 1
        assert "hold_a_connection_here" in slow[0].getMessage()
        assert "threshold 5.0 s" in slow[0].getMessage()
    finally:
        db.dispose_sync()


def test_no_engine_until_first_use(sqlite_url: str) -> None:
    registry = StatsRegistry()
    db = Database(settings(sqlite_url), registry=registry)
    assert db._sync_engine is None
    assert db._async_engine is None
    assert db.engine_stats() == []
    db.dispose_sync()


def test_sync_engine_is_thread_safe_to_share(database: Database) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                with database.session_scope() as session:
                    session.execute(text("SELECT 1"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(s.used == 0 for s in database.engine_stats())


async def test_read_with_retry_recovers_after_connections_are_killed(postgres_url: str) -> None:
    """The server drops every connection (as on a restart): the next read reconnects, no crash."""
    create_schema(postgres_url)
    db = Database(settings(postgres_url, pool_pre_ping=False), registry=StatsRegistry())
    try:
        assert await count_polls(db) == 0
        with db.sync_engine.connect() as admin:
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            admin.commit()

        async def read(session: Any) -> int:
            return int((await session.execute(select(func.count()).select_from(Poll))).scalar_one())

        async def no_sleep(_: float) -> None:
            return None

        assert await db.read_with_retry(read, what="count polls", sleep=no_sleep) == 0
    finally:
        await db.dispose()
