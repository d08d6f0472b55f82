"""Pool gauges read pool state: right after invalidate, detach and dispose, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest
import redis
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from polly.stats import PoolStats, StatsRegistry
from tests.instrumentation.helpers import collect, points, value

Provider = tuple[object, InMemoryMetricReader]
STATE = "db.client.connection.state"


def _counts(reader: InMemoryMetricReader, pool: str | None) -> tuple[int, int]:
    assert pool is not None, "the pool was not added"
    metric = collect(reader)["db.client.connection.count"]
    found = {
        dict(k)[STATE]: v
        for k, v in points(metric).items()
        if dict(k)["db.client.connection.pool.name"] == pool
    }
    return found["idle"], found["used"]


def _check_lifecycle(engine: Engine, telemetry: Telemetry, reader: InMemoryMetricReader) -> None:
    name = telemetry.pools.add_engine(engine)
    assert _counts(reader, name) == (0, 0)
    c1 = engine.connect()
    c2 = engine.connect()
    c3 = engine.connect()  # overflow
    c1.execute(text("select 1"))
    assert _counts(reader, name) == (0, 3)
    c1.close()
    assert _counts(reader, name) == (1, 2)
    c2.invalidate()
    c2.close()
    assert _counts(reader, name) == (2, 1)
    c3.detach()
    c3.close()
    idle, used = _counts(reader, name)
    assert used == 0
    assert idle == engine.pool.checkedin()  # type: ignore[attr-defined]
    held = engine.connect()
    engine.dispose()  # a new pool: the held connection is no longer the pool's
    assert _counts(reader, name) == (0, 0)
    held.invalidate()  # closes the DBAPI connection the old pool no longer tracks
    held.close()
    assert _counts(reader, name) == (0, 0)
    metrics = collect(reader)
    attrs = {"db.client.connection.pool.name": name}
    system = {dict(k)["db.system.name"] for k in points(metrics["db.client.connection.max"])}
    assert len(system) == 1
    assert value(metrics["db.client.connection.max"], **attrs, **{"db.system.name": system.pop()}) == 3
    use_count = sum(c for c, _s in points(metrics["db.client.connection.use_time"]).values())
    assert use_count >= 3
    assert sum(c for c, _s in points(metrics["db.client.connection.create_time"]).values()) >= 3


def test_sqlite_pool_gauges_survive_invalidate_detach_dispose(
    sqlite_url: str, telemetry: Telemetry, provider: Provider
) -> None:
    engine = create_engine(sqlite_url, pool_size=2, max_overflow=1)
    try:
        _check_lifecycle(engine, telemetry, provider[1])
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_pool_gauges_survive_invalidate_detach_dispose(
    postgres_url: str, telemetry: Telemetry, provider: Provider
) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, pool_size=2, max_overflow=1)
    try:
        _check_lifecycle(engine, telemetry, provider[1])
        name = telemetry.pools.add_engine(engine)
        assert name is not None
        assert "@" not in name
        assert name.startswith("127.0.0.1:5432/")
        assert (
            value(
                collect(provider[1])["db.client.connection.max"],
                **{"db.client.connection.pool.name": name, "db.system.name": "postgresql"},
            )
            == 3
        )
    finally:
        engine.dispose()


async def test_async_engine_is_read_through_its_sync_pool(
    sqlite_url: str, telemetry: Telemetry, provider: Provider
) -> None:
    engine = create_async_engine(
        sqlite_url.replace("sqlite://", "sqlite+aiosqlite://", 1), pool_size=2, max_overflow=0
    )
    name = telemetry.pools.add_engine(engine, name="async-main")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
            assert _counts(provider[1], name) == (0, 1)
        assert _counts(provider[1], name) == (1, 0)
    finally:
        await engine.dispose()


def test_duplicate_names_are_emitted_once(
    sqlite_url: str,
    telemetry: Telemetry,
    provider: Provider,
    stats_registry: StatsRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine(sqlite_url, pool_size=2, max_overflow=0, pool_logging_name="main")
    other = create_engine(sqlite_url, pool_size=2, max_overflow=0, pool_logging_name="main")
    stats_registry.register("db_pool", "main", lambda: PoolStats("main", "sqlite", 9, 9, 4, 5, 0, 0, 0))
    with caplog.at_level(logging.INFO):
        assert telemetry.pools.add_engine(engine) == "main"
        assert telemetry.pools.add_engine(engine) == "main"  # the same engine again: nothing new
        assert telemetry.pools.add_engine(other) == "main#2"  # a second pool keeps names unique
        _counts(provider[1], "main")
    assert "reported by two sources" in caplog.text
    assert _counts(provider[1], "main") == (5, 4)  # polly's registry wins
    metric = collect(provider[1])["db.client.connection.count"]
    assert len(points(metric)) == 4  # main (the registry's) and main#2
    engine.dispose()
    other.dispose()


@pytest.mark.redis
def test_redis_pool_counts(redis_url: str, telemetry: Telemetry, provider: Provider) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, max_connections=4)
    client = redis.Redis(connection_pool=pool)
    try:
        name = telemetry.pools.add_redis_pool(pool)
        assert name is not None
        client.ping()
        assert _counts(provider[1], name) == (1, 0)
        conn = pool.get_connection()
        assert _counts(provider[1], name) == (1, 1) or _counts(provider[1], name) == (0, 1)
        pool.release(conn)
        metrics = collect(provider[1])
        attrs = {"db.client.connection.pool.name": name, "db.system.name": "redis"}
        assert value(metrics["db.client.connection.max"], **attrs) == 4
        assert "_" not in name.split(":")[-1].split("/")[0]  # no random pool id in the name
    finally:
        client.close()
        pool.disconnect()


def test_dropped_engines_are_forgotten(sqlite_url: str, telemetry: Telemetry, provider: Provider) -> None:
    engine = create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_logging_name="gone")
    telemetry.pools.add_engine(engine)
    with engine.connect():
        pass
    assert _counts(provider[1], "gone") == (1, 0)
    engine.dispose()
    del engine
    import gc

    gc.collect()
    telemetry.pools._cache = None
    metric = collect(provider[1]).get("db.client.connection.count")
    assert metric is None or all(dict(k)["db.client.connection.pool.name"] != "gone" for k in points(metric))
