"""Serve every metric of a ``docs/metrics.md`` through the real OpenTelemetry SDK and Prometheus exporter.

Run as a script (``python tests/deploy/fake_exporter.py DOC PORT``): it builds one instrument per
documented metric with the documented name, kind and unit, reports values for a small vocabulary of
each documented attribute, and serves them on ``127.0.0.1:PORT/metrics`` with
``opentelemetry-exporter-prometheus``, exactly the exporter ``polly run`` uses for its scrape
endpoint. Counters grow, gauges move, and histograms get observations several times a second, so
``rate()`` and ``histogram_quantile()`` over a few seconds of scrapes have data. It runs until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import itertools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.deploy` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from tests.deploy.promnames import MetricSpec, parse_metrics_doc

#: Values each attribute takes; attributes not listed get two made-up values.
VOCABULARY: dict[str, Sequence[str | int]] = {
    "db.client.connection.state": ("idle", "used"),
    "db.client.connection.pool.name": ("polly-async", "redis"),
    "db.system.name": ("postgresql",),
    "cpython.gc.generation": (0, 1, 2),
    "cpu.mode": ("user", "system"),
    "process.context_switch.type": ("voluntary", "involuntary"),
    "polly.gc.object.type": ("builtins.dict", "polly.db.models.Vote", "other"),
    "polly.task.name": ("scheduler", "reconciler"),
    "polly.cache.name": ("failure_tracker", "redis.fallback"),
    "polly.redis.breaker.state": ("closed", "half_open", "open"),
}


def attribute_sets(spec: MetricSpec) -> list[dict[str, str | int]]:
    """Every combination of the vocabulary of ``spec``'s attributes (one empty set when it has none)."""
    values = [
        VOCABULARY.get(attr, (f"{attr.rsplit('.', 1)[-1]}-1", f"{attr.rsplit('.', 1)[-1]}-2"))
        for attr in spec.attributes
    ]
    return [dict(zip(spec.attributes, combo, strict=True)) for combo in itertools.product(*values)]


def _observer(spec: MetricSpec, start: float) -> Callable[[CallbackOptions], Iterable[Observation]]:
    sets = attribute_sets(spec)

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        elapsed = time.monotonic() - start
        for i, attrs in enumerate(sets):
            if spec.kind == "counter":
                value: float = (i + 1) * (1.0 + elapsed)
            elif spec.unit == "{state}":  # a state set: 1 for the current state (the first), 0 else
                value = 1.0 if i % len(VOCABULARY["polly.redis.breaker.state"]) == 0 else 0.0
            elif spec.unit == "1":
                value = 0.25  # a utilization
            else:
                value = (i + 1) * (100.0 + 10.0 * math.sin(elapsed / 5.0)) + elapsed
            yield Observation(value, attrs)

    return observe


def serve(doc: Path, port: int) -> None:
    specs = parse_metrics_doc(doc.read_text(encoding="utf-8"))
    reader = PrometheusMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "polly"}), metric_readers=[reader])
    meter = provider.get_meter("tests.deploy.fake_exporter")
    start = time.monotonic()
    histograms = []
    for spec in specs:
        unit, description = spec.unit, f"{spec.name} (synthetic)"
        if spec.kind == "counter":
            meter.create_observable_counter(spec.name, [_observer(spec, start)], unit, description)
        elif spec.kind == "updowncounter":
            meter.create_observable_up_down_counter(spec.name, [_observer(spec, start)], unit, description)
        elif spec.kind == "gauge":
            meter.create_observable_gauge(spec.name, [_observer(spec, start)], unit, description)
        else:
            histogram = meter.create_histogram(spec.name, unit=unit, description=description)
            histograms.append((histogram, attribute_sets(spec)))
    server, thread = start_http_server(port, addr="127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tick = 0
    while not stop.wait(0.2):
        tick += 1
        for histogram, sets in histograms:
            for attrs in sets:
                histogram.record(0.001 * (1 + tick % 50), attrs)
    server.shutdown()
    thread.join(timeout=5)
    provider.shutdown()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
