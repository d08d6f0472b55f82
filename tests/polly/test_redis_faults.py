"""Redis dying under load: no exception escapes, calls answer fast, connections stay bounded, and the
same pool recovers when the server comes back. Each test runs its own ``redis-server``."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest

from polly import redis as polly_redis
from polly.config import RedisSettings, SecretUrl
from polly.redis_client import RedisClient
from polly.stats import BreakerState
from tests.polly.redis_server import OwnRedisServer, own_redis_server

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MAX_CONNECTIONS = 5
CALLERS = 50


def fault_settings(server: OwnRedisServer, probe_interval_seconds: float = 0.2) -> RedisSettings:
    return RedisSettings(
        url=SecretUrl(server.url),
        max_connections=MAX_CONNECTIONS,
        acquire_timeout_seconds=1.0,
        socket_connect_timeout_seconds=0.5,
        socket_timeout_seconds=0.5,
        retry_attempts=1,
        breaker_failure_threshold=3,
        breaker_probe_interval_seconds=probe_interval_seconds,
    )


@pytest.fixture(autouse=True)
async def _closed_afterwards() -> AsyncIterator[None]:
    yield
    await polly_redis.close_redis()


def state(connector: polly_redis.RedisConnector) -> BreakerState:
    """The breaker state, read through a call so mypy does not narrow it across awaits."""
    return connector.breaker.state


async def wait_for_state(
    connector: polly_redis.RedisConnector, wanted: BreakerState, seconds: float
) -> float:
    start = time.perf_counter()
    while state(connector) is not wanted:
        if time.perf_counter() - start > seconds:
            raise AssertionError(f"breaker still {state(connector)} after {seconds} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


class Load:
    """``CALLERS`` concurrent callers looping over the API, recording what escapes and the pool's size."""

    def __init__(self, client: RedisClient, connector: polly_redis.RedisConnector) -> None:
        self.client = client
        self.connector = connector
        self.escaped: list[BaseException] = []
        self.latencies: list[float] = []
        self.measuring = asyncio.Event()
        self.stop = asyncio.Event()
        self.most_pooled = 0

    async def caller(self, i: int) -> None:
        client = self.client
        while not self.stop.is_set():
            try:
                await client.cache_set(f"k{i}", {"i": i}, ttl=60)
                started = time.perf_counter()
                await client.cache_get(f"k{i}")
                if self.measuring.is_set():
                    self.latencies.append(time.perf_counter() - started)
                await client.exists(f"k{i}")
                await client.hgetall(f"h{i}")
            except BaseException as err:
                self.escaped.append(err)
                raise
            pool = self.connector.stats().pool
            self.most_pooled = max(self.most_pooled, pool.used + pool.idle)
            await asyncio.sleep(0)


async def outage_scenario(server: OwnRedisServer, load: Load) -> float:
    """Up, killed (measure while open), restarted; returns the seconds until the breaker closed."""
    connector = load.connector
    await asyncio.sleep(0.5)
    assert state(connector) is BreakerState.CLOSED
    assert 1 <= await asyncio.to_thread(server.polly_connections) <= MAX_CONNECTIONS
    server.kill()
    await wait_for_state(connector, BreakerState.OPEN, 5.0)
    load.measuring.set()
    await asyncio.sleep(1.0)
    load.measuring.clear()
    restarted = time.perf_counter()
    await asyncio.to_thread(server.start)
    await wait_for_state(connector, BreakerState.CLOSED, 5.0)
    recovery = time.perf_counter() - restarted  # from launching the server, its own start-up included
    await asyncio.sleep(0.3)
    assert await load.client.set("after", "restart") is True
    assert await load.client.get("after") == "restart"
    assert await asyncio.to_thread(server.polly_connections) <= MAX_CONNECTIONS
    return recovery


async def test_outage_under_load_degrades_fast_and_recovers_on_the_same_pool() -> None:
    with own_redis_server() as server:
        client = RedisClient(fault_settings(server))
        assert await client.connect()
        connector = polly_redis.current_redis()
        assert connector is not None
        pool, redis_client = connector.pool, client._client
        load = Load(client, connector)
        async with asyncio.TaskGroup() as tasks:
            probe = tasks.create_task(connector.probe_loop())  # the test owns the probe here
            for i in range(CALLERS):
                tasks.create_task(load.caller(i))
            try:
                recovery = await outage_scenario(server, load)
            finally:
                load.stop.set()
                probe.cancel()

    assert load.escaped == []
    assert recovery < 3.0
    assert load.most_pooled <= MAX_CONNECTIONS
    assert connector.pool is pool  # nothing rebuilt
    assert client._client is redis_client
    assert connector.breaker.opened == 1
    assert len(load.latencies) > 1000
    p99 = statistics.quantiles(load.latencies, n=100)[98]
    print(  # figures for the record (visible with -s); the bounds are asserted below
        f"open: {len(load.latencies)} reads, p50 {statistics.median(load.latencies) * 1e3:.3f} ms, "
        f"p99 {p99 * 1e3:.3f} ms; most pooled {load.most_pooled}/{MAX_CONNECTIONS}; recovery {recovery:.3f} s"
    )
    assert p99 < 0.05, f"p99 while open {p99 * 1000:.2f} ms"


async def test_open_breaker_makes_no_connection_attempts_and_serves_remembered_reads() -> None:
    with own_redis_server() as server:
        client = RedisClient(fault_settings(server, probe_interval_seconds=60.0))
        assert await client.connect()
        connector = polly_redis.current_redis()
        assert connector is not None
        assert await client.cache_set("prefs:1", {"tz": "UTC"}, ttl=1800)
        assert await client.set("count", 3)
        server.kill()
        while state(connector) is not BreakerState.OPEN:
            assert await client.exists("x") is False
        errors = connector.errors
        for _ in range(1000):
            assert await client.cache_get("prefs:1") == {"tz": "UTC"}
            assert await client.get("count") == 3
            assert await client.get("unknown", "dflt") == "dflt"
            assert await client.set("k", "v") is False
            assert await client.delete("k") == 0
            assert await client.ttl("k") == -2
            assert await client.lrange("l") == []
            assert await client.hgetall("h") == {}
            assert await client.cache_clear_pattern("*") == 0
        assert connector.errors == errors  # no call reached the network
        assert not client.is_connected
        stats = connector.stats()
        assert stats.breaker is BreakerState.OPEN
        assert stats.fallback_hits >= 9000


async def test_recovers_through_a_half_open_trial_without_a_probe_task() -> None:
    with own_redis_server() as server:
        client = RedisClient(fault_settings(server, probe_interval_seconds=0.1))
        assert await client.connect()
        connector = polly_redis.current_redis()
        assert connector is not None
        server.kill()
        while state(connector) is not BreakerState.OPEN:
            await client.get("k")
        server.start()
        deadline = time.monotonic() + 5.0
        while not await client.set("k", "v"):
            assert time.monotonic() < deadline, "no recovery within 5 s"
            await asyncio.sleep(0.01)
        assert state(connector) is BreakerState.CLOSED
        assert await client.get("k") == "v"


async def test_redis_down_at_start_is_not_fatal_and_recovers() -> None:
    server = OwnRedisServer()
    client = RedisClient(fault_settings(server, probe_interval_seconds=0.1))
    assert await client.connect() is False
    connector = polly_redis.current_redis()
    assert connector is not None
    assert state(connector) is BreakerState.OPEN
    assert await client.get("k", "dflt") == "dflt"
    server.start()
    try:
        assert await connector.probe()
        assert client.is_connected
        assert await client.set("k", "v")
    finally:
        server.kill()
