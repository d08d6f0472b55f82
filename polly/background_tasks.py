"""Upstream's ``polly.background_tasks`` module names, backed by bounded state.

Kept names: ``message_fetch_failures``, ``startup_warning_counts``, ``MAX_FETCH_RETRIES``,
``RETRY_WINDOW_MINUTES`` (and ``WARNING_THRESHOLDS``). Upstream kept the first two in plain module
dicts that only grew; here they are views of two process-wide objects:

* :data:`failure_tracker`, a :class:`~polly.caches.FailureTracker` (bounded, TTL'd), seen through
  :data:`message_fetch_failures`, a mutable mapping ``poll_id -> {"count", "first_failure",
  "last_attempt", "methods_tried"}`` whose times are aware UTC datetimes. Values are snapshots:
  mutating a returned dict changes nothing; assign a dict (or use the tracker) to write.
* :data:`log_throttle`, a :class:`~polly.caches.LogThrottle` on this module's logger, seen through
  :data:`startup_warning_counts`, a mutable mapping ``category -> events counted``. The five upstream
  categories are always present (0 until seen); others appear when logged, bounded by the throttle.

:func:`configure` resizes both from the ``caches`` settings. The scheduler functions upstream also
exports from this module are added by the poll engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from polly import database as compat_database  # the module: replacements made there are honoured
from polly.caches import (
    MAX_FETCH_RETRIES,
    MAX_METHODS_TRIED,
    RETRY_WINDOW_MINUTES,
    WARNING_THRESHOLDS,
    FailureRecord,
    FailureTracker,
    LogThrottle,
    Timer,
)
from polly.config import CacheSettings
from polly.db import transitions
from polly.db.models import STATUS_ACTIVE, STATUS_SCHEDULED, Poll
from polly.engine.scheduler import PollScheduler
from polly.engine.service import current_engine
from polly.errors import PollyError

__all__ = [
    "MAX_FETCH_RETRIES",
    "RETRY_WINDOW_MINUTES",
    "WARNING_THRESHOLDS",
    "EngineNotRunningError",
    "FailureMapping",
    "WarningCounts",
    "cleanup_polls_with_deleted_messages",
    "close_poll",
    "configure",
    "failure_tracker",
    "get_db_session",
    "get_scheduler",
    "log_throttle",
    "message_fetch_failures",
    "reaction_safeguard_task",
    "restore_scheduled_jobs",
    "shutdown_scheduler",
    "start_reaction_safeguard",
    "start_scheduler",
    "startup_warning_counts",
]

logger = logging.getLogger(__name__)


class FailureMapping(MutableMapping[Hashable, dict[str, Any]]):
    """Upstream's ``message_fetch_failures`` dict shape over a :class:`FailureTracker`."""

    def __init__(self, tracker: FailureTracker) -> None:
        self.tracker = tracker

    def __getitem__(self, key: Hashable) -> dict[str, Any]:
        record = self.tracker.get(key)
        if record is None:
            raise KeyError(key)
        return {
            "count": record.count,
            "first_failure": self.tracker.to_datetime(record.first_failure),
            "last_attempt": self.tracker.to_datetime(record.last_attempt),
            "methods_tried": list(record.methods_tried),
        }

    def __setitem__(self, key: Hashable, value: Mapping[str, Any]) -> None:
        """Store a record given in upstream's shape; datetimes may be aware or naive (local time)."""
        self.tracker.set_record(key, self._parse(key, value))

    def _parse(self, key: Hashable, value: object) -> FailureRecord:
        if not isinstance(value, Mapping):
            msg = f"message_fetch_failures[{key!r}]: expected a mapping, got {type(value).__name__}"
            raise TypeError(msg)
        count = value.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            msg = f"message_fetch_failures[{key!r}]['count']: expected an integer >= 0, got {count!r}"
            raise ValueError(msg)
        times: dict[str, float] = {}
        for field in ("first_failure", "last_attempt"):
            stamp = value.get(field)
            if stamp is None:
                times[field] = self.tracker.now()
            elif isinstance(stamp, datetime):
                times[field] = self.tracker.from_datetime(stamp)
            else:
                msg = f"message_fetch_failures[{key!r}][{field!r}]: expected a datetime, got {stamp!r}"
                raise TypeError(msg)
        methods = value.get("methods_tried", ())
        if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
            msg = (
                f"message_fetch_failures[{key!r}]['methods_tried']: expected a list of names, got {methods!r}"
            )
            raise TypeError(msg)
        return FailureRecord(
            count=count,
            first_failure=times["first_failure"],
            last_attempt=times["last_attempt"],
            methods_tried=tuple(dict.fromkeys(methods))[-MAX_METHODS_TRIED:],
        )

    def __delitem__(self, key: Hashable) -> None:
        if not self.tracker.clear(key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.tracker.keys())

    def __len__(self) -> int:
        return len(self.tracker)

    def __contains__(self, key: object) -> bool:
        return key in self.tracker


class WarningCounts(MutableMapping[str, int]):
    """Upstream's ``startup_warning_counts`` over a :class:`LogThrottle`'s per-category totals.

    Setting a category to 0 also restarts its throttle window (what upstream's reset meant).
    """

    def __init__(self, throttle: LogThrottle) -> None:
        self.throttle = throttle

    def _known(self) -> list[str]:
        return list(dict.fromkeys([*WARNING_THRESHOLDS, *self.throttle.categories()]))

    def __getitem__(self, category: str) -> int:
        if category not in WARNING_THRESHOLDS and category not in self.throttle.categories():
            raise KeyError(category)
        return self.throttle.count(category)

    def __setitem__(self, category: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            msg = f"startup_warning_counts[{category!r}]: expected an integer >= 0, got {value!r}"
            raise ValueError(msg)
        self.throttle.set_count(category, value)

    def __delitem__(self, category: str) -> None:
        if not self.throttle.forget(category) and category not in WARNING_THRESHOLDS:
            raise KeyError(category)

    def __iter__(self) -> Iterator[str]:
        return iter(self._known())

    def __len__(self) -> int:
        return len(self._known())


def _build(settings: CacheSettings, timer: Timer) -> tuple[FailureTracker, LogThrottle]:
    tracker = FailureTracker.from_settings(settings, name="message_fetch_failures", timer=timer)
    throttle = LogThrottle.from_settings(logger, settings, timer=timer)
    return tracker, throttle


failure_tracker, log_throttle = _build(CacheSettings(), time.monotonic)
message_fetch_failures = FailureMapping(failure_tracker)
startup_warning_counts = WarningCounts(log_throttle)
_unregister = failure_tracker.register()


def configure(settings: CacheSettings, *, timer: Timer = time.monotonic) -> None:
    """Rebuild the process-wide tracker and throttle from ``settings`` (their state starts empty).

    The module attributes and both views are updated in place, so references taken earlier
    (``from polly.background_tasks import message_fetch_failures``) keep working.
    """
    global failure_tracker, log_throttle, _unregister  # noqa: PLW0603 (upstream's API is module-level state)
    log_throttle.flush()
    _unregister()
    failure_tracker, log_throttle = _build(settings, timer)
    message_fetch_failures.tracker = failure_tracker
    startup_warning_counts.throttle = log_throttle
    _unregister = failure_tracker.register()


# --- upstream's scheduler functions, mapped onto the engine -------------------------------------------


class EngineNotRunningError(PollyError, RuntimeError):
    """An upstream scheduler API that only the running engine can serve was called outside ``polly run``.

    Upstream's APScheduler existed in every process; polly's scheduling lives in the engine, so
    returning a stand-in (or ``None``) would let a caller schedule jobs that never run.
    """

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs the poll engine, which runs only inside `polly run` in this process; "
            "polls are scheduled from the database there (see docs/migration-from-upstream.md)"
        )


def get_db_session() -> Session:
    """Upstream's ``get_db_session`` as this module imported it: a session the caller must close.

    Looked up in :mod:`polly.database` at each call, so a factory replaced there (tests do this) is
    the one :func:`close_poll` uses.
    """
    return compat_database.get_db_session()


def get_scheduler() -> PollScheduler:
    """The running engine's scheduler; :class:`EngineNotRunningError` outside ``polly run``."""
    engine = current_engine()
    if engine is None:
        what = "polly.background_tasks.get_scheduler()"
        raise EngineNotRunningError(what)
    return engine.scheduler


def __getattr__(name: str) -> object:
    if name == "scheduler":  # upstream's module global
        return get_scheduler()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


async def close_poll(poll_id: int) -> dict[str, Any]:
    """Close ``poll_id`` now; upstream's result shape ``{"success": bool, "message" | "error": str}``.

    Inside ``polly run`` the engine closes it and posts the results. Elsewhere the row is closed with
    a conditional update through :func:`get_db_session` (upstream's session factory, so a replaced
    one is honoured); a running engine posts the results on its next tick.
    """
    engine = current_engine()
    if engine is not None:
        closed = await engine.close_now(poll_id)
        return {
            "success": True,
            "message": f"poll {poll_id} closed" if closed else f"poll {poll_id} was not active",
        }
    try:
        changed = _close_row(poll_id)
    except (PollyError, SQLAlchemyError) as err:
        return {"success": False, "error": f"poll {poll_id} could not be closed: {type(err).__name__}: {err}"}
    if changed is None:
        return {"success": False, "error": f"poll {poll_id} not found"}
    message = (
        f"poll {poll_id} closed; a running engine shows the results"
        if changed
        else f"poll {poll_id} was not open"
    )
    return {"success": True, "message": message}


def _close_row(poll_id: int) -> bool | None:
    """``True`` closed now, ``False`` already closed, ``None`` no such poll (one short transaction)."""
    session = get_db_session()
    try:
        closed = transitions.applied_sync(
            session, transitions.close(poll_id, (STATUS_SCHEDULED, STATUS_ACTIVE))
        )
        session.commit()
        if closed:
            return True
        return False if session.get(Poll, poll_id) is not None else None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def restore_scheduled_jobs() -> int:
    """Run one scheduler tick now (overdue polls open or close); returns the ticks run (0 or 1)."""
    engine = current_engine()
    if engine is None:
        logger.warning("restore_scheduled_jobs: no engine runs in this process; `polly run` schedules polls")
        return 0
    await engine.scheduler.tick()
    return 1


async def start_scheduler() -> bool:
    """``True`` when the engine (and so its scheduler) runs in this process."""
    return current_engine() is not None


async def shutdown_scheduler() -> None:
    """Nothing to do: ``polly run`` stops the scheduler with the rest of the engine."""


async def start_reaction_safeguard() -> None:
    """Nothing to do: the engine's reconciler repairs missed votes within a Discord call budget."""


async def reaction_safeguard_task() -> int:
    """One reconciler pass of the running engine (upstream's loop is the engine's ``reconciler``
    loop, run by ``polly run``); returns the votes it added. :class:`EngineNotRunningError` outside
    ``polly run``: there is no Discord connection to repair from."""
    engine = current_engine()
    if engine is None:
        what = "polly.background_tasks.reaction_safeguard_task()"
        raise EngineNotRunningError(what)
    return (await engine.reconciler.pass_once()).votes_added


async def cleanup_polls_with_deleted_messages() -> int:
    """One reconciler pass; returns how many polls it closed as orphaned (none are ever deleted)."""
    engine = current_engine()
    if engine is None:
        return 0
    return (await engine.reconciler.pass_once()).orphaned
