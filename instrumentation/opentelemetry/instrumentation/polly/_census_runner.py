"""Runs the gc class census on the event loop's side and publishes it as metrics.

The census never runs in a metric callback: :class:`CensusRunner` runs it every
``interval_seconds`` either as a coroutine on the application's event loop (slices separated by
``await asyncio.sleep(0)``) or, when no loop is known, on a daemon thread (slices separated by
``time.sleep(0)``, which releases the GIL). Each finished census is stored as one immutable
:class:`CensusResult`; the observable callbacks on the exporter thread only read that reference.

Metrics: ``polly.gc.object.count`` (``{object}``) and ``polly.gc.object.size`` (``By``) by
``polly.gc.object.type``; ``polly.gc.census.duration`` (``s``, histogram of the time each census
held its thread). Loop-side hooks (the asyncio task sampler, the RSS growth sampler) run once per
cycle, before the census.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable

from opentelemetry.instrumentation.polly._census import CensusResult, TypeNameBudget, census_steps
from opentelemetry.instrumentation.polly._leaks import LeakDetector, log_snapshot
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

TYPE_ATTR = "polly.gc.object.type"
#: Buckets of polly.gc.census.duration, seconds.
CENSUS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CensusRunner:
    """Owns the census schedule, its latest result, leak detection and the census metrics.

    ``hooks`` are called on the runner's side (the loop, when driven by :meth:`run`) once per cycle;
    a hook that raises is logged and the cycle continues.
    """

    def __init__(
        self,
        meter: Meter,
        *,
        interval_seconds: float,
        top_n: int,
        max_type_names: int,
        consecutive_snapshots: int,
        log_snapshots: bool,
        min_growth_percent: float = 1.0,
        warmup_seconds: float = 0.0,
        chunk_size: int = 50_000,
        sample_size: int = 10_000,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.top_n = top_n
        self.budget = TypeNameBudget(max_type_names)
        if max_type_names > self.budget.max_names:
            logger.warning(
                "leak_detection.max_type_names=%d exceeds the SDK's per-stream limit; using %d",
                max_type_names,
                self.budget.max_names,
            )
        self.leaks = LeakDetector(
            consecutive_snapshots, min_growth_percent=min_growth_percent, warmup_seconds=warmup_seconds
        )
        self.log_snapshots = log_snapshots
        self.chunk_size = chunk_size
        self.sample_size = sample_size
        self.hooks: list[Callable[[], None]] = []
        self.latest: CensusResult | None = None
        self.active = True
        self.censuses = 0
        meter.create_observable_up_down_counter(
            "polly.gc.object.count",
            [self._observe_count],
            unit="{object}",
            description="Live GC-tracked objects by class (top N, the rest as `other`), from the last census",
        )
        meter.create_observable_up_down_counter(
            "polly.gc.object.size",
            [self._observe_size],
            unit="By",
            description="Estimated shallow size of live GC-tracked objects by class, from the last census",
        )
        self._duration = meter.create_histogram(
            "polly.gc.census.duration",
            unit="s",
            description="Time one gc class census held its thread",
            explicit_bucket_boundaries_advisory=CENSUS_BUCKETS,
        )

    # --- metric callbacks (exporter thread): read the cached result only --------------------------

    def _observe_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        result = self.latest
        if result is None or not self.active:
            return ()
        return [Observation(row.count, {TYPE_ATTR: row.name}) for row in result.rows]

    def _observe_size(self, _options: CallbackOptions) -> Iterable[Observation]:
        result = self.latest
        if result is None or not self.active:
            return ()
        return [Observation(row.size_bytes, {TYPE_ATTR: row.name}) for row in result.rows]

    # --- running ----------------------------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: the parent's census is not this process's; start over."""
        self.latest = None
        self.censuses = 0
        self.leaks.reset()

    def steps(self) -> Generator[CensusResult | None, None, None]:
        return census_steps(self.budget, self.top_n, chunk_size=self.chunk_size, sample_size=self.sample_size)

    def census_now(self) -> CensusResult:
        """One census in a single stretch on the calling thread (tests, tools); published as usual."""
        result: CensusResult | None = None
        for step in self.steps():
            result = step
        assert result is not None
        self.publish(result)
        return result

    async def census_async(self) -> CensusResult:
        """One census in slices, giving the loop back between slices."""
        result: CensusResult | None = None
        for step in self.steps():
            if step is None:
                await asyncio.sleep(0)
            result = step
        assert result is not None
        self.publish(result)
        return result

    def publish(self, result: CensusResult) -> None:
        if not self.active:
            return  # stopped while the census ran: nothing is recorded after stop
        self.latest = result
        self.censuses += 1
        self._duration.record(result.busy_seconds)
        self.leaks.observe(result)
        if self.log_snapshots:
            log_snapshot(result, self.top_n)

    def run_hooks(self) -> None:
        for hook in self.hooks:
            try:
                hook()
            except Exception:
                logger.exception("polly instrumentation hook %r failed", hook)

    async def run(self) -> None:
        """Census and hooks every ``interval_seconds`` until cancelled. Never raises otherwise."""
        while self.active:
            self.run_hooks()
            try:
                await self.census_async()
            except Exception:  # never into the application
                logger.exception("gc class census failed")
            await asyncio.sleep(self.interval_seconds)

    def run_blocking(self, stop: threading.Event) -> None:
        """The thread variant of :meth:`run`, for applications without a known loop."""
        while self.active and not stop.is_set():
            self.run_hooks()
            try:
                result: CensusResult | None = None
                for step in self.steps():
                    if stop.is_set():
                        return
                    if step is None:
                        time.sleep(0)  # releases the GIL so the application's threads run
                    result = step
                if result is not None:
                    self.publish(result)
            except Exception:
                logger.exception("gc class census failed")
            stop.wait(self.interval_seconds)
