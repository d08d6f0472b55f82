"""OpenTelemetry metrics for polly and any asyncio service: gc census, process, gc, pools, tasks, caches.

Every metric is listed in ``docs/metrics.md``. :class:`PollyInstrumentor` is the
``opentelemetry_instrumentor`` entry point ``polly``; :func:`setup.start_telemetry` builds a
MeterProvider from polly's settings (the ``polly.telemetry`` entry point ``otel``).
"""

from __future__ import annotations

from opentelemetry.instrumentation.polly._core import Options
from opentelemetry.instrumentation.polly._instrumentor import PollyInstrumentor
from opentelemetry.instrumentation.polly.version import __version__

__all__ = ["Options", "PollyInstrumentor", "__version__"]
