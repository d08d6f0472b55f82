"""Detecting other emitters of the same series, so polly never emits a series twice.

* The contrib system-metrics instrumentation (``opentelemetry-instrumentation-system-metrics``)
  emits ``process.*`` and ``cpython.gc.*``. When it is instrumented, polly skips every metric it
  configured. Checked at each collection, because under ``opentelemetry-instrument`` it may be
  instrumented after polly.
* redis-py's native observability (``redis.observability``, opt-in) emits
  ``db.client.connection.count`` for every redis-py pool when its ``CONNECTION_BASIC`` group is on;
  polly then leaves that metric to redis-py for pools registered by hand.
"""

from __future__ import annotations

import sys

#: polly's name -> the key the system-metrics instrumentation uses for the same metric.
SYSTEM_METRICS_KEYS = {
    "process.memory.usage": "process.memory.usage",
    "process.memory.virtual": "process.memory.virtual",
    "process.cpu.time": "process.cpu.time",
    "process.cpu.utilization": "process.cpu.utilization",
    "process.uptime": "process.uptime",
    "process.thread.count": "process.thread.count",
    "process.unix.file_descriptor.count": "process.open_file_descriptor.count",
    "process.context_switches": "process.context_switches",
    "cpython.gc.collections": "cpython.gc.collections",
    "cpython.gc.collected_objects": "cpython.gc.collected_objects",
    "cpython.gc.uncollectable_objects": "cpython.gc.uncollectable_objects",
}


def system_metrics_owns(metric: str) -> bool:
    """Whether the contrib system-metrics instrumentation is active and emits ``metric``."""
    module = sys.modules.get("opentelemetry.instrumentation.system_metrics")
    if module is None:
        return False
    cls = getattr(module, "SystemMetricsInstrumentor", None)
    instance = getattr(cls, "_instance", None) if cls is not None else None
    if instance is None or not getattr(instance, "_is_instrumented_by_opentelemetry", False):
        return False
    config = getattr(instance, "_config", None)
    key = SYSTEM_METRICS_KEYS.get(metric)
    if key is None:
        return False
    return not isinstance(config, dict) or key in config


def redis_native_connection_count() -> bool:
    """Whether redis-py's own metrics emit ``db.client.connection.count`` in this process."""
    module = sys.modules.get("redis.observability.providers")
    if module is None:
        return False
    try:
        from redis.observability.config import MetricGroup

        instance = module.get_observability_instance()
        if not instance.is_enabled():
            return False
        manager = instance.get_provider_manager()
        groups = getattr(getattr(manager, "config", None), "metric_groups", None)
    except Exception:  # noqa: BLE001 - a redis-py internals change must not break collection
        return False
    if groups is None:
        return False
    return bool(groups & MetricGroup.CONNECTION_BASIC)
