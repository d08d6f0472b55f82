"""Reading an InMemoryMetricReader's output as plain data."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric

SCOPE = "opentelemetry.instrumentation.polly"


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """Every metric of polly's scope by name (one collection)."""
    data = reader.get_metrics_data()
    out: dict[str, Metric] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != SCOPE:
                continue
            for metric in sm.metrics:
                if list(metric.data.data_points):
                    out[metric.name] = metric
    return out


def points(metric: Metric) -> dict[frozenset[tuple[str, Any]], Any]:
    """``{attributes: value}``; histograms give ``(count, sum)``."""
    out: dict[frozenset[tuple[str, Any]], Any] = {}
    for p in metric.data.data_points:
        key = frozenset((p.attributes or {}).items())
        out[key] = (p.count, p.sum) if isinstance(p, HistogramDataPoint) else getattr(p, "value", None)
    return out


def value(metric: Metric, **attrs: Any) -> Any:
    key = frozenset(attrs.items())
    found = points(metric)
    assert key in found, f"{metric.name}: no point with {attrs}; have {list(found)}"
    return found[key]


def new_provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader
