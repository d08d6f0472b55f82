"""Logs an operator can read during an outage: one line when it starts, a summary while it lasts, one
line when it ends, all throttled per cause by :class:`~polly.caches.LogThrottle` (the one mechanism).

:class:`OutageLog` is the project's one throttled logger, for code that knows when an operation
failed (and, where it can tell, when it worked again): the supervisor's loops, the status line,
Redis commands answered with their fallback, odd values per Redis key pattern:

* the first failure of a cause writes one WARNING line naming the error and the next retry, with the
  traceback only the first time the cause is ever seen (or at DEBUG, where every failure's traceback
  goes to a DEBUG line);
* further failures are counted; at most one summary per ``window_seconds`` is written, with the
  number of failures, how long it has lasted and the next retry;
* the first success afterwards writes "recovered after N s (K failures)".

A caller whose error text may quote a secret passes the (masked) ``detail`` and ``traceback=False``.
``window_seconds`` may be infinite: one line per cause, never a summary. When ``max_causes`` causes
are failing, ``when_full="evict"`` drops the least recently failed one; ``when_full="count"`` keeps
them and only counts new causes (:attr:`OutageLog.overflowed`), saying so in one line.

:class:`ThrottleFilter` is for log lines written elsewhere (one per failed event, one per corrupt row
per tick): as a filter on those loggers it lets one line per category through per window, appends how
many were suppressed, and drops tracebacks after the first of a category unless DEBUG is on.

State is bounded: at most ``max_causes`` causes (least recently used dropped first) and the same
number of categories per filter; no exception, record or traceback is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from cachetools import LRUCache

from polly.caches import LogThrottle, Timer

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_CAUSES = 256
#: Causes whose traceback was already written once (bounded like the causes).
_MAX_SEEN = 1024


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): what one log line says."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@dataclass(slots=True)
class _Outage:
    since: float
    failures: int = 0


class OutageLog:
    """Per-cause outage lines on ``logger`` (see the module docstring); ``timer`` is monotonic seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_causes: int = DEFAULT_MAX_CAUSES,
        when_full: Literal["evict", "count"] = "evict",
        timer: Timer = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window_seconds = window_seconds
        self.max_causes = max_causes
        self.when_full = when_full
        #: New causes only counted, not logged, because ``max_causes`` were failing (``when_full="count"``).
        self.overflowed = 0
        self._timer = timer
        self._throttle = LogThrottle(
            logger, window_seconds=window_seconds, max_categories=max_causes, timer=timer
        )
        self._outages: LRUCache[str, _Outage] = LRUCache(maxsize=max_causes)
        self._traced: LRUCache[str, bool] = LRUCache(maxsize=_MAX_SEEN)

    def failed(
        self,
        cause: str,
        err: BaseException | None = None,
        *,
        detail: str | None = None,
        retry_in_seconds: float | None = None,
        traceback: bool = True,
    ) -> bool:
        """Record one failure of ``cause`` (a short name without secrets, e.g. ``loop scheduler``).

        The line says ``detail`` if given, else :func:`describe` of ``err``; ``traceback=False`` never
        attaches ``err``'s traceback. Returns whether a line (start or summary) was written.
        """
        now = self._timer()
        retry = f"; next retry in {retry_in_seconds:.1f} s" if retry_in_seconds is not None else ""
        text = detail if detail is not None else describe(err) if err is not None else "failed"
        trace = err if traceback else None
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s failed: %s", cause, text, exc_info=trace)
        outage = self._outages.get(cause)
        if outage is None:
            if self.when_full == "count" and len(self._outages) >= self.max_causes:
                self.overflowed += 1
                if self.overflowed == 1:
                    self.logger.warning(
                        "more than %d distinct causes failing: further new ones are counted, not logged",
                        self.max_causes,
                    )
                return False
            self._outages[cause] = _Outage(since=now, failures=1)
            first_ever = cause not in self._traced
            self._traced[cause] = True
            self._throttle.forget(cause, summarise=False)
            self._throttle.admit(cause)  # the start line opens the first window
            self.logger.warning("%s failed: %s%s", cause, text, retry, exc_info=trace if first_ever else None)
            return True
        outage.failures += 1
        if self._throttle.admit(cause) is None:
            return False
        self.logger.warning(
            "%s still failing: %d failures in %.0f s, last %s%s",
            cause, outage.failures, now - outage.since, text, retry,
        )  # fmt: skip
        return True

    def succeeded(self, cause: str, *, at: float | None = None) -> bool:
        """Record that ``cause`` works (since ``at``, timer seconds; default now); returns True, and
        writes the recovery line, if it was down."""
        outage = self._outages.pop(cause, None)
        if outage is None:
            return False
        self._throttle.forget(cause, summarise=False)
        until = self._timer() if at is None else at
        self.logger.warning(
            "%s recovered after %.1f s (%d failure(s))", cause, until - outage.since, outage.failures
        )
        return True

    def down_for(self, cause: str) -> float | None:
        """Seconds ``cause`` has been failing, or ``None`` when it is not."""
        outage = self._outages.get(cause)
        return None if outage is None else self._timer() - outage.since

    def causes(self) -> list[str]:
        """The causes failing now, least recently failed first."""
        return list(self._outages)


KeyFn = Callable[[logging.LogRecord], str]


def by_template(record: logging.LogRecord) -> str:
    """One category per logger and message template: every "reaction not recorded" line is one."""
    return f"{record.name}:{record.msg}"


def by_message(record: logging.LogRecord) -> str:
    """One category per formatted message: each corrupt row is its own (reported once per window)."""
    return f"{record.name}:{record.getMessage()}"


class ThrottleFilter(logging.Filter):
    """Lets one WARNING+ record per category through per window (see the module docstring).

    ``key`` maps a record to its category (:func:`by_template` or :func:`by_message`); records below
    WARNING pass untouched.
    """

    def __init__(
        self,
        *,
        key: KeyFn = by_template,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_categories: int = DEFAULT_MAX_CAUSES,
        timer: Timer = time.monotonic,
    ) -> None:
        super().__init__()
        self._key = key
        self._window = window_seconds
        self._throttle = LogThrottle(
            logging.getLogger(__name__),
            window_seconds=window_seconds,
            max_categories=max_categories,
            timer=timer,
        )
        self._traced: LRUCache[str, bool] = LRUCache(maxsize=_MAX_SEEN)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        category = self._key(record)
        suppressed = self._throttle.admit(category)
        if suppressed is None:
            return False
        if (
            record.exc_info
            and category in self._traced
            and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        ):
            record.exc_info = None
            record.exc_text = None
        self._traced[category] = True
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} more like this in the last {self._window:g} s)"
        return True


#: A corrupt row's warning is written once, then at most once per this many seconds as a reminder.
CORRUPT_ROW_WINDOW_SECONDS = 6 * 3600.0

#: The loggers whose lines repeat during an outage (one per failed event) or on every tick (one per
#: corrupt row), how to group them, and the window (seconds) each group gets one line per.
THROTTLED_LOGGERS: tuple[tuple[str, KeyFn, float], ...] = (
    ("polly.engine.votes", by_template, DEFAULT_WINDOW_SECONDS),
    ("polly.engine.scheduler", by_message, DEFAULT_WINDOW_SECONDS),
    ("polly.engine.reconciler", by_message, DEFAULT_WINDOW_SECONDS),
    ("polly.db.engine", by_template, DEFAULT_WINDOW_SECONDS),
    ("polly.db.retry", by_template, DEFAULT_WINDOW_SECONDS),
    ("polly.engine.store", by_message, CORRUPT_ROW_WINDOW_SECONDS),
    ("polly.db.queries", by_message, CORRUPT_ROW_WINDOW_SECONDS),
    ("polly.db.models", by_message, CORRUPT_ROW_WINDOW_SECONDS),
)


def install_throttles(
    loggers: Iterable[tuple[str, KeyFn, float]] = THROTTLED_LOGGERS, *, timer: Timer = time.monotonic
) -> Callable[[], None]:
    """Attach a :class:`ThrottleFilter` to each named logger that has none yet (so calling it again
    adds nothing); returns a function removing the ones it attached."""
    attached: list[tuple[logging.Logger, ThrottleFilter]] = []
    for name, key, window in loggers:
        target = logging.getLogger(name)
        if any(isinstance(f, ThrottleFilter) for f in target.filters):
            continue
        throttle = ThrottleFilter(key=key, window_seconds=window, timer=timer)
        target.addFilter(throttle)
        attached.append((target, throttle))

    def remove() -> None:
        for target, throttle in attached:
            target.removeFilter(throttle)

    return remove
