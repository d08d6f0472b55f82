"""Upstream's ``polly.memory_utils`` functions, with upstream's signatures and without its bugs.

What changed, and why:

* :func:`cleanup_global_dict` compares times as epoch seconds: aware datetimes, naive ones (taken as
  local time, which is what upstream's ``datetime.now()`` produces) and plain numbers (epoch seconds)
  can be mixed. Upstream compared a naive "now" with aware timestamps; the ``TypeError`` was caught
  and every entry, retry counters included, was deleted.
* :func:`force_garbage_collection` runs a *young-generation* collection (``gc.collect(0)``), the
  collection the interpreter itself runs after every few hundred allocations: it takes microseconds,
  so it is safe on the event loop. Upstream ran a full ``gc.collect()`` there, which walks every
  tracked object and stalls the loop in proportion to the heap. Full collections are left to the
  interpreter's own generational schedule.
* :func:`memory_cleanup_decorator` awaits coroutine functions (upstream returned the un-awaited
  coroutine and cleaned up before the body ran), keeps the wrapped function's metadata
  (``functools.wraps``; ``inspect.iscoroutinefunction`` stays true), and runs the cleanup after the
  body whether it succeeded or raised; a failing cleanup is logged and never masks the result.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Upstream's constants for the background-tasks cleanup.
MAX_FAILURE_ENTRIES = 1000
FAILURE_CLEANUP_AGE_MINUTES = 60
STARTUP_WARNING_RESET_KEYS = [
    "message_not_found",
    "permission_denied",
    "channel_not_found",
    "rate_limited",
    "message_fix_failed",
]


def _epoch_seconds(value: object) -> float | None:
    """``value`` as epoch seconds, or None when it is not a time."""
    if isinstance(value, datetime):
        # astimezone() reads a naive datetime as local time and leaves an aware one's instant alone.
        return value.astimezone().timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _timestamp(value: object, timestamp_key: str) -> float | None:
    if isinstance(value, dict):
        return _epoch_seconds(value.get(timestamp_key))
    return _epoch_seconds(getattr(value, timestamp_key, None))


def cleanup_global_dict(
    target_dict: MutableMapping[Any, Any],
    max_size: int = 1000,
    max_age_minutes: float = 60,
    timestamp_key: str = "last_attempt",
    *,
    now: Callable[[], float] = time.time,
) -> int:
    """Remove old entries from ``target_dict`` in place; returns how many were removed.

    An entry is ``value[timestamp_key]`` (a dict) or ``value.<timestamp_key>``: a datetime (aware, or
    naive meaning local time) or epoch seconds. Entries older than ``max_age_minutes`` go first, as do
    entries whose age cannot be read (upstream's rule: "if we can't determine age, consider it old").
    Then, while more than ``max_size`` remain, the oldest go. ``now`` returns epoch seconds (tests
    inject it).
    """
    if max_size < 0:
        msg = f"cleanup_global_dict: max_size must be >= 0, got {max_size}"
        raise ValueError(msg)
    cutoff = now() - max_age_minutes * 60.0
    keep: list[tuple[float, Any]] = []
    remove: list[Any] = []
    unreadable = 0
    for key, value in list(target_dict.items()):
        stamp = _timestamp(value, timestamp_key)
        if stamp is None:
            unreadable += 1
            remove.append(key)
        elif stamp < cutoff:
            remove.append(key)
        else:
            keep.append((stamp, key))
    if len(keep) > max_size:
        keep.sort(key=lambda item: item[0])
        remove.extend(key for _stamp, key in keep[: len(keep) - max_size])
    removed = 0
    for key in remove:
        if target_dict.pop(key, None) is not None:
            removed += 1
    if unreadable:
        logger.warning("memory cleanup: removed %d entries without a readable %r", unreadable, timestamp_key)
    if removed:
        logger.info("memory cleanup: removed %d entries, kept %d", removed, len(target_dict))
    return removed


def force_garbage_collection() -> int:
    """Collect the youngest GC generation (cheap, loop-safe); returns the unreachable objects found."""
    collected = gc.collect(0)
    if collected:
        logger.debug("young-generation collection found %d unreachable objects", collected)
    return collected


def reset_counter_dict(counter_dict: MutableMapping[str, int], keys: Iterable[str] | None = None) -> None:
    """Set the counters named in ``keys`` (all of them when ``keys`` is None or empty) to 0."""
    names = list(keys) if keys else list(counter_dict)
    for key in names:
        counter_dict[key] = 0


def _run_cleanup(cleanup_func: Callable[[], object] | None, name: str) -> object:
    try:
        return cleanup_func() if cleanup_func is not None else force_garbage_collection()
    except Exception:
        logger.exception("memory cleanup after %s failed", name)
        return None


def memory_cleanup_decorator(
    cleanup_func: Callable[[], object] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run ``cleanup_func`` (default: :func:`force_garbage_collection`) after each call of the function.

    Works on plain and ``async def`` functions; for the latter the body is awaited first, and an
    async ``cleanup_func`` is awaited too. Exceptions of the body propagate unchanged.
    """

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                try:
                    return await async_func(*args, **kwargs)
                finally:
                    outcome = _run_cleanup(cleanup_func, func.__name__)
                    if inspect.isawaitable(outcome):
                        try:
                            await outcome
                        except Exception:
                            logger.exception("memory cleanup after %s failed", func.__name__)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            finally:
                outcome = _run_cleanup(cleanup_func, func.__name__)
                if inspect.iscoroutine(outcome):
                    outcome.close()  # an async cleanup cannot run inside a sync call
                    logger.error("memory cleanup for %s is async; decorate an async function", func.__name__)

        return wrapper

    return decorator


def cleanup_background_tasks_memory() -> int:
    """Trim upstream's background-task state; returns the failure records removed.

    Purges expired failure records, drops records older than ``FAILURE_CLEANUP_AGE_MINUTES`` beyond
    ``MAX_FAILURE_ENTRIES``, resets the startup warning counters, writes pending throttle summaries
    and runs a young-generation collection.
    """
    from polly import background_tasks

    removed = background_tasks.failure_tracker.purge()
    removed += cleanup_global_dict(
        background_tasks.message_fetch_failures,
        max_size=MAX_FAILURE_ENTRIES,
        max_age_minutes=FAILURE_CLEANUP_AGE_MINUTES,
        timestamp_key="last_attempt",
    )
    background_tasks.log_throttle.flush()
    reset_counter_dict(background_tasks.startup_warning_counts, keys=STARTUP_WARNING_RESET_KEYS)
    force_garbage_collection()
    logger.debug("background tasks cleanup removed %d failure records", removed)
    return removed
