"""Detecting other emitters of the same series, so polly never emits a series twice.

* The contrib system-metrics instrumentation (``opentelemetry-instrumentation-system-metrics``)
  emits ``process.*`` and ``cpython.gc.*``. When it is instrumented, polly skips every metric it
  configured. Checked at each collection, because under ``opentelemetry-instrument`` it may be
  instrumented after polly.
* redis-py's native observability (``redis.observability``, opt-in, redis-py >= 7.1) emits, for every
  redis-py pool, ``db.client.connection.count`` and ``.create_time`` when its ``CONNECTION_BASIC``
  group is on, and ``.timeouts`` and ``.wait_time`` with ``CONNECTION_ADVANCED``. polly then names
  redis pools as redis-py does and leaves those metrics of redis pools to redis-py
  (:func:`redis_native_metrics`); the ones redis-py does not emit (``.max``, ``.idle.max``,
  ``.pending_requests``, ``.use_time``) stay polly's, under the same pool name.
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


#: redis-py's metric group (``redis.observability.config.MetricGroup``) -> the pool metrics it emits.
REDIS_NATIVE_GROUPS = {
    "CONNECTION_BASIC": ("db.client.connection.count", "db.client.connection.create_time"),
    "CONNECTION_ADVANCED": ("db.client.connection.timeouts", "db.client.connection.wait_time"),
}


def redis_native_metrics() -> frozenset[str]:
    """The ``db.client.connection.*`` metrics redis-py's own observability emits in this process."""
    module = sys.modules.get("redis.observability.providers")
    if module is None:
        return frozenset()
    try:
        from redis.observability.config import MetricGroup

        instance = module.get_observability_instance()
        if not instance.is_enabled():
            return frozenset()
        manager = instance.get_provider_manager()
        groups = getattr(getattr(manager, "config", None), "metric_groups", None)
        if groups is None:
            return frozenset()
        return frozenset(
            metric
            for group, metrics in REDIS_NATIVE_GROUPS.items()
            if groups & getattr(MetricGroup, group)
            for metric in metrics
        )
    except Exception:  # noqa: BLE001 - a redis-py internals change must not break collection
        return frozenset()


def redis_native_connection_count() -> bool:
    """Whether redis-py's own metrics emit ``db.client.connection.count`` (and so name the pools)."""
    return "db.client.connection.count" in redis_native_metrics()
