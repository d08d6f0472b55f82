"""Over the wire: start_telemetry() to real OTLP receivers (gRPC and HTTP) on loopback.

The metrics arrive with the right names, units, attributes and resource; with the receiver
stopped the application keeps running, memory stays bounded and one warning is logged; export
resumes (and is logged once) when the receiver returns.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from opentelemetry.instrumentation.polly.setup import TelemetryHandle, start_telemetry

from polly.config import GeneralSettings, MonitoringSettings, OtlpSettings, Settings
from polly.stats import CacheStats, PoolStats, StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.receivers import GrpcReceiver, HttpReceiver, Received, free_port

LOGGER = "opentelemetry.instrumentation.polly"


def _settings(endpoint: str, protocol: Literal["grpc", "http/protobuf"]) -> Settings:
    otlp = OtlpSettings(
        endpoint=endpoint,
        protocol=protocol,
        export_interval_seconds=1.0,
        timeout_seconds=1.0,
        export_timeout_seconds=3.0,
    )
    monitoring = MonitoringSettings(otlp=otlp, service_instance_id="wire-1")
    return Settings(general=GeneralSettings(monitoring=monitoring))


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[GrpcReceiver | HttpReceiver]:
    cls = GrpcReceiver if request.param == "grpc" else HttpReceiver
    rec = cls(free_port(), Received())
    rec.start()
    yield rec
    rec.stop()


def _protocol(receiver: GrpcReceiver | HttpReceiver) -> Literal["grpc", "http/protobuf"]:
    return "grpc" if isinstance(receiver, GrpcReceiver) else "http/protobuf"


def _metrics(request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = metric
    return out


def _resource(request: Any) -> dict[str, str]:
    rm = request.resource_metrics[0]
    return {kv.key: kv.value.string_value for kv in rm.resource.attributes}


def _attrs(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in point.attributes:
        v = kv.value
        out[kv.key] = v.int_value if v.WhichOneof("value") == "int_value" else v.string_value
    return out


def _start(receiver: GrpcReceiver | HttpReceiver, stats: StatsRegistry) -> TelemetryHandle:
    stats.register("cache", "votes", lambda: CacheStats("votes", 1, 10, 2, 3, 4, 5))
    stats.register("db_pool", "main", lambda: PoolStats("db:5432/polly", "postgresql", 15, 5, 1, 4, 0, 0, 0))
    handle = start_telemetry(
        _settings(receiver.endpoint, _protocol(receiver)), sources=[PollyStatsSource(stats)]
    )
    handle.census_now()
    return handle


def test_metrics_arrive_with_names_units_attributes_resource(
    receiver: GrpcReceiver | HttpReceiver, stats_registry: StatsRegistry
) -> None:
    handle = _start(receiver, stats_registry)
    try:
        # an export may have left before census_now() finished (a big heap on a loaded machine):
        # take the first one that carries the census
        request = None
        for count in range(1, 20):
            assert receiver.received.wait(count)
            with receiver.received.lock:
                request = receiver.received.requests[-1]
            if "polly.gc.object.count" in _metrics(request):
                break
        assert request is not None
        resource = _resource(request)
        assert resource["service.name"] == "polly"
        assert resource["service.instance.id"] == "wire-1"
        assert resource["service.version"]
        metrics = _metrics(request)
        assert metrics["process.memory.usage"].unit == "By"
        assert metrics["polly.gc.object.count"].unit == "{object}"
        census = metrics["polly.gc.object.count"].sum.data_points
        assert any(_attrs(p).get("polly.gc.object.type") == "other" for p in census)
        gc_points = metrics["cpython.gc.collections"].sum.data_points
        assert {_attrs(p)["cpython.gc.generation"] for p in gc_points} == {0, 1, 2}
        pool_points = metrics["db.client.connection.count"].sum.data_points
        assert {
            (a["db.client.connection.pool.name"], a["db.system.name"], a["db.client.connection.state"])
            for a in map(_attrs, pool_points)
        } == {("db:5432/polly", "postgresql", "idle"), ("db:5432/polly", "postgresql", "used")}
        assert metrics["polly.cache.hits"].unit == "{hit}"
        assert metrics["polly.gc.census.duration"].histogram.data_points[0].count == 1
    finally:
        handle.shutdown(timeout_seconds=2)


@pytest.mark.slow
def test_outage_is_reported_once_memory_stays_bounded_and_export_resumes(
    receiver: GrpcReceiver | HttpReceiver, stats_registry: StatsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    handle = _start(receiver, stats_registry)
    exporter = handle.exporter
    assert exporter is not None
    try:
        assert receiver.received.wait(1)
        receiver.stop()
        tracemalloc.start()
        deadline = time.monotonic() + 60
        while exporter.failed_exports < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        base = tracemalloc.get_traced_memory()[0]
        while exporter.failed_exports < 6 and time.monotonic() < deadline:
            handle.census_now()  # the application keeps working meanwhile
            time.sleep(0.05)
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert exporter.failed_exports >= 6
        assert grown < 2 * 2**20, f"memory grew {grown} bytes over 4 failed exports"
        assert exporter.outages == 1
        before = len(receiver.received)
        receiver.start()
        assert receiver.received.wait(before + 1, timeout=30)
        deadline = time.monotonic() + 10
        while exporter.failing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not exporter.failing
    finally:
        handle.shutdown(timeout_seconds=2)
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "leak suspects" not in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name == LOGGER
    assert "metric export to http://127.0.0.1:" in warnings[0].getMessage()
    recovered = [r for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(recovered) == 1


def test_no_endpoint_exports_nothing(stats_registry: StatsRegistry) -> None:
    handle = start_telemetry(Settings(), sources=[PollyStatsSource(stats_registry)])
    try:
        assert handle.exporter is None
        assert handle.enabled
        assert handle.census_now() is not None
    finally:
        handle.shutdown()


def test_disabled_monitoring_is_a_no_op(stats_registry: StatsRegistry) -> None:
    monitoring = MonitoringSettings(enabled=False)
    handle = start_telemetry(
        Settings(general=GeneralSettings(monitoring=monitoring)), sources=[PollyStatsSource(stats_registry)]
    )
    assert not handle.enabled
    assert handle.census_now() is None
    handle.shutdown()


def test_prometheus_scrape_endpoint_on_loopback(stats_registry: StatsRegistry) -> None:
    import urllib.request

    from polly.config import PrometheusSettings

    port = free_port()
    monitoring = MonitoringSettings(prometheus=PrometheusSettings(enabled=True, port=port))
    handle = start_telemetry(
        Settings(general=GeneralSettings(monitoring=monitoring)), sources=[PollyStatsSource(stats_registry)]
    )
    try:
        handle.census_now()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "process_memory_usage_bytes" in body
        assert any(
            line.startswith("polly_gc_object_count{") and 'polly_gc_object_type="other"' in line
            for line in body.splitlines()
        )
        assert "cpython_gc_collections_total" in body
    finally:
        handle.shutdown()
