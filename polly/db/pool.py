"""Pool monitoring: exhaustion as polly's error, snapshots from the pool itself, durations, slow holders.

:class:`MonitoredQueuePool` / :class:`MonitoredAsyncQueuePool` are SQLAlchemy's queue pools with one
change at the public :meth:`~sqlalchemy.pool.Pool.connect` entry: the caller is counted as a waiter
for the duration of the call (a ``try/finally`` gauge, so it cannot drift), a pool timeout becomes
:class:`~polly.errors.PoolExhaustedError` naming size, overflow and timeout, and the wait is published
as a ``wait_time`` duration. Everything else (checked out, idle, overflow) is read from the pool's own
``checkedout()/checkedin()/overflow()/size()`` when a snapshot is taken.

:class:`PoolMonitor` also hooks pool events for what only events can tell: connection create time,
use time (checkout to checkin), and checkouts held longer than ``slow_checkout_seconds``, which are
logged once each with the stack that checked the connection out. The table of held checkouts has one
entry per checked-out connection, so it is bounded by ``pool_size + max_overflow``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, PoolProxiedConnection, QueuePool

from polly.errors import PoolExhaustedError
from polly.stats import PoolStats, StatsRegistry

logger = logging.getLogger(__name__)

#: Frames kept from the stack that checked a connection out (for the slow-checkout log line).
STACK_FRAMES = 24
#: Scans for slow holders triggered by pool events happen at most this often (seconds).
SCAN_INTERVAL_SECONDS = 1.0
#: Frames from these packages are the machinery of a checkout, not the code that asked for it.
_SKIP_PREFIXES = (str(Path(sqlalchemy.__file__).parent) + os.sep, str(Path(__file__).parent) + os.sep)
_CREATE_KEY = "polly.create_started"


@dataclass(slots=True)
class _Held:
    started: float
    frames: tuple[tuple[str, int, str], ...]
    logged: bool = False


@dataclass(slots=True)
class PoolMonitor:
    """Counters and the table of held checkouts of one engine's pool (survives pool re-creation)."""

    name: str
    system: str
    slow_checkout_seconds: float
    registry: StatsRegistry
    clock: Callable[[], float] = time.monotonic
    timeouts: int = 0
    errors: int = 0
    waiting: int = 0
    slow_logged: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _held: dict[int, _Held] = field(default_factory=dict)
    _last_scan: float = 0.0

    # --- called by the pool ------------------------------------------------------------------
    def enter_wait(self) -> float:
        with self._lock:
            self.waiting += 1
        return self.clock()

    def leave_wait(self, started: float, outcome: str) -> None:
        elapsed = self.clock() - started
        with self._lock:
            self.waiting -= 1
            if outcome == "timeout":
                self.timeouts += 1
            elif outcome == "error":
                self.errors += 1
        self.registry.record_duration("wait_time", self.name, self.system, elapsed)

    # --- pool events -------------------------------------------------------------------------
    def on_checkout(self, record: Any) -> None:
        frames = _caller_frames()
        with self._lock:
            self._held[id(record)] = _Held(self.clock(), frames)
        self._maybe_scan()

    def on_checkin(self, record: Any) -> None:
        with self._lock:
            held = self._held.pop(id(record), None)
        if held is None:
            return
        now = self.clock()
        used = now - held.started
        if used > self.slow_checkout_seconds and not held.logged:
            self._log_slow(held, used, returned=True)
        self.registry.record_duration("use_time", self.name, self.system, used)
        self._maybe_scan(now)

    def on_create_started(self, record: Any) -> None:
        record.info[_CREATE_KEY] = self.clock()

    def on_created(self, record: Any) -> None:
        started = record.info.pop(_CREATE_KEY, None)
        if started is not None:
            self.registry.record_duration("create_time", self.name, self.system, self.clock() - started)

    # --- slow holders ------------------------------------------------------------------------
    def check_slow_checkouts(self, now: float | None = None) -> int:
        """Log (once each) checkouts held longer than the threshold; returns how many were newly logged."""
        now = self.clock() if now is None else now
        with self._lock:
            self._last_scan = now
            slow = [
                h
                for h in self._held.values()
                if not h.logged and now - h.started > self.slow_checkout_seconds
            ]
            for held in slow:
                held.logged = True
        for held in slow:
            self._log_slow(held, now - held.started, returned=False)
        return len(slow)

    def _maybe_scan(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if now - self._last_scan >= SCAN_INTERVAL_SECONDS:
            self.check_slow_checkouts(now)

    def _log_slow(self, held: _Held, seconds: float, *, returned: bool) -> None:
        held.logged = True
        with self._lock:
            self.slow_logged += 1
        stack = "".join(f'\n  File "{f}", line {ln}, in {fn}' for f, ln, fn in held.frames)
        state = "was held" if returned else "is held"
        logger.warning(
            "%s: a connection %s for %.1f s (threshold %.1f s); checked out at (most recent call last):%s",
            self.name,
            state,
            seconds,
            self.slow_checkout_seconds,
            stack,
        )

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot(self, pool: Pool) -> PoolStats:
        """A :class:`PoolStats` read from ``pool``'s own introspection plus this monitor's counters."""
        if isinstance(pool, QueuePool):
            size = pool.size()
            used = pool.checkedout()
            idle = pool.checkedin()
            overflow = max(0, pool.overflow())
            max_overflow = max(0, pool._max_overflow)  # noqa: SLF001 - QueuePool has no public accessor
        else:  # NullPool / StaticPool (in-memory SQLite): no queue to introspect
            size, used, idle, overflow, max_overflow = 1, len(self._held), 0, 0, 0
        return PoolStats(
            name=self.name,
            system=self.system,
            max_connections=size + max_overflow,
            max_idle=size,
            used=used,
            idle=idle,
            overflow=overflow,
            pending=self.waiting,
            timeouts=self.timeouts,
            errors=self.errors,
        )

    def attach(self, engine: Engine) -> None:
        """Hook ``engine``'s pool events and give its (and every re-created) pool this monitor."""
        pool = engine.pool
        if isinstance(pool, _MonitoredMixin):
            pool.polly_monitor = self
        event.listen(engine, "do_connect", lambda _d, rec, _a, _k: self.on_create_started(rec))
        event.listen(engine.pool, "connect", lambda _c, rec: self.on_created(rec))
        event.listen(engine.pool, "checkout", lambda _c, rec, _p: self.on_checkout(rec))
        event.listen(engine.pool, "checkin", lambda _c, rec: self.on_checkin(rec))
        event.listen(engine.pool, "detach", lambda _c, rec: self.on_checkin(rec))


def _caller_frames() -> tuple[tuple[str, int, str], ...]:
    """The caller's stack without SQLAlchemy and polly.db internals, innermost last; cheap (no source)."""
    frames: list[tuple[str, int, str]] = []
    frame = sys._getframe(2)  # noqa: SLF001 - walking raw frames is ~10x cheaper than traceback.extract_stack
    while frame is not None and len(frames) < STACK_FRAMES:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_PREFIXES):
            frames.append((filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back  # type: ignore[assignment]
    frames.reverse()
    return tuple(frames)


class _MonitoredMixin:
    polly_monitor: PoolMonitor | None = None

    def _describe_limits(self) -> str:
        pool: Any = self
        max_overflow = max(0, pool._max_overflow)  # noqa: SLF001 - QueuePool has no public accessor
        return (
            f"database pool {self.polly_monitor.name if self.polly_monitor else ''} exhausted: "
            f"pool_size={pool.size()} max_overflow={max_overflow} all in use, "
            f"no connection within pool_timeout_seconds={pool.timeout():g}; raise the limits or find the "
            f"holder (checkouts held over slow_checkout_seconds are logged with their stack)"
        )

    def connect(self) -> PoolProxiedConnection:
        monitor = self.polly_monitor
        if monitor is None:
            return super().connect()  # type: ignore[misc, no-any-return]
        started = monitor.enter_wait()
        outcome = "ok"
        try:
            return super().connect()  # type: ignore[misc, no-any-return]
        except SATimeoutError as err:
            outcome = "timeout"
            raise PoolExhaustedError(self._describe_limits()) from err
        except Exception:
            outcome = "error"
            raise
        finally:
            monitor.leave_wait(started, outcome)

    def recreate(self) -> Any:
        new = super().recreate()  # type: ignore[misc]
        new.polly_monitor = self.polly_monitor
        return new


class MonitoredQueuePool(_MonitoredMixin, QueuePool):
    """QueuePool whose exhaustion raises :class:`PoolExhaustedError` and whose waiters are counted."""


class MonitoredAsyncQueuePool(_MonitoredMixin, AsyncAdaptedQueuePool):
    """The asyncio variant of :class:`MonitoredQueuePool`."""
