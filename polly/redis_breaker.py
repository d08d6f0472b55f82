"""The circuit breaker in front of Redis, and the bounded log of odd keys.

:class:`CircuitBreaker` is pure bookkeeping (no I/O, no asyncio): callers ask :meth:`~CircuitBreaker.allow`
before a Redis call and report the outcome. States::

    CLOSED --(failure_threshold consecutive availability failures)--> OPEN
    OPEN --(probe_interval_seconds elapsed; the next call is let through as the one trial)--> HALF_OPEN
    HALF_OPEN --(trial succeeds, or a probe succeeds)--> CLOSED
    HALF_OPEN --(trial fails or ends without a verdict)--> OPEN (the interval starts again)

While OPEN or HALF_OPEN every call except the single trial is refused in O(1), so callers answer with
their fallback without touching the network.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable

from polly.outages import OutageLog
from polly.stats import BreakerState

logger = logging.getLogger(__name__)

#: Distinct key patterns :class:`KeyPatternLog` remembers; later new patterns are counted, not logged.
MAX_KEY_PATTERNS = 256

_VARIABLE_SEGMENT = re.compile(r"\d|^.{25,}$")


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; lets one trial through per interval.

    ``clock`` returns monotonic seconds (injected so tests tick it). ``opened`` counts transitions
    to OPEN since creation.
    """

    def __init__(
        self,
        failure_threshold: int,
        probe_interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            msg = f"failure_threshold must be at least 1, got {failure_threshold}"
            raise ValueError(msg)
        if probe_interval_seconds <= 0:
            msg = f"probe_interval_seconds must be greater than 0, got {probe_interval_seconds}"
            raise ValueError(msg)
        self.failure_threshold = failure_threshold
        self.probe_interval_seconds = probe_interval_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go to Redis now.

        CLOSED: always. OPEN: only once ``probe_interval_seconds`` have passed since it opened (or
        since the last trial failed); that call becomes the trial and the state HALF_OPEN. HALF_OPEN:
        never (the trial is in flight).
        """
        if self._state is BreakerState.CLOSED:
            return True
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.probe_interval_seconds
        ):
            self._state = BreakerState.HALF_OPEN
            return True
        return False

    def record_success(self) -> None:
        """Redis answered: close the breaker and forget earlier failures."""
        if self._state is not BreakerState.CLOSED:
            logger.warning("Redis answers again: circuit breaker closed")
        self._state = BreakerState.CLOSED
        self._failures = 0

    def record_failure(self) -> None:
        """Redis could not be reached. Opens at the threshold; a failed trial reopens at once."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self.trip()

    def trip(self) -> None:
        """Open now (or stay open), restarting the probe interval."""
        if self._state is BreakerState.CLOSED:
            self.opened += 1
            logger.warning(
                "Redis unreachable (%d consecutive failure(s)): circuit breaker open; calls answer "
                "with their fallback, trying again every %g s",
                self._failures,
                self.probe_interval_seconds,
            )
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()

    def release_trial(self) -> None:
        """A trial ended without a verdict (cancelled, or a non-availability error): back to OPEN."""
        if self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()


def key_pattern(key: str) -> str:
    """``key`` with its variable segments (containing a digit, or 25+ characters) replaced by ``*``.

    ``cache:user_prefs:1234`` becomes ``cache:user_prefs:*``; segments are split on ``:``.
    """
    return ":".join("*" if _VARIABLE_SEGMENT.search(part) else part for part in key.split(":"))


class KeyPatternLog:
    """Logs a warning once per key pattern, remembering at most ``max_patterns`` patterns.

    The key's pattern (:func:`key_pattern`) is the cause of an :class:`~polly.outages.OutageLog` with
    an infinite window (so one line per pattern, never a summary) that counts rather than evicts when
    full: once ``max_patterns`` patterns are known, new ones are counted in :attr:`suppressed` and one
    final warning says so.
    """

    def __init__(
        self, max_patterns: int = MAX_KEY_PATTERNS, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_patterns = max_patterns
        self._log = OutageLog(
            logger, window_seconds=math.inf, max_causes=max_patterns, when_full="count", timer=timer
        )

    @property
    def suppressed(self) -> int:
        """New patterns not logged because ``max_patterns`` were already known."""
        return self._log.overflowed

    def __len__(self) -> int:
        return len(self._log.causes())

    def report(self, key: str, problem: str) -> bool:
        """Log ``problem`` with ``key``'s pattern if the pattern is new; True when logged."""
        return self._log.failed(f"Redis key pattern {key_pattern(key)}", detail=problem, traceback=False)
