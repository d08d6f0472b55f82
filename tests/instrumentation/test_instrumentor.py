"""PollyInstrumentor by hand: instrument, register later, uninstrument, coexist with system-metrics."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.polly import Options, PollyInstrumentor
from sqlalchemy import create_engine

from polly.stats import CacheStats, StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.helpers import collect, new_provider, points


@pytest.fixture
def instrumentor() -> Iterator[PollyInstrumentor]:
    inst = PollyInstrumentor()
    yield inst
    inst.uninstrument()


def test_instrument_by_hand_and_uninstrument(
    instrumentor: PollyInstrumentor,
    sqlite_url: str,
    stats_registry: StatsRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, reader = new_provider()
    engine = create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_logging_name="first")
    later = create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_logging_name="later")
    stats_registry.register("cache", "c", lambda: CacheStats("c", 1, 2, 3, 4, 5, 6))
    instrumentor.instrument(
        meter_provider=provider,
        engines=[engine],
        sources=[PollyStatsSource(stats_registry)],
        options=Options(interval_seconds=3600),
        discover=False,  # only what is passed and registered
    )
    telemetry = instrumentor.telemetry
    assert telemetry is not None
    assert telemetry._thread is not None  # no loop at instrument time: the census thread
    assert instrumentor.register_engine(later) == "later"
    pools = {
        dict(k)["db.client.connection.pool.name"] for k in points(collect(reader)["db.client.connection.max"])
    }
    assert pools == {"first", "later"}
    assert "polly.cache.hits" in collect(reader)
    instrumentor.uninstrument()
    assert telemetry._thread is None or not telemetry._thread.is_alive()
    observable = {
        n for n, m in collect(reader).items() if not hasattr(m.data.data_points[0], "bucket_counts")
    }
    assert observable == set()
    with caplog.at_level(logging.DEBUG, logger="opentelemetry.instrumentation.polly"):
        assert instrumentor.register_engine(later) is None  # a no-op when not active
        assert instrumentor.register_redis_pool(object()) is None
    assert "register_engine ignored: the polly instrumentation is not active" in caplog.text
    # resumed on the same provider: the instruments come back to life
    instrumentor.instrument(meter_provider=provider, sources=[PollyStatsSource(stats_registry)])
    assert "polly.cache.hits" in collect(reader)
    engine.dispose()
    later.dispose()
    provider.shutdown()


async def test_instrument_inside_a_loop_runs_the_census_there(
    instrumentor: PollyInstrumentor, stats_registry: StatsRegistry
) -> None:
    provider, reader = new_provider()
    instrumentor.instrument(meter_provider=provider, sources=[PollyStatsSource(stats_registry)])
    telemetry = instrumentor.telemetry
    assert telemetry is not None
    assert telemetry._thread is None
    for _ in range(200):
        if telemetry.census.latest is not None:
            break
        await asyncio.sleep(0.01)
    assert telemetry.census.latest is not None
    assert "polly.gc.object.count" in collect(reader)
    assert "polly.task.count" in collect(reader)  # the loop's own tasks, sampled on the loop
    driven = telemetry.driven_loop
    assert driven is asyncio.get_running_loop()
    instrumentor.uninstrument()
    await asyncio.sleep(0)
    assert telemetry.driven_loop is None
    provider.shutdown()


def _fake_system_metrics(config: dict[str, None] | None) -> types.ModuleType:
    module = types.ModuleType("opentelemetry.instrumentation.system_metrics")

    class SystemMetricsInstrumentor:
        _instance: object = None

    inst = SystemMetricsInstrumentor()
    inst._is_instrumented_by_opentelemetry = True  # type: ignore[attr-defined]
    inst._config = config  # type: ignore[attr-defined]
    SystemMetricsInstrumentor._instance = inst
    module.SystemMetricsInstrumentor = SystemMetricsInstrumentor  # type: ignore[attr-defined]
    return module


def test_process_and_gc_left_to_system_metrics(
    instrumentor: PollyInstrumentor, monkeypatch: pytest.MonkeyPatch, stats_registry: StatsRegistry
) -> None:
    provider, reader = new_provider()
    instrumentor.instrument(meter_provider=provider, sources=[PollyStatsSource(stats_registry)])
    assert "process.memory.usage" in collect(reader)
    config = {
        "process.memory.usage": None,
        "process.open_file_descriptor.count": None,
        "cpython.gc.collections": None,
    }
    monkeypatch.setitem(
        sys.modules, "opentelemetry.instrumentation.system_metrics", _fake_system_metrics(config)
    )
    names = set(collect(reader))
    assert "process.memory.usage" not in names
    assert "process.unix.file_descriptor.count" not in names
    assert "cpython.gc.collections" not in names
    assert "process.memory.virtual" in names  # not configured there: still polly's
    assert "cpython.gc.collected_objects" in names
    provider.shutdown()


def test_instrumentor_dependencies_are_empty() -> None:
    assert tuple(PollyInstrumentor().instrumentation_dependencies()) == ()


def test_the_meter_carries_the_schema_url(instrumentor: PollyInstrumentor) -> None:
    provider, reader = new_provider()
    instrumentor.instrument(meter_provider=provider, sources=[], discover=False)
    data = reader.get_metrics_data()
    assert data is not None
    scopes = [sm.scope for rm in data.resource_metrics for sm in rm.scope_metrics]
    ours = [s for s in scopes if s.name == "opentelemetry.instrumentation.polly"]
    assert ours
    assert ours[0].schema_url == "https://opentelemetry.io/schemas/1.37.0"
    provider.shutdown()
