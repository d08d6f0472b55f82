"""OpenTelemetry metrics for polly and any asyncio service: gc census, process memory, pools, tasks.

The signals are built by the instrumentation issue; this module already registers the
``opentelemetry_instrumentor`` entry point ``polly`` so ``opentelemetry-instrument`` finds it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.polly.version import __version__

__all__ = ["PollyInstrumentor", "__version__"]


class PollyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Emits polly's runtime metrics through a MeterProvider."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        return None

    def _uninstrument(self, **kwargs: Any) -> None:
        return None
