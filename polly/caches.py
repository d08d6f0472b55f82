"""Bounded in-process state: a TTL cache with statistics, the failure tracker and the log throttle.

Everything here has a size cap and a time-to-live, and reads its time from an injected clock
(``timer``, seconds on a monotonic scale, default :func:`time.monotonic`), so tests tick a fake
clock instead of sleeping and no naive datetime is ever compared with an aware one.

* :class:`BoundedTTLCache`: :class:`cachetools.TTLCache` counting hits, misses, expirations and
  evictions, published as :class:`polly.CacheStats`.
* :class:`FailureTracker`: per-key failure records with upstream Polly's retry semantics
  (``MAX_FETCH_RETRIES``, ``RETRY_WINDOW_MINUTES``), held in a :class:`BoundedTTLCache`, so memory
  stays bounded whatever the number of distinct failing keys.
* :class:`LogThrottle`: per-category counters over a sliding window that escalate INFO to WARNING
  at upstream's thresholds and then log one summary line per window instead of one line per event.
  It is also the window under :class:`polly.outages.OutageLog`, the one throttled logger the
  supervisor, the status line and the Redis connector write through.

These objects are used from the event-loop thread only; their ``stats()`` methods read plain
counters and may be called from any thread (the metrics exporter's).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cachetools import Cache, LRUCache, TTLCache

from polly.config import CacheSettings
from polly.stats import CacheStats, StatsRegistry
from polly.stats import registry as default_registry

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Timer = Callable[[], float]

#: Upstream's defaults (``background_tasks.py``): attempts before a poll is given up on, and the
#: window after which the attempt count starts again.
MAX_FETCH_RETRIES = 5
RETRY_WINDOW_MINUTES = 30

#: Upstream's ``WARNING_THRESHOLDS``: events per category logged at INFO before escalating.
WARNING_THRESHOLDS: Mapping[str, int] = {
    "message_not_found": 3,
    "permission_denied": 3,
    "channel_not_found": 3,
    "rate_limited": 5,
    "message_fix_failed": 5,
}
#: Threshold of a category upstream does not name (the most common upstream value).
DEFAULT_WARNING_THRESHOLD = 3
#: Distinct methods a failure record remembers (upstream uses three names).
MAX_METHODS_TRIED = 8


class BoundedTTLCache(TTLCache[K, V]):
    """A :class:`cachetools.TTLCache` with a name and cumulative statistics.

    ``maxsize`` (entries, >= 1) and ``ttl`` (seconds, > 0) are required. An entry expires ``ttl``
    seconds after it was last *written* (reads do not extend it). When full, writing a new key
    evicts the least recently used entry. ``timer`` is the clock (seconds, monotonic).

    Counters: a *hit* is a read (``[]`` or :meth:`get`) that found a live entry, a *miss* one that
    did not (absent or expired); an *expiration* is an entry purged because its TTL passed; an
    *eviction* one removed to make room.
    """

    def __init__(self, *, name: str, maxsize: int, ttl: float, timer: Timer = time.monotonic) -> None:
        if maxsize < 1:
            msg = f"cache {name!r}: maxsize must be >= 1, got {maxsize}"
            raise ValueError(msg)
        if not ttl > 0:
            msg = f"cache {name!r}: ttl must be > 0 seconds, got {ttl}"
            raise ValueError(msg)
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self.name = name
        self.hits = 0
        self.misses = 0
        self.expirations = 0
        self.evictions = 0

    def __getitem__(self, key: K) -> V:
        try:
            value = super().__getitem__(key)
        except KeyError:
            self.misses += 1
            raise
        self.hits += 1
        return value

    def get(self, key: K, default: Any = None) -> Any:  # the stubs overload get(); one body serves all
        with self.timer:
            try:
                return self[key]
            except KeyError:
                return default

    def expire(self, time: float | None = None) -> list[tuple[K, V]]:
        expired = list(super().expire(time))
        self.expirations += len(expired)
        return expired

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self.evictions += 1
        return item

    def stats(self) -> CacheStats:
        """A snapshot; ``size`` counts entries not yet purged (expired ones go at the next write)."""
        return CacheStats(
            name=self.name,
            size=Cache.__len__(self),  # the raw count: TTLCache.__len__ purges, and this may run off-loop
            max_size=int(self.maxsize),
            hits=self.hits,
            misses=self.misses,
            expirations=self.expirations,
            evictions=self.evictions,
        )

    def register(self, registry: StatsRegistry = default_registry) -> Callable[[], None]:
        """Publish :meth:`stats` under kind ``"cache"`` and this cache's name; returns the unregister."""
        return registry.register("cache", self.name, self.stats)


@dataclass(slots=True)
class FailureRecord:
    """One key's failures. Times are on the tracker's ``timer`` scale (seconds)."""

    count: int
    first_failure: float
    last_attempt: float
    methods_tried: tuple[str, ...] = ()


class FailureTracker:
    """Failures per key (a poll id) with upstream's retry rules, bounded in size and time.

    Rules (upstream ``background_tasks.py`` safeguard):

    * the first failure creates a record with ``count=1``; each further failure adds one;
    * once more than ``retry_window_seconds`` have passed since the record's first failure, the
      next failure starts a fresh record (``count=1``) instead;
    * :meth:`should_give_up` is true when ``count >= max_retries`` within the window;
    * :meth:`clear` on success; :meth:`status_changed` clears a key whose poll left ``active``.

    Bounds: at most ``max_entries`` records (least recently failed evicted first), each forgotten
    ``ttl_seconds`` after its last failure. ``ttl_seconds`` should exceed the retry window, or
    records vanish before the window matters.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        max_retries: int = MAX_FETCH_RETRIES,
        retry_window_seconds: float = RETRY_WINDOW_MINUTES * 60.0,
        name: str = "message_fetch_failures",
        timer: Timer = time.monotonic,
        wall_clock: Timer = time.time,
    ) -> None:
        if max_retries < 1:
            msg = f"failure tracker {name!r}: max_retries must be >= 1, got {max_retries}"
            raise ValueError(msg)
        if not retry_window_seconds > 0:
            msg = f"failure tracker {name!r}: retry_window_seconds must be > 0, got {retry_window_seconds}"
            raise ValueError(msg)
        self._records: BoundedTTLCache[Hashable, FailureRecord] = BoundedTTLCache(
            name=name, maxsize=max_entries, ttl=ttl_seconds, timer=timer
        )
        self.name = name
        self.max_retries = max_retries
        self.retry_window_seconds = retry_window_seconds
        self._timer = timer
        # Epoch seconds at timer() == 0: turns timer readings into aware UTC datetimes for display.
        self._epoch_offset = wall_clock() - timer()

    @classmethod
    def from_settings(
        cls, settings: CacheSettings, *, name: str = "message_fetch_failures", timer: Timer = time.monotonic
    ) -> FailureTracker:
        """A tracker sized by the ``caches`` settings section."""
        return cls(
            max_entries=settings.failure_tracker_max_entries,
            ttl_seconds=settings.failure_tracker_ttl_seconds,
            max_retries=settings.max_fetch_retries,
            retry_window_seconds=settings.retry_window_minutes * 60.0,
            name=name,
            timer=timer,
        )

    def record_failure(self, key: Hashable, method: str | None = None) -> FailureRecord:
        """Count one failure of ``key`` (``method``: what was tried, kept once); returns the record."""
        now = self._timer()
        record: FailureRecord | None = self._records.get(key)
        if record is None or now - record.first_failure > self.retry_window_seconds:
            record = FailureRecord(count=1, first_failure=now, last_attempt=now)
        else:
            record.count += 1
            record.last_attempt = now
        if method is not None and method not in record.methods_tried:
            record.methods_tried = (*record.methods_tried, method)[-MAX_METHODS_TRIED:]
        self._records[key] = record  # rewriting restarts the TTL from this failure
        return record

    def get(self, key: Hashable) -> FailureRecord | None:
        """The live record of ``key``, or None."""
        record: FailureRecord | None = self._records.get(key)
        return record

    def should_give_up(self, key: Hashable) -> bool:
        """True when ``key`` failed ``max_retries`` times inside the current retry window."""
        record = self.get(key)
        if record is None:
            return False
        within_window = self._timer() - record.first_failure <= self.retry_window_seconds
        return within_window and record.count >= self.max_retries

    def clear(self, key: Hashable) -> bool:
        """Forget ``key`` (a fetch succeeded, or the poll is gone); True if a record was removed."""
        return self._records.pop(key, None) is not None

    def status_changed(self, key: Hashable, status: str) -> bool:
        """Forget ``key`` when its poll's new ``status`` is anything but ``"active"``."""
        return status != "active" and self.clear(key)

    def set_record(self, key: Hashable, record: FailureRecord) -> None:
        """Store ``record`` for ``key`` as is (compatibility writes; see :class:`FailureMapping`)."""
        self._records[key] = record

    def keys(self) -> list[Hashable]:
        """A snapshot of the keys with live records."""
        return list(self._records)

    def purge(self) -> int:
        """Drop expired records now; returns how many."""
        return len(self._records.expire())

    def now(self) -> float:
        """The current reading of this tracker's ``timer``."""
        return self._timer()

    def to_datetime(self, timer_value: float) -> datetime:
        """A reading of this tracker's ``timer`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self._epoch_offset + timer_value, tz=UTC)

    def from_datetime(self, value: datetime) -> float:
        """An aware or naive datetime (naive = local time, as ``datetime.now()`` gives) on the timer scale."""
        return value.astimezone(UTC).timestamp() - self._epoch_offset

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def stats(self) -> CacheStats:
        return self._records.stats()

    def register(self, registry: StatsRegistry = default_registry) -> Callable[[], None]:
        """Publish the record cache's :class:`~polly.CacheStats` under kind ``"cache"``."""
        return self._records.register(registry)


@dataclass(slots=True)
class _Category:
    threshold: int
    recent: deque[float]  # times of the last threshold + 1 events: enough to test the window
    total: int = 0
    escalated: bool = False
    pending: int = 0  # WARNING events suppressed since the last line
    last_line: float = 0.0
    admitted: bool = False  # admit() has let one event through


class LogThrottle:
    """Per-category log lines that escalate, then summarise.

    Within any ``window_seconds``, a category's first ``threshold`` events are logged one line each
    at INFO (upstream's ``WARNING_THRESHOLDS``; :data:`DEFAULT_WARNING_THRESHOLD` for others). The
    next event is logged at WARNING ("threshold exceeded"). Further events are counted, not logged,
    and one WARNING summary ("N more <category> events in the last M s") is written per window while
    they continue. When the rate falls back to the threshold or below, any pending summary is written
    first and INFO lines resume. :meth:`flush` writes every pending summary (call it periodically or
    at shutdown), so no event goes uncounted.

    Memory: at most ``max_categories`` categories (least recently used dropped first, after writing
    its pending summary), each holding ``threshold + 1`` timestamps. No log record, message argument
    or traceback is kept.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_seconds: float,
        max_categories: int,
        thresholds: Mapping[str, int] = WARNING_THRESHOLDS,
        default_threshold: int = DEFAULT_WARNING_THRESHOLD,
        timer: Timer = time.monotonic,
    ) -> None:
        if not window_seconds > 0:
            msg = f"log throttle: window_seconds must be > 0, got {window_seconds}"
            raise ValueError(msg)
        if max_categories < 1:
            msg = f"log throttle: max_categories must be >= 1, got {max_categories}"
            raise ValueError(msg)
        self._logger = logger
        self.window_seconds = window_seconds
        self.thresholds = dict(thresholds)
        self.default_threshold = default_threshold
        self._timer = timer
        self._categories: LRUCache[str, _Category] = LRUCache(maxsize=max_categories)

    @classmethod
    def from_settings(
        cls, logger: logging.Logger, settings: CacheSettings, *, timer: Timer = time.monotonic
    ) -> LogThrottle:
        return cls(
            logger,
            window_seconds=settings.log_throttle_window_seconds,
            max_categories=settings.log_throttle_max_categories,
            timer=timer,
        )

    def threshold(self, category: str) -> int:
        return self.thresholds.get(category, self.default_threshold)

    def _state(self, category: str) -> _Category:
        state = self._categories.get(category)
        if state is None:
            if len(self._categories) >= self._categories.maxsize:
                old_name, old = self._categories.popitem()
                self._summarise(old_name, old, self._timer())
            threshold = self.threshold(category)
            state = _Category(threshold=threshold, recent=deque(maxlen=threshold + 1))
            self._categories[category] = state
        return state

    def log(self, category: str, msg: str, *args: object) -> int | None:
        """Count one ``category`` event; log ``msg % args`` unless throttled.

        Returns the level of the line written (``logging.INFO`` or ``logging.WARNING``; a summary
        counts as WARNING) or None when the event was only counted.
        """
        now = self._timer()
        state = self._state(category)
        state.total += 1
        recent = state.recent
        while recent and recent[0] <= now - self.window_seconds:
            recent.popleft()
        recent.append(now)
        count = len(recent)
        if count <= state.threshold:
            self._summarise(category, state, now)
            state.escalated = False
            state.last_line = now
            text = msg % args if args else msg
            self._logger.info(
                "%s (%s %d/%d in %g s)", text, category, count, state.threshold, self.window_seconds
            )
            return logging.INFO
        if not state.escalated:
            state.escalated = True
            state.last_line = now
            text = msg % args if args else msg
            self._logger.warning(
                "%s (%s: more than %d in %g s)", text, category, state.threshold, self.window_seconds
            )
            return logging.WARNING
        state.pending += 1
        if now - state.last_line >= self.window_seconds:
            self._summarise(category, state, now)
            return logging.WARNING
        return None

    def admit(self, category: str) -> int | None:
        """Count one event of an ongoing condition; at most one per ``window_seconds`` is admitted.

        Returns ``None`` when the event should only be counted, else how many events of the category
        were counted without being admitted since the last admitted one (0 for the first). For
        callers that write the line themselves (:class:`polly.outages.OutageLog`, a log filter).
        """
        now = self._timer()
        state = self._state(category)
        state.total += 1
        if state.admitted and now - state.last_line < self.window_seconds:
            state.pending += 1
            return None
        suppressed, state.pending, state.last_line, state.admitted = state.pending, 0, now, True
        return suppressed

    def _summarise(self, category: str, state: _Category, now: float) -> bool:
        if not state.pending:
            return False
        self._logger.warning(
            "%d more %s events in the last %.0f s", state.pending, category, now - state.last_line
        )
        state.pending = 0
        state.last_line = now
        return True

    def flush(self) -> int:
        """Write every pending summary now; returns the number of lines written."""
        now = self._timer()
        return sum(self._summarise(name, state, now) for name, state in list(self._categories.items()))

    def count(self, category: str) -> int:
        """Events of ``category`` since it was first seen or last reset (0 if unknown)."""
        state = self._categories.get(category)
        return state.total if state is not None else 0

    def set_count(self, category: str, value: int) -> None:
        """Set the running total of ``category``; 0 also restarts its window (a reset)."""
        state = self._state(category)
        state.total = value
        if value == 0:
            state.recent.clear()
            state.escalated = False

    def forget(self, category: str, *, summarise: bool = True) -> bool:
        """Drop ``category``'s state (its pending summary is written first, unless ``summarise`` is
        false: the caller reports the end of the condition itself)."""
        state = self._categories.pop(category, None)
        if state is None:
            return False
        if summarise:
            self._summarise(category, state, self._timer())
        return True

    def categories(self) -> list[str]:
        """A snapshot of the tracked categories, least recently used first."""
        return list(self._categories)

    def __len__(self) -> int:
        return len(self._categories)
