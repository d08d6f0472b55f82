"""One instrumentation session: every signal on one Meter, and where the census runs.

:class:`Telemetry` is what :class:`PollyInstrumentor` and ``setup.start_telemetry`` build. The
loop-side work (census, RSS sampling, asyncio task sampling, gc pause draining) runs in
:meth:`Telemetry.run`, scheduled by :meth:`start` on the given event loop, or on a daemon thread
when there is none. :meth:`stop` silences every callback (the SDK cannot delete instruments) and
ends the loop-side work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.polly._caches import CacheSignals
from opentelemetry.instrumentation.polly._census_runner import CensusRunner
from opentelemetry.instrumentation.polly._gc import GcSignals
from opentelemetry.instrumentation.polly._leaks import RssGrowth
from opentelemetry.instrumentation.polly._pools import PoolSignals
from opentelemetry.instrumentation.polly._process import ProcessSignals
from opentelemetry.instrumentation.polly._tasks import TaskSignals
from opentelemetry.metrics import Meter

from polly.stats import StatsRegistry

logger = logging.getLogger("opentelemetry.instrumentation.polly")


@dataclass(frozen=True, slots=True)
class Options:
    """Tuning of one session; the defaults are polly's settings defaults."""

    interval_seconds: float = 60.0
    top_n_classes: int = 50
    max_type_names: int = 200
    consecutive_snapshots: int = 3
    rss_window_seconds: float = 3600.0
    rss_growth_warn_percent_per_hour: float = 10.0
    log_snapshots: bool = False

    @classmethod
    def from_monitoring(cls, monitoring: Any) -> Options:
        """From ``polly.config.MonitoringSettings``."""
        profiling = monitoring.memory_profiling
        leaks = monitoring.leak_detection
        return cls(
            interval_seconds=float(profiling.interval_seconds),
            top_n_classes=profiling.top_n_classes,
            max_type_names=leaks.max_type_names,
            consecutive_snapshots=leaks.consecutive_snapshots,
            rss_window_seconds=float(leaks.rss_window_seconds),
            rss_growth_warn_percent_per_hour=leaks.rss_growth_warn_percent_per_hour,
            log_snapshots=profiling.enabled,
        )


class Telemetry:
    """All signals of one session."""

    def __init__(self, meter: Meter, options: Options, registry: StatsRegistry) -> None:
        self.options = options
        rss = RssGrowth(options.rss_window_seconds, options.rss_growth_warn_percent_per_hour, time.monotonic)
        self.process = ProcessSignals(meter, rss)
        self.gc = GcSignals(meter)
        self.census = CensusRunner(
            meter,
            interval_seconds=options.interval_seconds,
            top_n=options.top_n_classes,
            max_type_names=options.max_type_names,
            consecutive_snapshots=options.consecutive_snapshots,
            log_snapshots=options.log_snapshots,
        )
        self.pools = PoolSignals(meter, registry)
        self.tasks = TaskSignals(meter, registry)
        self.caches = CacheSignals(meter, registry)
        self.census.hooks.extend([self.process.sample_rss, self.gc.drain, self.tasks.sample_loop])
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stopped = False

    async def run(self) -> None:
        """The loop-side work until cancelled or :meth:`stop`; for an owner that runs it itself."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.tasks.loop = self.loop
        await self.census.run()

    def start(self, loop: asyncio.AbstractEventLoop | None, *, thread_fallback: bool = True) -> None:
        """Schedule :meth:`run` on ``loop`` (thread-safe), or on a daemon thread when ``loop`` is None.

        With ``thread_fallback=False`` and no loop nothing is scheduled: the owner awaits :meth:`run`.
        """
        if loop is None:
            if not thread_fallback:
                return
            self._thread = threading.Thread(
                target=self.census.run_blocking, args=(self._stop,), name="polly-census", daemon=True
            )
            self._thread.start()
            return
        self.attach_loop(loop)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move the loop-side work to ``loop`` (ending the thread variant if it runs)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._stop = threading.Event()
        self.loop = loop
        self.tasks.loop = loop

        def create() -> None:
            if not self.stopped:
                self._task = loop.create_task(self.run(), name="polly-telemetry")

        _call_on(loop, create)

    def restart(self, loop: asyncio.AbstractEventLoop | None, *, thread_fallback: bool = True) -> None:
        """Resume after :meth:`stop` (instruments cannot be created twice on one MeterProvider)."""
        if not self.stopped:
            return
        self.stopped = False
        for signal in (self.process, self.census, self.tasks, self.caches):
            signal.active = True
        self.gc.open()
        self.pools.open()
        self._stop = threading.Event()
        self._task = None
        self.start(loop, thread_fallback=thread_fallback)

    def stop(self) -> None:
        """Silence every callback, remove hooks, end the loop-side work. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        for signal in (self.process, self.census, self.tasks, self.caches):
            signal.active = False
        self.gc.close()
        self.pools.close()
        self._stop.set()
        task, loop = self._task, self.loop
        if task is not None and loop is not None and not loop.is_closed():
            _call_on(loop, task.cancel)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _call_on(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn)
