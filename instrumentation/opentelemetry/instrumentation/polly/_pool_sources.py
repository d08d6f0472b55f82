"""Reading discovered pools: SQLAlchemy engines and redis-py pools, from the pool's own state.

Everything is read at collection time (never counted from events), so the numbers stay right after
``invalidate()``, ``detach()`` and ``engine.dispose()`` (which swaps in a new pool: the engine, not
the pool, is held, and only weakly).

SQLAlchemy ``QueuePool`` and ``AsyncAdaptedQueuePool`` (the defaults for server databases, and
for file SQLite since 2.0): used = ``checkedout()``, idle = ``checkedin()``, max = ``size() +
max_overflow`` (unknown when overflow is unlimited), idle max = ``size()``. Pending requests and
timeouts come from :class:`PoolCounters`, kept by the discovery's wrapper of ``Pool.connect``.
``NullPool``, ``StaticPool`` and ``SingletonThreadPool`` keep no countable state: skipped with one
log line.

redis-py: ``get_connection_count()`` (redis-py 7.2+) or the pool's connection lists (5.x and
6.x) for idle/used, and ``max_connections``. redis-py's plain pool never waits (it raises when
full), so it has no pending requests, wait time or timeouts.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.polly import _naming

logger = logging.getLogger("opentelemetry.instrumentation.polly")

_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb"}
#: redis-py caps an unbounded pool at 2**31 connections: reported as unknown.
_UNBOUNDED = 2**31


@dataclass(frozen=True, slots=True)
class PoolRead:
    """One read of a pool; ``-1`` means unknown."""

    name: str
    system: str
    max_connections: int
    max_idle: int
    used: int
    idle: int
    pending: int
    timeouts: int


class PoolCounters:
    """Callers inside ``Pool.connect`` now, and connects that timed out, for one SQLAlchemy pool."""

    __slots__ = ("_lock", "pending", "timeouts")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending = 0
        self.timeouts = 0

    def enter(self) -> None:
        with self._lock:
            self.pending += 1

    def leave(self, *, timed_out: bool) -> None:
        with self._lock:
            self.pending -= 1
            if timed_out:
                self.timeouts += 1


#: Per SQLAlchemy pool object; weak, so a disposed pool's counters go with it.
COUNTERS: weakref.WeakKeyDictionary[Any, PoolCounters] = weakref.WeakKeyDictionary()
_COUNTERS_LOCK = threading.Lock()


def counters_of(pool: Any) -> PoolCounters:
    counters = COUNTERS.get(pool)
    if counters is None:
        with _COUNTERS_LOCK:
            counters = COUNTERS.setdefault(pool, PoolCounters())
    return counters


def sqlalchemy_system(engine: Any) -> str:
    dialect = getattr(engine, "sync_engine", engine).dialect
    if getattr(dialect, "is_mariadb", False):
        return "mariadb"
    return _SYSTEMS.get(dialect.name, "other_sql")


class EngineSource:
    """One SQLAlchemy engine (sync, or the sync side of an async one), held weakly."""

    kind = "sqlalchemy"

    def __init__(self, engine: Any, name: str) -> None:
        sync = getattr(engine, "sync_engine", engine)
        self.ref: weakref.ref[Any] = weakref.ref(sync)
        self.name = name
        self.system = sqlalchemy_system(sync)
        self.native_name: str | None = None
        self._warned = False

    def target(self) -> Any:
        return self.ref()

    def owns_pool(self, pool: Any) -> bool:
        engine = self.ref()
        return engine is not None and engine.pool is pool

    def read(self) -> PoolRead | None:
        engine = self.ref()
        if engine is None:
            return None
        pool = engine.pool
        if not all(hasattr(pool, m) for m in ("checkedout", "checkedin", "size", "overflow")):
            if not self._warned:
                self._warned = True
                logger.info(
                    "pool %s (%s) keeps no countable state; no pool metrics", self.name, type(pool).__name__
                )
            return None
        size = pool.size()
        max_overflow = getattr(pool, "_max_overflow", -1)
        counters = COUNTERS.get(pool)
        return PoolRead(
            name=self.name,
            system=self.system,
            max_connections=size + max_overflow if max_overflow >= 0 else -1,
            max_idle=size,
            used=pool.checkedout(),
            idle=pool.checkedin(),
            pending=max(0, counters.pending) if counters is not None else 0,
            timeouts=counters.timeouts if counters is not None else 0,
        )


def redis_native_name(pool: Any) -> str | None:
    """redis-py's own name for ``pool`` (``host:port_<id>``), where redis-py has one."""
    try:
        from redis.observability.attributes import get_pool_name
    except ImportError:
        return None
    try:
        return str(get_pool_name(pool))
    except Exception:  # noqa: BLE001 - a redis-py internals change must not break discovery
        return None


class RedisPoolSource:
    """One redis-py connection pool (sync or asyncio), held weakly.

    ``name`` is the fallback name; :meth:`read` reports redis-py's own name instead while its
    native connection metrics are on (``joined``), so both join under one pool name.
    """

    kind = "redis"

    def __init__(self, pool: Any, name: str) -> None:
        self.ref: weakref.ref[Any] = weakref.ref(pool)
        self.name = name
        self.system = "redis"
        self.native_name = redis_native_name(pool)

    def target(self) -> Any:
        return self.ref()

    def owns_pool(self, pool: Any) -> bool:
        return self.ref() is pool

    def reported_name(self, joined: bool) -> str:
        return self.native_name if joined and self.native_name else self.name

    def read(self, joined: bool = False) -> PoolRead | None:
        pool = self.ref()
        if pool is None:
            return None
        counts = getattr(pool, "get_connection_count", None)
        if counts is not None:
            idle = used = 0
            for count, attrs in counts():
                if attrs.get("db.client.connection.state") == "used":
                    used = count
                else:
                    idle = count
        else:  # redis-py 5/6
            idle = len(getattr(pool, "_available_connections", ()))
            used = len(getattr(pool, "_in_use_connections", ()))
        max_connections = int(getattr(pool, "max_connections", -1) or -1)
        if max_connections >= _UNBOUNDED:
            max_connections = -1
        return PoolRead(
            name=self.reported_name(joined),
            system="redis",
            max_connections=max_connections,
            max_idle=max_connections,
            used=used,
            idle=idle,
            pending=0,
            timeouts=-1,
        )


def engine_base_name(engine: Any) -> str:
    return _naming.sqlalchemy_base_name(engine)


def is_async_engine(engine: Any) -> bool:
    sync = getattr(engine, "sync_engine", engine)
    return bool(getattr(sync.dialect, "is_async", False))
