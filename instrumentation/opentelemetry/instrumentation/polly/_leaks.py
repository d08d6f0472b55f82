"""Leak signals from recent censuses and RSS samples, and the ``memory_profiler`` snapshot log.

Nothing here frees memory or calls ``gc.collect()``: these only observe and log.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import pairwise

from opentelemetry.instrumentation.polly._census import CensusResult

logger = logging.getLogger("opentelemetry.instrumentation.polly")
profiler_logger = logging.getLogger("memory_profiler")

#: Suspects named in one log line at most.
MAX_SUSPECTS_LOGGED = 10
#: Growth over the window (objects) below which a steadily growing class is not worth a warning,
#: whatever its relative growth: interpreter bookkeeping grows by a handful of objects per census.
MIN_SUSPECT_GROWTH = 100
#: RSS growth over the samples held, % of the oldest, below which no rate is alarming: allocator
#: arenas move RSS by a megabyte or so, which extrapolated from minutes looks like tens of %/hour.
MIN_RSS_GROWTH_PERCENT = 2.0
#: Censuses before the K of a window (as a multiple of K) whose peak a suspect must exceed.
LOOKBACK = 3


class LeakDetector:
    """Classes that set a new high at each of at least ``consecutive`` censuses, by more than noise.

    A class is a suspect when its latest counts form a *run* of at least K (``consecutive``) new
    highs: each count of the run is above every count held before it (so the run rises at every
    census and its trough is above the class's old peak), and the rise over the run (its last count
    minus its first) is

    * at least ``min_growth`` objects and at least ``min_growth_percent`` % of the class's own count,
    * and larger than the largest fall (a count followed by a lower one, however much later) the
      class showed in the censuses held before the run: the amplitude of its own fluctuation.

    A bounded sawtooth (weak references that pile up between periodic clean-ups, as CPython's
    ``sqlite3`` keeps up to 200 dead cursor references per connection) keeps falling back into its
    range: its counts do not set K highs in a row, and a climb that outgrows the range is compared
    with the falls the class has shown. A leak has no falls and sets a high at every census: a class
    growing 1 % per census is flagged at the K-th census (K >= 3 with the 1 % default) and at every
    census after; a leak slower than a sawtooth it rides on is flagged once its climb exceeds the
    sawtooth's height (at the latest when the falls have left the history).

    Up to (``LOOKBACK`` + 1) x K censuses are held. Nothing is reported for censuses finished less
    than ``warmup_seconds`` after the detector was created (start-up fills caches, imports modules and
    builds pools: growth there is not a leak); a run only counts censuses after the warm-up, whose
    censuses still count as the peaks and falls before it. Only the most numerous classes of each
    census are tracked (``CensusResult.top_counts``), so memory is bounded by the history's length
    times that size.
    """

    def __init__(
        self,
        consecutive: int,
        min_growth: int = MIN_SUSPECT_GROWTH,
        *,
        min_growth_percent: float = 1.0,
        warmup_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if consecutive < 2:
            msg = f"consecutive_snapshots must be at least 2, got {consecutive}"
            raise ValueError(msg)
        self.consecutive = consecutive
        self.min_growth = min_growth
        self.min_growth_percent = min_growth_percent
        self.warmup_seconds = warmup_seconds
        self._clock = clock
        self._started = clock()
        self._history: deque[dict[str, int]] = deque(maxlen=consecutive * (LOOKBACK + 1))
        self._after_warmup = 0
        self.warnings = 0

    def reset(self) -> None:
        """Forget the history and start the warm-up again (a forked child)."""
        self._history.clear()
        self._after_warmup = 0
        self._started = self._clock()

    def _run(self, series: list[int], first_after_warmup: int) -> int | None:
        """The rise of ``series``' final run of new highs, if that run makes it a suspect."""
        start = len(series) - 1
        while start > first_after_warmup and 0 <= series[start - 1] < series[start]:
            start -= 1
        earlier = [count for count in series[:start] if count >= 0]
        peak = max(earlier, default=-1)
        while start < len(series) and series[start] <= peak:
            earlier.append(series[start])  # still inside the old range: not part of the run
            start += 1
        if len(series) - start < self.consecutive:
            return None
        first = series[start]
        rise = series[-1] - first
        if (
            rise >= self.min_growth
            and rise * 100 >= self.min_growth_percent * first
            and rise > _largest_fall(earlier)
        ):
            return rise
        return None

    def observe(self, result: CensusResult) -> list[tuple[str, int, int]]:
        """Add a census; return suspects as ``(name, rise over its run of highs, current count)``."""
        self._history.append(result.top_counts)  # warm-up censuses count for the peaks, not as windows
        if self.warmup_seconds > 0 and self._clock() - self._started < self.warmup_seconds:
            return []
        self._after_warmup += 1
        if self._after_warmup < self.consecutive:
            return []
        history = list(self._history)
        k = self.consecutive
        window = history[-k:]
        first_after_warmup = max(0, len(history) - self._after_warmup)
        suspects: list[tuple[str, int, int]] = []
        for name, last in window[-1].items():
            recent = [snap.get(name, -1) for snap in window]
            if recent[0] < 0 or not all(a < b for a, b in pairwise(recent)):
                continue  # the common case, decided on K counts
            found = self._run([snap.get(name, -1) for snap in history], first_after_warmup)
            if found is not None:
                suspects.append((name, found, last))
        suspects.sort(key=lambda s: s[1], reverse=True)
        if suspects:
            self.warnings += 1
            shown = ", ".join(
                f"{n} +{g:,} (+{g * 100 / max(1, c - g):.1f}%, now {c:,})"
                for n, g, c in suspects[:MAX_SUSPECTS_LOGGED]
            )
            logger.warning(
                "leak suspects: %d class(es) set a new high in each of the last %d censuses or more: %s",
                len(suspects),
                self.consecutive,
                shown,
            )
        return suspects


def _largest_fall(counts: list[int]) -> int:
    """The largest drop from a count to a later, lower one (0 for a series that never falls)."""
    fall = 0
    high = -1
    for count in counts:
        high = max(high, count)
        fall = max(fall, high - count)
    return fall


class RssGrowth:
    """RSS growth rate over a sliding window, in bytes per second, with a threshold warning.

    Samples taken in the first ``warmup_seconds`` are ignored (the start-up slope is not growth).
    Samples older than ``window_seconds`` are dropped (at most ``max_samples`` kept). The rate is
    ``(newest - oldest) / elapsed`` over the samples actually held, and is ``None`` until they span
    a tenth of the window. The warning (``warn_percent_per_hour`` > 0) needs a quarter of the window
    of history and a growth of at least ``MIN_RSS_GROWTH_PERCENT`` % over it, and fires when that
    growth, as a percentage of the oldest sample per hour of elapsed time, exceeds the threshold;
    it is logged once, and again only after the rate has fallen
    back below the threshold. The line names the elapsed time it was measured over.
    """

    def __init__(
        self,
        window_seconds: float,
        warn_percent_per_hour: float,
        clock: Callable[[], float],
        max_samples: int = 720,
        *,
        warmup_seconds: float = 0.0,
    ) -> None:
        self.window_seconds = window_seconds
        self.warn_percent_per_hour = warn_percent_per_hour
        self.warmup_seconds = warmup_seconds
        self._clock = clock
        self._started = clock()
        self._samples: deque[tuple[float, int]] = deque(maxlen=max_samples)
        self._warned = False
        self.warnings = 0
        self.rate: float | None = None

    def reset(self) -> None:
        """Forget every sample and start the warm-up again (a forked child)."""
        self._samples.clear()
        self._started = self._clock()
        self.rate = None
        self._warned = False

    def add(self, rss_bytes: int) -> float | None:
        now = self._clock()
        if self.warmup_seconds > 0 and now - self._started < self.warmup_seconds:
            return None
        self._samples.append((now, rss_bytes))
        while self._samples and now - self._samples[0][0] > self.window_seconds:
            self._samples.popleft()
        t0, r0 = self._samples[0]
        elapsed = now - t0
        if elapsed < self.window_seconds / 10 or elapsed <= 0:
            self.rate = None
            return None
        self.rate = (rss_bytes - r0) / elapsed
        if elapsed >= self.window_seconds / 4:
            self._check(r0, elapsed)
        return self.rate

    def _check(self, base: int, elapsed: float) -> None:
        if self.warn_percent_per_hour <= 0 or self.rate is None or base <= 0:
            return
        percent_per_hour = self.rate * 3600 / base * 100
        grown_percent = self.rate * elapsed / base * 100
        if percent_per_hour > self.warn_percent_per_hour and grown_percent >= MIN_RSS_GROWTH_PERCENT:
            if not self._warned:
                self._warned = True
                self.warnings += 1
                logger.warning(
                    "RSS is growing %.1f%%/hour (%.1f MB over the last %.0f s), above the %.1f%%/hour "
                    "threshold (rss_growth_warn_percent_per_hour)",
                    percent_per_hour,
                    self.rate * elapsed / 1e6,
                    elapsed,
                    self.warn_percent_per_hour,
                )
        elif self._warned:
            self._warned = False
            logger.info("RSS growth back below %.1f%%/hour", self.warn_percent_per_hour)


def format_snapshot(result: CensusResult, top_n: int) -> str:
    """The ``memory_profiler`` text of one census.

    Format::

        Memory Snapshot: 1,234,567 tracked objects, ~95.3 MB estimated shallow size, census 48.1 ms
        Top 3 by object count:
          builtins.dict: 120,345
          ...
        Top 3 by memory usage:
          builtins.dict: 30.1 MB
          ...
    """
    header = (
        f"Memory Snapshot: {result.total_objects:,} tracked objects, "
        f"~{result.total_size_bytes / 1e6:.1f} MB estimated shallow size, "
        f"census {result.busy_seconds * 1e3:.1f} ms"
    )
    lines = [
        header,
        f"Top {min(top_n, len(result.by_count))} by object count:",
    ]
    lines.extend(f"  {row.name}: {row.count:,}" for row in result.by_count[:top_n])
    lines.append(f"Top {min(top_n, len(result.by_size))} by memory usage:")
    lines.extend(f"  {row.name}: {row.size_bytes / 1e6:.1f} MB" for row in result.by_size[:top_n])
    return "\n".join(lines)


def log_snapshot(result: CensusResult, top_n: int) -> None:
    """Log one census to the ``memory_profiler`` logger at INFO."""
    if profiler_logger.isEnabledFor(logging.INFO):
        profiler_logger.info("%s", format_snapshot(result, top_n))
