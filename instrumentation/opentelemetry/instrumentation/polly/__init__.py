"""OpenTelemetry metrics for any asyncio service: gc census, gc pauses, process, pools, tasks.

Every metric is listed in ``docs/metrics.md``. :class:`PollyInstrumentor` is the
``opentelemetry_instrumentor`` entry point ``polly`` (zero-code under ``opentelemetry-instrument``);
:mod:`.seam` is how an application reports its own caches, breakers, pools and tasks;
:func:`setup.start_telemetry` builds a MeterProvider from polly's settings (the ``polly.telemetry``
entry point ``otel``, which needs the SDK).
"""

from __future__ import annotations

from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._instrumentor import PollyInstrumentor
from opentelemetry.instrumentation.polly.version import __version__

__all__ = ["Options", "PollyInstrumentor", "__version__"]
