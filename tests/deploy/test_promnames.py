"""The name translation and the PromQL selector lexer the deploy/ checks rest on."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.promnames import (
    MetricSpec,
    base_name,
    expand_grafana,
    label_name,
    metric_names,
    parse_metrics_doc,
    selectors,
    series_index,
    series_names,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (MetricSpec("process.memory.usage", "updowncounter", "By"), "process_memory_usage_bytes"),
        (MetricSpec("process.cpu.time", "counter", "s"), "process_cpu_time_seconds_total"),
        (MetricSpec("cpython.gc.collections", "counter", "{collection}"), "cpython_gc_collections_total"),
        (
            MetricSpec("db.client.connection.count", "updowncounter", "{connection}"),
            "db_client_connection_count",
        ),
        (
            MetricSpec("db.client.connection.wait_time", "histogram", "s"),
            "db_client_connection_wait_time_seconds",
        ),
        (MetricSpec("polly.gc.object.size", "gauge", "By"), "polly_gc_object_size_bytes"),
        (
            MetricSpec("polly.process.memory.growth_rate", "gauge", "By/s"),
            "polly_process_memory_growth_rate_bytes_per_second",
        ),
        (MetricSpec("polly.redis.breaker.state", "gauge", "1"), "polly_redis_breaker_state_ratio"),
        (MetricSpec("polly.cache.hits", "counter", "1"), "polly_cache_hits_total"),
        (MetricSpec("x.requests_total", "counter", ""), "x_requests_total"),
        (MetricSpec("x.duration.seconds", "gauge", "s"), "x_duration_seconds"),
    ],
)
def test_collector_names(spec: MetricSpec, expected: str) -> None:
    assert base_name(spec) == expected


def test_sdk_maps_unit_one_to_nothing() -> None:
    spec = MetricSpec("polly.redis.breaker.state", "gauge", "1")
    assert base_name(spec, "sdk") == "polly_redis_breaker_state"


def test_histogram_series_and_labels() -> None:
    spec = MetricSpec("db.client.connection.use_time", "histogram", "s")
    stem = "db_client_connection_use_time_seconds"
    assert series_names(spec) == {f"{stem}_bucket", f"{stem}_sum", f"{stem}_count"}
    assert label_name("db.client.connection.pool.name") == "db_client_connection_pool_name"
    assert label_name("cpython.gc.generation") == "cpython_gc_generation"


def test_colliding_names_are_an_error() -> None:
    with pytest.raises(ValueError, match="both become"):
        series_index([MetricSpec("a.b", "gauge", ""), MetricSpec("a_b", "gauge", "")])


def test_selectors_skip_functions_groupings_strings_and_durations() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, pool) (rate(x_bucket{job=~"$job"}[5m]))) '
        '/ on (pool) group_left(q) y offset 1h and count without (z) ({__name__="w", a="b"}) '
        'unless label_replace(v, "dst", "$1", "src", "(.*)") > bool 1e3 or sum(u) by (k)'
    )
    assert [s.name for s in selectors(expr)] == ["x_bucket", "y", "w", "v", "u"]
    assert selectors(expr)[0].matchers == '{job=~"$job"}'
    assert metric_names("min_over_time((delta(a[5m]) > bool 0)[1h:5m]) == 1") == {"a"}


def test_expand_grafana() -> None:
    expr = 'rate(x{job=~"$job",i=~"${instance}"}[$__rate_interval])'
    assert expand_grafana(expr) == 'rate(x{job=~".*",i=~".*"}[1m])'


def test_parse_metrics_doc_reads_tables_with_name_instrument_and_unit() -> None:
    text = """
# Metrics

| name | instrument | unit | attributes | source |
|---|---|---|---|---|
| `process.memory.usage` | ObservableUpDownCounter | `By` | none | psutil |
| `db.client.connection.count` | UpDownCounter (async) | `{connection}` | `db.client.connection.state`, \
`db.client.connection.pool.name` | pool |
| not a metric | Counter | | | |

| setting | default |
|---|---|
| `a.b.c` | 1 |
"""
    specs = parse_metrics_doc(text)
    assert [s.name for s in specs] == ["process.memory.usage", "db.client.connection.count"]
    assert specs[1].kind == "updowncounter"
    assert specs[1].attributes == ("db.client.connection.state", "db.client.connection.pool.name")


def test_sdk_exporter_agrees_with_promnames() -> None:
    """The Python Prometheus exporter (polly's scrape endpoint) produces the names promnames predicts."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest

    specs = [
        MetricSpec("process.memory.usage", "updowncounter", "By"),
        MetricSpec("process.cpu.time", "counter", "s"),
        MetricSpec("cpython.gc.collections", "counter", "{collection}"),
        MetricSpec("polly.gc.object.count", "gauge", "{object}"),
        MetricSpec("polly.process.memory.growth_rate", "gauge", "By/s"),
        MetricSpec("polly.redis.breaker.state", "gauge", "1"),
        MetricSpec("db.client.connection.wait_time", "histogram", "s"),
    ]
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        meter = provider.get_meter("test")
        for spec in specs:
            if spec.kind == "counter":
                meter.create_counter(spec.name, unit=spec.unit).add(1)
            elif spec.kind == "updowncounter":
                meter.create_up_down_counter(spec.name, unit=spec.unit).add(1)
            elif spec.kind == "gauge":
                meter.create_gauge(spec.name, unit=spec.unit).set(1)
            else:
                meter.create_histogram(spec.name, unit=spec.unit).record(0.1)
        text = generate_latest(REGISTRY).decode()
    finally:
        provider.shutdown()
    exposed = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    for spec in specs:
        assert series_names(spec, "sdk") <= exposed, spec
