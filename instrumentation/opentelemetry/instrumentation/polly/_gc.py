"""CPython collector metrics: collections and collected/uncollectable objects by generation, and pauses.

``cpython.gc.collections`` (``{collection}``), ``cpython.gc.collected_objects`` and
``cpython.gc.uncollectable_objects`` (``{object}``), each by int ``cpython.gc.generation``, read
from ``gc.get_stats()``; skipped when the contrib system-metrics instrumentation emits them.

``polly.gc.pause.duration`` (histogram, ``s``, by ``cpython.gc.generation``): the time of each
collection, measured by a ``gc.callbacks`` hook. The hook only appends ``(generation, seconds)``
to a bounded deque (``MAX_PENDING_PAUSES``; the oldest are dropped and counted when a burst
overflows it): recording into the SDK from inside a collection could deadlock on a lock the
interrupted code holds. The deque is drained into the histogram by the loop-side hook and at the
start of every metric collection.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from opentelemetry.instrumentation.polly._coexist import system_metrics_owns
from opentelemetry.metrics import CallbackOptions, Meter, Observation

GEN_ATTR = "cpython.gc.generation"
MAX_PENDING_PAUSES = 16_384
#: Buckets of polly.gc.pause.duration, seconds (gen0 pauses are tens of microseconds).
#: One attribute set per generation, shared by every recording (no dict per pause).
_GEN_ATTRS = tuple({GEN_ATTR: generation} for generation in range(3))
PAUSE_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class GcSignals:
    """The ``cpython.gc.*`` counters and the pause histogram; :meth:`close` removes the gc hook."""

    def __init__(self, meter: Meter) -> None:
        self.active = True
        self._pending: deque[tuple[int, float]] = deque(maxlen=MAX_PENDING_PAUSES)
        self._started: float | None = None
        self.dropped_pauses = 0
        self._pause = meter.create_histogram(
            "polly.gc.pause.duration",
            unit="s",
            description="Duration of each CPython garbage collection, from gc.callbacks",
            explicit_bucket_boundaries_advisory=PAUSE_BUCKETS,
        )
        for name, key, unit, description in (
            ("cpython.gc.collections", "collections", "{collection}", "Collections run by generation"),
            ("cpython.gc.collected_objects", "collected", "{object}", "Objects collected by generation"),
            (
                "cpython.gc.uncollectable_objects",
                "uncollectable",
                "{object}",
                "Objects found uncollectable by generation",
            ),
        ):
            meter.create_observable_counter(
                name, [self._stat_callback(name, key)], unit=unit, description=description
            )
        meter.create_observable_up_down_counter(
            "polly.gc.object.frozen",
            [self._frozen_callback],
            unit="{object}",
            description="Objects in the permanent generation (gc.freeze()), which the census does not list",
        )
        self.active = False
        self.open()

    def _frozen_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(gc.get_freeze_count()),) if self.active else ()

    def open(self) -> None:
        """Install the gc hook (again, after :meth:`close`)."""
        if not self.active:
            self.active = True
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: no locks, no SDK calls, no allocation beyond a tuple.
        if phase == "start":
            self._started = time.perf_counter()
            return
        started = self._started
        if started is None:
            return
        self._started = None
        if len(self._pending) == MAX_PENDING_PAUSES:
            self.dropped_pauses += 1
        self._pending.append((info.get("generation", 0), time.perf_counter() - started))

    def drain(self) -> None:
        """Move buffered pauses into the histogram (any thread but the collector's callback)."""
        pending = self._pending
        record = self._pause.record
        while True:
            try:
                generation, seconds = pending.popleft()
            except IndexError:
                return
            if self.active:
                record(seconds, _GEN_ATTRS[generation] if 0 <= generation < 3 else {GEN_ATTR: generation})

    def _stat_callback(self, name: str, key: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            self.drain()
            if not self.active or system_metrics_owns(name):
                return ()
            return [Observation(stats[key], {GEN_ATTR: gen}) for gen, stats in enumerate(gc.get_stats())]

        return callback

    def after_fork(self) -> None:
        """In a forked child: pauses buffered by the parent are not this process's."""
        self._pending.clear()
        self._started = None

    def close(self) -> None:
        self.active = False
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        self._pending.clear()
