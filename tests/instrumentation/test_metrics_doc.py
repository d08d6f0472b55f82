"""docs/metrics.md lists exactly the metrics emitted, with their instrument kind and unit."""

from __future__ import annotations

import gc
import re
from pathlib import Path

from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.stats import (
    BreakerState,
    CacheStats,
    DurationKind,
    GatewayStats,
    PoolStats,
    RedisStats,
    StatsRegistry,
    TaskStats,
)
from tests.instrumentation.helpers import collect

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| (\w+) \| `([^`]+)` \|")


def _documented() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def _kind(metric: object) -> str:
    data = metric.data  # type: ignore[attr-defined]
    name = type(data).__name__
    if name == "Histogram":
        return "Histogram"
    if name == "Gauge":
        return "ObservableGauge"
    return "ObservableCounter" if data.is_monotonic else "ObservableUpDownCounter"


def test_doc_and_emitted_metrics_agree(
    telemetry: Telemetry, provider: tuple[object, InMemoryMetricReader], stats_registry: StatsRegistry
) -> None:
    pool = PoolStats("db:5432/polly", "postgresql", 15, 5, 1, 4, 0, 0, 0)
    stats_registry.register("db_pool", "db", lambda: pool)
    redis_pool = PoolStats("127.0.0.1:6379/0", "redis", 20, 20, 0, 1, 0, 0, 0)
    stats_registry.register(
        "redis_pool", "r", lambda: RedisStats(redis_pool, BreakerState.CLOSED, 0, 1, 10, 0)
    )
    stats_registry.register("cache", "c", lambda: CacheStats("c", 1, 2, 3, 4, 5, 6))
    stats_registry.register("tasks", "t", lambda: TaskStats((("x", 1),), 1, 0, 0, 0, 0))
    stats_registry.register(
        "gateway", "discord", lambda: GatewayStats("discord", "connected", 1.0e9, 0.04, 1, 0, 0, 0)
    )
    kinds: tuple[DurationKind, ...] = ("wait_time", "use_time", "create_time")
    for kind in kinds:
        stats_registry.record_duration(kind, pool.name, pool.system, 0.01)
    now = [0.0]
    telemetry.process.rss._clock = lambda: now[0]
    telemetry.process.rss.add(1000)
    now[0] = 3600.0
    telemetry.process.rss.add(1000)
    telemetry.census.census_now()
    gc.collect()  # a pause to record (the test's own collection)
    collect(provider[1])  # process.cpu.utilization needs a previous collection
    emitted = collect(provider[1])
    documented = _documented()
    assert set(emitted) == set(documented)
    for name, metric in emitted.items():
        instrument, unit = documented[name]
        assert metric.unit == unit, name
        assert _kind(metric) == instrument, name
