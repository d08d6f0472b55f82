"""Zero-code discovery of SQLAlchemy engines and redis-py pools, whenever they are created.

When ``sqlalchemy`` / ``redis`` is imported (now, if it already is; else at its import, through
wrapt's post-import hooks, which ``opentelemetry-instrumentation`` depends on):

* ``Engine.__init__`` and the sync and asyncio ``ConnectionPool.__init__`` are wrapped, so every
  engine (``create_engine``, ``create_async_engine``: its sync engine) and every redis-py pool
  created from then on is announced, however the application imported its factory;
* the objects that exist already are found once with ``gc.get_objects()`` (a single pass at that
  moment, not repeated);
* ``sqlalchemy.pool.Pool.connect`` is wrapped to time each checkout (``wait_time``), count the
  callers inside it (``pending_requests``) and the ``sqlalchemy.exc.TimeoutError`` it raises
  (``timeouts``).

Wrappers are installed once per process and stay (wrapt cannot unwrap safely under other
wrappers); with no active sink they cost one tuple read. Sinks are held weakly, at most
``MAX_SINKS``.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry.instrumentation.polly._pool_sources import counters_of

logger = logging.getLogger("opentelemetry.instrumentation.polly")

MAX_SINKS = 16


class Sink(Protocol):
    def engine_created(self, engine: Any) -> None: ...
    def redis_pool_created(self, pool: Any) -> None: ...
    def connect_waited(self, pool: Any, seconds: float) -> None: ...


_lock = threading.Lock()
_sinks: tuple[weakref.ref[Any], ...] = ()
_hooked: set[str] = set()


def _live_sinks() -> list[Any]:
    return [s for s in (ref() for ref in _sinks) if s is not None]


def add_sink(sink: Sink) -> None:
    """Announce every engine and pool to ``sink`` from now on, and those that exist already."""
    global _sinks  # noqa: PLW0603 - one process-wide set of wrappers
    with _lock:
        alive = tuple(r for r in _sinks if r() is not None)
        if any(r() is sink for r in alive):
            return
        if len(alive) >= MAX_SINKS:
            logger.warning(
                "%d instrumentation sessions already discover pools; not adding another", MAX_SINKS
            )
            return
        _sinks = (*alive, weakref.ref(sink))
        first = not _hooked
        _hooked.update(("sqlalchemy", "redis"))
    if first:
        import wrapt

        wrapt.register_post_import_hook(_hook_sqlalchemy, "sqlalchemy")
        wrapt.register_post_import_hook(_hook_redis, "redis")
    else:
        _scan_existing([sink])


def remove_sink(sink: Sink) -> None:
    global _sinks  # noqa: PLW0603
    with _lock:
        _sinks = tuple(r for r in _sinks if r() is not None and r() is not sink)


def _announce(method: str, obj: Any) -> None:
    for sink in _live_sinks():
        try:
            getattr(sink, method)(obj)
        except Exception:
            logger.exception("pool discovery failed for %s", type(obj).__name__)


# --- SQLAlchemy ----------------------------------------------------------------------------------


def _after_engine_init(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    if _sinks:
        _announce("engine_created", instance)
    return result


def _timed_connect(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    if not _sinks:
        return wrapped(*args, **kwargs)
    counters = counters_of(instance)
    started = time.perf_counter()
    counters.enter()
    timed_out = False
    try:
        return wrapped(*args, **kwargs)
    except Exception as err:
        timed_out = type(err).__name__ == "TimeoutError" and type(err).__module__.startswith("sqlalchemy")
        raise
    finally:
        counters.leave(timed_out=timed_out)
        seconds = time.perf_counter() - started
        for sink in _live_sinks():
            sink.connect_waited(instance, seconds)


def _hook_sqlalchemy(_module: Any) -> None:
    import wrapt

    wrapt.wrap_function_wrapper("sqlalchemy.engine.base", "Engine.__init__", _after_engine_init)
    wrapt.wrap_function_wrapper("sqlalchemy.pool.base", "Pool.connect", _timed_connect)
    _scan_existing(_live_sinks(), engines=True, redis=False)


# --- redis-py ------------------------------------------------------------------------------------


def _after_pool_init(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    if _sinks:
        _announce("redis_pool_created", instance)
    return result


def _hook_redis(_module: Any) -> None:
    import wrapt

    wrapt.wrap_function_wrapper("redis.connection", "ConnectionPool.__init__", _after_pool_init)
    try:
        import redis.asyncio.connection  # noqa: F401 - the asyncio pool, wrapped below
    except ImportError:  # pragma: no cover - every supported redis-py has it
        pass
    else:
        wrapt.wrap_function_wrapper("redis.asyncio.connection", "ConnectionPool.__init__", _after_pool_init)
    _scan_existing(_live_sinks(), engines=False, redis=True)


# --- what exists already -------------------------------------------------------------------------


def _scan_existing(sinks: list[Any], *, engines: bool = True, redis: bool = True) -> None:
    classes: list[tuple[str, type]] = []
    skip: tuple[type, ...] = ()
    if engines and "sqlalchemy.engine.base" in sys.modules:
        from sqlalchemy.engine import base

        classes.append(("engine_created", base.Engine))
        option_engine = getattr(base, "OptionEngine", None)  # shares its parent's pool
        skip = (option_engine,) if isinstance(option_engine, type) else ()
    if redis and "redis.connection" in sys.modules:
        from redis.connection import ConnectionPool

        classes.append(("redis_pool_created", ConnectionPool))
        if "redis.asyncio.connection" in sys.modules:
            from redis.asyncio.connection import ConnectionPool as AsyncConnectionPool

            classes.append(("redis_pool_created", AsyncConnectionPool))
    if not classes or not sinks:
        return
    found: list[tuple[str, Any]] = []
    kinds = tuple(cls for _, cls in classes)
    for obj in gc.get_objects():
        if isinstance(obj, kinds) and not isinstance(obj, skip):
            method = next(m for m, cls in classes if isinstance(obj, cls))
            found.append((method, obj))
    for method, obj in found:
        for sink in sinks:
            try:
                getattr(sink, method)(obj)
            except Exception:
                logger.exception("pool discovery failed for %s", type(obj).__name__)
