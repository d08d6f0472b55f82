"""The log throttle: per-category log lines that escalate from INFO to WARNING at upstream's
thresholds, then one summary line per window instead of one line per event.

It is also the window under :class:`polly.outages.OutageLog`, the one throttled logger the
supervisor, the status line and the Redis connector write through. Its time comes from an injected
``timer`` (monotonic seconds), so tests tick a fake clock; it is used from the event-loop thread
only, and ``stats()`` reads plain counters (any thread).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cachetools import LRUCache

from polly.config import CacheSettings

__all__ = ["DEFAULT_WARNING_THRESHOLD", "WARNING_THRESHOLDS", "LogThrottle"]

Timer = Callable[[], float]

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
