"""Every signal through the SDK's InMemoryMetricReader: names, units, attributes, values."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import psutil
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.stats import BreakerState, CacheStats, PoolStats, RedisStats, StatsRegistry, TaskStats
from tests.instrumentation.helpers import collect, points, value

Provider = tuple[object, InMemoryMetricReader]


class Leaky:
    """A class the tests create many instances of."""


def test_process_metrics_follow_semconv(telemetry: Telemetry, provider: Provider) -> None:
    metrics = collect(provider[1])
    rss = value(metrics["process.memory.usage"])
    assert metrics["process.memory.usage"].unit == "By"
    assert abs(rss - psutil.Process().memory_info().rss) < 64 * 2**20
    assert value(metrics["process.memory.virtual"]) >= rss
    assert {dict(k)["cpu.mode"] for k in points(metrics["process.cpu.time"])} == {"user", "system"}
    assert metrics["process.cpu.time"].unit == "s"
    assert value(metrics["process.thread.count"]) >= 1
    assert metrics["process.thread.count"].unit == "{thread}"
    assert (
        abs(value(metrics["process.unix.file_descriptor.count"]) - len(list(Path("/proc/self/fd").iterdir())))
        <= 2
    )
    assert metrics["process.unix.file_descriptor.count"].unit == "{file_descriptor}"
    types = {dict(k)["process.context_switch.type"] for k in points(metrics["process.context_switches"])}
    assert types == {"voluntary", "involuntary"}
    assert metrics["process.context_switches"].unit == "{context_switch}"


def test_gc_counters_and_pause_histogram(telemetry: Telemetry, provider: Provider) -> None:
    before = gc.get_stats()[2]["collections"]
    gc.collect()  # the test causes a collection; the instrumentation never does
    metrics = collect(provider[1])
    assert value(metrics["cpython.gc.collections"], **{"cpython.gc.generation": 2}) >= before + 1
    assert set(points(metrics["cpython.gc.collected_objects"])) == {
        frozenset({("cpython.gc.generation", g)}) for g in (0, 1, 2)
    }
    assert "cpython.gc.uncollectable_objects" in metrics
    pauses = metrics["polly.gc.pause.duration"]
    assert pauses.unit == "s"
    count, total = value(pauses, **{"cpython.gc.generation": 2})
    assert count >= 1
    assert 0 < total < 10


def test_frozen_objects_are_reported_beside_the_census(telemetry: Telemetry, provider: Provider) -> None:
    already = gc.get_freeze_count()
    held: list[object] = [object() for _ in range(1000)]
    gc.freeze()
    try:
        frozen = collect(provider[1])["polly.gc.object.frozen"]
        assert frozen.unit == "{object}"
        assert value(frozen) >= already + 1000
        assert value(frozen) == gc.get_freeze_count()
    finally:
        gc.unfreeze()
        del held


def test_gc_hook_is_removed_on_stop(telemetry: Telemetry) -> None:
    assert telemetry.gc._on_gc in gc.callbacks
    telemetry.stop()
    assert telemetry.gc._on_gc not in gc.callbacks


def test_census_metrics_read_the_cached_result(telemetry: Telemetry, provider: Provider) -> None:
    assert "polly.gc.object.count" not in collect(provider[1])  # nothing before the first census
    keep = [Leaky() for _ in range(200_000)]
    result = telemetry.census.census_now()
    metrics = collect(provider[1])
    counts = metrics["polly.gc.object.count"]
    assert counts.unit == "{object}"
    name = f"{__name__}.Leaky"
    assert value(counts, **{"polly.gc.object.type": name}) >= 200_000
    assert sum(points(counts).values()) == result.total_objects
    sizes = metrics["polly.gc.object.size"]
    assert sizes.unit == "By"
    leaky_size = value(sizes, **{"polly.gc.object.type": name})
    assert 200_000 * 16 <= leaky_size <= 200_000 * 128
    assert len(points(counts)) <= 5 + 1  # top 5 plus other
    assert frozenset({("polly.gc.object.type", "other")}) in points(counts)
    count, _sum = value(metrics["polly.gc.census.duration"])
    assert count == 1
    del keep


async def test_census_runs_in_slices_on_the_loop(telemetry: Telemetry) -> None:
    telemetry.census.chunk_size = 1000
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    probe = loop.create_task(ticker())
    result = await telemetry.census.census_async()
    done = True
    await probe
    assert result.total_objects > 0
    assert ticks >= result.total_objects // 1000 // 2  # the loop ran between slices


async def test_tasks_sampled_from_any_asyncio_loop(telemetry: Telemetry, provider: Provider) -> None:
    async def worker() -> None:
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    workers = [loop.create_task(worker()) for _ in range(3)]
    telemetry.tasks.watch(loop)
    await asyncio.sleep(0)  # the first sample runs on the loop, soon after watch()
    metrics = collect(provider[1])
    counts = metrics["polly.task.count"]
    assert counts.unit == "{task}"
    qualname = "test_tasks_sampled_from_any_asyncio_loop.<locals>.worker"
    assert value(counts, **{"polly.task.name": qualname}) == 3
    assert "polly.task.failures" not in metrics  # unknown without polly's supervisor
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def test_tasks_from_polly_supervisor(
    telemetry: Telemetry, provider: Provider, stats_registry: StatsRegistry
) -> None:
    stats_registry.register(
        "tasks", "supervisor", lambda: TaskStats((("scheduler", 1), ("reconciler", 2)), 9, 6, 2, 1, 0)
    )
    metrics = collect(provider[1])
    assert value(metrics["polly.task.count"], **{"polly.task.name": "reconciler"}) == 2
    assert value(metrics["polly.task.failures"]) == 2
    assert value(metrics["polly.task.restarts"]) == 1
    assert metrics["polly.task.restarts"].unit == "{restart}"


def test_task_names_are_bounded(
    telemetry: Telemetry, provider: Provider, stats_registry: StatsRegistry
) -> None:
    names = tuple((f"t{i}", 1) for i in range(500))
    stats_registry.register("tasks", "supervisor", lambda: TaskStats(names, 0, 0, 0, 0, 0))
    counts = points(collect(provider[1])["polly.task.count"])
    assert len(counts) == 101
    assert counts[frozenset({("polly.task.name", "other")})] == 400


def _redis_stats() -> RedisStats:
    pool = PoolStats("127.0.0.1:6379/0", "redis", 20, 20, 2, 3, 0, 1, 4)
    return RedisStats(pool, BreakerState.OPEN, 5, 10, 100, 7)


def test_caches_and_breaker(telemetry: Telemetry, provider: Provider, stats_registry: StatsRegistry) -> None:
    stats_registry.register("cache", "failures", lambda: CacheStats("failures", 3, 10, 5, 6, 7, 8))
    stats_registry.register("redis_pool", "redis", _redis_stats)
    metrics = collect(provider[1])
    c = {"polly.cache.name": "failures"}
    assert value(metrics["polly.cache.entry.count"], **c) == 3
    assert value(metrics["polly.cache.entry.max"], **c) == 10
    assert value(metrics["polly.cache.hits"], **c) == 5
    assert value(metrics["polly.cache.misses"], **c) == 6
    assert value(metrics["polly.cache.expirations"], **c) == 7
    assert value(metrics["polly.cache.evictions"], **c) == 8
    assert value(metrics["polly.cache.entry.count"], **{"polly.cache.name": "redis.fallback"}) == 10
    pool = {"db.client.connection.pool.name": "127.0.0.1:6379/0"}
    state = metrics["polly.redis.breaker.state"]
    assert state.unit == "{state}"
    assert value(state, **pool, **{"polly.redis.breaker.state": "open"}) == 1
    assert value(state, **pool, **{"polly.redis.breaker.state": "closed"}) == 0
    assert value(state, **pool, **{"polly.redis.breaker.state": "half_open"}) == 0
    assert len(points(state)) == 3  # one series per state
    assert value(metrics["polly.redis.breaker.openings"], **pool) == 5
    assert metrics["polly.cache.entry.count"].unit == "{entry}"


def test_registry_pools_and_durations(
    telemetry: Telemetry, provider: Provider, stats_registry: StatsRegistry
) -> None:
    stats_registry.register(
        "db_pool", "main", lambda: PoolStats("db.local:5432/polly", "postgresql", 15, 5, 2, 3, 0, 1, 4)
    )
    stats_registry.register("redis_pool", "redis", _redis_stats)
    stats_registry.record_duration("wait_time", "db.local:5432/polly", "postgresql", 0.25)
    stats_registry.record_duration("use_time", "db.local:5432/polly", "postgresql", 0.5)
    stats_registry.record_duration("create_time", "127.0.0.1:6379/0", "redis", 0.01)
    metrics = collect(provider[1])
    pg = {"db.client.connection.pool.name": "db.local:5432/polly", "db.system.name": "postgresql"}
    count = metrics["db.client.connection.count"]
    assert value(count, **pg, **{"db.client.connection.state": "used"}) == 2
    assert value(count, **pg, **{"db.client.connection.state": "idle"}) == 3
    assert value(metrics["db.client.connection.max"], **pg) == 15
    assert value(metrics["db.client.connection.idle.max"], **pg) == 5
    assert value(metrics["db.client.connection.pending_requests"], **pg) == 1
    assert value(metrics["db.client.connection.timeouts"], **pg) == 4
    assert value(metrics["db.client.connection.wait_time"], **pg) == (1, 0.25)
    assert value(metrics["db.client.connection.use_time"], **pg) == (1, 0.5)
    rd = {"db.client.connection.pool.name": "127.0.0.1:6379/0", "db.system.name": "redis"}
    assert value(metrics["db.client.connection.create_time"], **rd) == (1, 0.01)
    assert value(count, **rd, **{"db.client.connection.state": "used"}) == 2
    assert metrics["db.client.connection.pending_requests"].unit == "{request}"


def test_rss_growth_rate_is_exported(telemetry: Telemetry, provider: Provider) -> None:
    clock = [0.0]
    telemetry.process.rss._clock = lambda: clock[0]
    telemetry.process.rss.add(100_000_000)
    clock[0] = 600.0
    telemetry.process.rss.add(106_000_000)
    metrics = collect(provider[1])
    growth = metrics["polly.process.memory.growth_rate"]
    assert growth.unit == "By/s"
    assert value(growth) == 10_000.0


def test_stop_silences_everything(
    telemetry: Telemetry, provider: Provider, stats_registry: StatsRegistry
) -> None:
    stats_registry.register("cache", "c", lambda: CacheStats("c", 1, 2, 3, 4, 5, 6))
    telemetry.census.census_now()
    assert collect(provider[1])
    telemetry.stop()
    stats_registry.record_duration("use_time", "p", "sqlite", 1.0)
    remaining = {
        name
        for name, m in collect(provider[1]).items()
        if not hasattr(m.data.data_points[0], "bucket_counts")
    }
    assert remaining == set()
