"""Bounded in-process state: a TTL cache with statistics, the failure tracker and the log throttle.

Everything here has a size cap and a time-to-live, and reads its time from an injected clock
(``timer``, seconds on a monotonic scale, default :func:`time.monotonic`), so tests tick a fake
clock instead of sleeping and no naive datetime is ever compared with an aware one.

* :class:`BoundedTTLCache`: :class:`cachetools.TTLCache` counting hits, misses, expirations and
  evictions, published as :class:`polly.CacheStats`.
* :class:`FailureTracker`: per-key failure records with upstream Polly's retry semantics
  (``MAX_FETCH_RETRIES``, ``RETRY_WINDOW_MINUTES``), held in a :class:`BoundedTTLCache`, so memory
  stays bounded whatever the number of distinct failing keys.
* :class:`LogThrottle` (:mod:`polly.log_throttle`, importable from here too): per-category log
  lines that escalate INFO to WARNING at upstream's thresholds, then summarise per window.

These objects are used from the event-loop thread only; their ``stats()`` methods read plain
counters and may be called from any thread (the metrics exporter's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cachetools import Cache, TTLCache

from polly.config import CacheSettings
from polly.log_throttle import DEFAULT_WARNING_THRESHOLD as DEFAULT_WARNING_THRESHOLD  # noqa: PLC0414
from polly.log_throttle import WARNING_THRESHOLDS as WARNING_THRESHOLDS  # noqa: PLC0414
from polly.log_throttle import LogThrottle as LogThrottle  # noqa: PLC0414
from polly.stats import CacheStats, StatsRegistry
from polly.stats import registry as default_registry

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Timer = Callable[[], float]

#: Upstream's defaults (``background_tasks.py``): attempts before a poll is given up on, and the
#: window after which the attempt count starts again.
MAX_FETCH_RETRIES = 5
RETRY_WINDOW_MINUTES = 30

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
