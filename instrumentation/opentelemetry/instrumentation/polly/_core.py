"""One instrumentation session: every signal on one Meter, and where the census runs.

:class:`Telemetry` is what :class:`PollyInstrumentor` and ``setup.start_telemetry`` build. The
loop-side work (census, RSS sampling, gc pause draining) runs in
:meth:`Telemetry.run`, awaited by an owner of the application's (polly's supervisor); or
:meth:`start` drives it on the given event loop by loop callbacks (``_loop_driver``: no task of its
own), or runs it on a daemon thread when there is neither; asyncio tasks are counted on each known
loop (``_tasks``). :meth:`stop` (any thread) silences every callback (the SDK cannot delete
instruments) and ends the loop-side work, joining the thread. Sessions made :func:`fork_aware` restart
in forked children (``os.register_at_fork``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import cast

from opentelemetry.instrumentation.polly import _discovery, _tasks
from opentelemetry.instrumentation.polly._caches import CacheSignals
from opentelemetry.instrumentation.polly._census_runner import CensusRunner
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._filter import FilteredMeter
from opentelemetry.instrumentation.polly._gateway import GatewaySignals
from opentelemetry.instrumentation.polly._gc import GcSignals
from opentelemetry.instrumentation.polly._leaks import RssGrowth
from opentelemetry.instrumentation.polly._loop_driver import LoopDriver
from opentelemetry.instrumentation.polly._pools import PoolSignals
from opentelemetry.instrumentation.polly._process import ProcessSignals
from opentelemetry.instrumentation.polly._tasks import TaskSignals
from opentelemetry.instrumentation.polly.seam import StatsSource
from opentelemetry.metrics import Meter

logger = logging.getLogger("opentelemetry.instrumentation.polly")


class Telemetry:
    """All signals of one session."""

    def __init__(self, meter: Meter, options: Options, sources: Sequence[StatsSource] = ()) -> None:
        self.options = options
        meter = cast("Meter", FilteredMeter(meter, options.excludes))
        rss = RssGrowth(
            options.rss_window_seconds,
            options.rss_growth_warn_percent_per_hour,
            time.monotonic,
            warmup_seconds=options.leak_warmup_seconds,
        )
        self.process = ProcessSignals(meter, rss)
        self.gc = GcSignals(meter)
        self.census = CensusRunner(
            meter,
            interval_seconds=options.interval_seconds,
            top_n=options.top_n_classes,
            max_type_names=options.max_type_names,
            consecutive_snapshots=options.consecutive_snapshots,
            log_snapshots=options.log_snapshots,
            min_growth_percent=options.leak_min_growth_percent,
            warmup_seconds=options.leak_warmup_seconds,
        )
        self.pools = PoolSignals(meter, sources)
        self.tasks = TaskSignals(meter, sources, options.task_sample_interval_seconds)
        self.caches = CacheSignals(meter, sources, self.pools.redis_name)
        self.gateways = GatewaySignals(meter, sources)
        self.census.hooks.extend([self.process.sample_rss, self.gc.drain])
        self.loop: asyncio.AbstractEventLoop | None = None
        self._driver = LoopDriver(self.census, self.tasks.watch)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stopped = False
        self.discovering = False

    async def run(self) -> None:
        """The loop-side work until cancelled or :meth:`stop`; for an owner that runs it itself."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.tasks.watch(self.loop)
        await self.census.run()

    def start(self, loop: asyncio.AbstractEventLoop | None, *, thread_fallback: bool = True) -> None:
        """Drive the loop-side work on ``loop`` by its callbacks (thread-safe), or run it on a daemon
        thread when ``loop`` is None.

        With ``thread_fallback=False`` and no loop nothing is scheduled: the owner awaits :meth:`run`.
        """
        if loop is None:
            if not thread_fallback:
                return
            self._start_thread()
            return
        self.attach_loop(loop)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=self.census.run_blocking, args=(self._stop,), name="polly-census", daemon=True
        )
        self._thread.start()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move the loop-side work to ``loop`` (ending the thread variant if it runs)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._stop = threading.Event()
        self.loop = loop
        if not self.stopped:
            self._driver.start(loop)  # the driving of an earlier loop ends

    def restart(self, loop: asyncio.AbstractEventLoop | None, *, thread_fallback: bool = True) -> None:
        """Resume after :meth:`stop` (instruments cannot be created twice on one MeterProvider)."""
        if not self.stopped:
            return
        self.stopped = False
        for signal in (self.process, self.census, self.tasks, self.caches, self.gateways):
            signal.active = True
        self.gc.open()
        self.pools.open()
        if self.discovering:
            self.discover()
        self._stop = threading.Event()
        self.start(loop, thread_fallback=thread_fallback)

    def stop(self) -> None:
        """Silence every callback, remove hooks, end the loop-side work. Idempotent, any thread."""
        if self.stopped:
            return
        self.stopped = True
        for signal in (self.process, self.census, self.tasks, self.caches, self.gateways):
            signal.active = False
        self.gc.close()
        self.pools.close()
        _discovery.remove_sink(self.pools)
        _tasks.unwatch_all_loops(self.tasks)
        self.tasks.close()
        self._stop.set()
        self._driver.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    async def aclose(self) -> None:
        """:meth:`stop` from a coroutine (nothing of the session is left to await: the loop-side
        work is loop callbacks, the thread is joined)."""
        self.stop()

    @property
    def driven_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop whose callbacks run the loop-side work (None when run by an owner, on a thread,
        or stopped)."""
        return self._driver.loop

    def discover(self) -> None:
        """Report every SQLAlchemy engine, redis-py pool and asyncio loop, now and later (zero-code)."""
        self.discovering = True
        _discovery.add_sink(self.pools)
        _tasks.watch_all_loops(self.tasks)

    def after_fork_in_child(self) -> None:
        """In a forked child: read this process, forget the parent's samples, restart the census thread.

        Threads do not survive ``fork()``; the child's census thread is started again if the parent
        ran one (a loop-driven census continues if the child runs the loop).
        """
        self.process.after_fork()
        self.gc.after_fork()
        self.census.after_fork()
        if self._thread is not None and not self.stopped:
            self._stop = threading.Event()
            self._start_thread()


_FORK_AWARE: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for telemetry in list(_FORK_AWARE):
        try:
            telemetry.after_fork_in_child()
        except Exception:
            logger.exception("restarting the instrumentation after fork failed")


def fork_aware(telemetry: Telemetry) -> None:
    """Have ``telemetry`` restart itself in children forked from now on."""
    _FORK_AWARE.add(telemetry)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
