"""A Meter handing out no-op instruments for excluded names (``OTEL_PYTHON_POLLY_EXCLUDED_SIGNALS``).

Excluded instruments are never created on the real meter, so their callbacks never run and nothing
of them is exported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import Meter, NoOpMeter


class FilteredMeter:
    """Delegates to ``meter`` except for names ``excluded(name)`` is true for."""

    def __init__(self, meter: Meter, excluded: Callable[[str], bool]) -> None:
        self._meter = meter
        self._noop = NoOpMeter("opentelemetry.instrumentation.polly.excluded")
        self._excluded = excluded

    def _pick(self, name: str) -> Any:
        return self._noop if self._excluded(name) else self._meter

    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(name).create_histogram(name, *args, **kwargs)

    def create_observable_gauge(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(name).create_observable_gauge(name, *args, **kwargs)

    def create_observable_counter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(name).create_observable_counter(name, *args, **kwargs)

    def create_observable_up_down_counter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(name).create_observable_up_down_counter(name, *args, **kwargs)
