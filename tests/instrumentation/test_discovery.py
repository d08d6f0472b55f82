"""Zero-code discovery: engines and redis-py pools however and whenever they are made, one name each."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import create_engine, exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.stats import StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.helpers import SCOPE, collect, points, value

Provider = tuple[MeterProvider, InMemoryMetricReader]
POOL = "db.client.connection.pool.name"


@pytest.fixture
def discovering(provider: Provider, stats_registry: StatsRegistry) -> Iterator[Telemetry]:
    gc.collect()  # pools earlier tests dropped are not found by the start-up scan
    tel = Telemetry(
        provider[0].get_meter(SCOPE),
        Options(leak_warmup_seconds=0, task_sample_interval_seconds=0.05),
        [PollyStatsSource(stats_registry)],
    )
    tel.discover()
    yield tel
    tel.stop()


def _pools(reader: InMemoryMetricReader, metric: str = "db.client.connection.max") -> set[str]:
    found = collect(reader).get(metric)
    return set() if found is None else {dict(k)[POOL] for k in points(found)}


def test_engines_made_before_and_after_discovery(
    sqlite_url: str, provider: Provider, stats_registry: StatsRegistry, tmp_path: object
) -> None:
    before = create_engine(sqlite_url, pool_size=2, max_overflow=1)
    gc.collect()
    tel = Telemetry(provider[0].get_meter(SCOPE), Options(), [PollyStatsSource(stats_registry)])
    try:
        tel.discover()
        after = create_engine(sqlite_url, pool_size=3, max_overflow=0)
        base = "sqlite:" + sqlite_url.removeprefix("sqlite:///")
        assert {base, f"{base}#2"} <= _pools(provider[1])
        maxima = points(collect(provider[1])["db.client.connection.max"])
        assert maxima[frozenset({(POOL, base), ("db.system.name", "sqlite")})] == 3
        assert maxima[frozenset({(POOL, f"{base}#2"), ("db.system.name", "sqlite")})] == 3
        with before.connect(), after.connect():
            counts = collect(provider[1])["db.client.connection.count"]
            assert (
                value(
                    counts, **{POOL: base, "db.system.name": "sqlite", "db.client.connection.state": "used"}
                )
                == 1
            )
    finally:
        tel.stop()
        before.dispose()
        after.dispose()


@pytest.mark.postgres
async def test_async_engine_on_postgres_full_pool_set(
    postgres_url: str, discovering: Telemetry, provider: Provider
) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    sync = create_engine(url, pool_size=1, max_overflow=0)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)  # same target
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            with pytest.raises(exc.TimeoutError):
                async with engine.connect():
                    pass
        with sync.connect():
            pass
        name = "127.0.0.1:5432/" + postgres_url.rsplit("/", 1)[1]
        metrics = collect(provider[1])
        pools = {dict(k)[POOL] for k in points(metrics["db.client.connection.max"])}
        assert {name, f"{name}#async"} <= pools
        attrs = {POOL: f"{name}#async", "db.system.name": "postgresql"}
        assert value(metrics["db.client.connection.timeouts"], **attrs) == 1
        assert value(metrics["db.client.connection.pending_requests"], **attrs) == 0
        assert value(metrics["db.client.connection.idle.max"], **attrs) == 1
        assert value(metrics["db.client.connection.wait_time"], **attrs)[0] == 2  # one ok, one timed out
        assert value(metrics["db.client.connection.use_time"], **attrs)[0] == 1
        assert value(metrics["db.client.connection.create_time"], **attrs)[0] == 1
        assert all("@" not in n and "postgres:" not in n for n in pools)  # no credentials
    finally:
        await engine.dispose()
        sync.dispose()


def test_pending_requests_count_waiting_callers(
    sqlite_url: str, discovering: Telemetry, provider: Provider
) -> None:
    engine = create_engine(
        sqlite_url, pool_size=1, max_overflow=0, pool_timeout=5, pool_logging_name="narrow"
    )
    held = engine.connect()
    waiting = threading.Thread(target=lambda: engine.connect().close())
    waiting.start()
    try:
        for _ in range(100):
            discovering.pools._cache = None
            if (
                value(
                    collect(provider[1])["db.client.connection.pending_requests"],
                    **{POOL: "narrow", "db.system.name": "sqlite"},
                )
                == 1
            ):
                break
            threading.Event().wait(0.02)
        else:
            pytest.fail("the waiting caller was never counted")
    finally:
        held.close()
        waiting.join(10)
        engine.dispose()
    discovering.pools._cache = None
    assert (
        value(
            collect(provider[1])["db.client.connection.pending_requests"],
            **{POOL: "narrow", "db.system.name": "sqlite"},
        )
        == 0
    )


@pytest.mark.redis
async def test_redis_pools_sync_and_asyncio(
    redis_url: str, discovering: Telemetry, provider: Provider
) -> None:
    sync_pool = redis.ConnectionPool.from_url(redis_url, max_connections=3)
    client = aioredis.Redis.from_url(redis_url, max_connections=4)
    try:
        await client.ping()
        redis.Redis(connection_pool=sync_pool).ping()
        parts = urlsplit(redis_url)
        name = f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or '0'}"
        metrics = collect(provider[1])
        maxima = {
            dict(k)[POOL]: v
            for k, v in points(metrics["db.client.connection.max"]).items()
            if dict(k)["db.system.name"] == "redis"
        }
        assert maxima[name] == 3
        assert maxima[f"{name}#async"] == 4
        idle = {POOL: f"{name}#async", "db.system.name": "redis", "db.client.connection.state": "idle"}
        assert value(metrics["db.client.connection.count"], **idle) == 1
        assert not [n for n in maxima if "_" in n.rsplit(":", 1)[-1]], maxima  # not redis-py ids
    finally:
        await client.aclose()
        sync_pool.disconnect()


@pytest.mark.postgres
async def test_polly_own_pools_are_reported_once(
    postgres_url: str, discovering: Telemetry, provider: Provider, stats_registry: StatsRegistry
) -> None:
    database = Database(DatabaseSettings(url=SecretUrl(postgres_url)), registry=stats_registry)
    try:
        with database.sync_engine.connect():
            pass
        async with database.async_engine.connect():
            pass
        metrics = collect(provider[1])
        name = "127.0.0.1:5432/" + postgres_url.rsplit("/", 1)[1]
        pools = sorted(
            dict(k)[POOL] for k in points(metrics["db.client.connection.max"]) if name in dict(k)[POOL]
        )
        assert pools == [name, f"{name}#async"]  # one series each, the one scheme, no polly prefix
        assert discovering.pools._claimed(database.sync_engine)  # left to polly's own source
        assert discovering.pools._claimed(database.async_engine.sync_engine)
    finally:
        await database.dispose()


async def test_request_tasks_appear_and_finished_ones_go(discovering: Telemetry, provider: Provider) -> None:
    async def handle_request() -> None:
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    discovering.tasks.watch(loop)
    tasks = [loop.create_task(handle_request()) for _ in range(3)]
    name = "test_request_tasks_appear_and_finished_ones_go.<locals>.handle_request"
    await asyncio.sleep(0.2)
    assert value(collect(provider[1])["polly.task.count"], **{"polly.task.name": name}) == 3
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.2)
    counts = {
        dict(k)["polly.task.name"]: v for k, v in points(collect(provider[1])["polly.task.count"]).items()
    }
    assert counts.get(name, 0) == 0


def test_loops_started_later_are_sampled(discovering: Telemetry, provider: Provider) -> None:
    async def main() -> None:
        await asyncio.sleep(0.3)
        counts = {dict(k)["polly.task.name"] for k in points(collect(provider[1])["polly.task.count"])}
        assert "test_loops_started_later_are_sampled.<locals>.main" in counts

    asyncio.run(main())  # a new loop: found through run_forever, with no register_loop()
