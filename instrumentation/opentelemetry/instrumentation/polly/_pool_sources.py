"""Reading pool state as :class:`polly.stats.PoolStats`: SQLAlchemy engines and redis-py pools.

Everything is read from the pool's own state at collection time (never counted from events), so
the numbers stay right after ``invalidate()``, ``detach()`` and ``engine.dispose()`` (which swaps in
a new pool: the engine, not the pool, is held, and only weakly).

SQLAlchemy: ``QueuePool`` and ``AsyncAdaptedQueuePool`` (the defaults for server databases and for
file SQLite since 2.0): used = ``checkedout()``, idle = ``checkedin()``, max = ``size() +
max_overflow`` (absent when overflow is unlimited), idle max = ``size()``. ``pending`` (callers
waiting for a connection) is read from the queue's waiters, a private detail: 0 if it moves.
Other pool classes (``NullPool``, ``StaticPool``, ``SingletonThreadPool``) keep no countable state
and are skipped with one log line.

redis-py: ``get_connection_count()`` (public since 7.2/7.3) for idle/used and ``max_connections``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from polly.stats import PoolStats

logger = logging.getLogger("opentelemetry.instrumentation.polly")

_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb"}


def _url_pool_name(host: str | None, port: int | None, database: str | None) -> str:
    """``server.address:server.port/db.namespace`` (the semantic-convention fallback; no credentials)."""
    address = host or "localhost"
    where = f"{address}:{port}" if port else address
    return f"{where}/{database}" if database else where


def sqlalchemy_pool_name(engine: Any) -> str:
    """The engine's ``pool_logging_name`` if set, else ``host:port/database`` (file path for SQLite)."""
    sync = getattr(engine, "sync_engine", engine)
    logging_name = getattr(sync.pool, "logging_name", None)
    if logging_name:
        return str(logging_name)
    url = sync.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{url.database or ':memory:'}"
    return _url_pool_name(url.host, url.port, url.database)


def sqlalchemy_system(engine: Any) -> str:
    sync = getattr(engine, "sync_engine", engine)
    dialect = sync.dialect
    if getattr(dialect, "is_mariadb", False):
        return "mariadb"
    return _SYSTEMS.get(dialect.name, "other_sql")


def _pending_sqlalchemy(pool: Any) -> int:
    queue = getattr(pool, "_pool", None)
    try:
        not_empty = getattr(queue, "not_empty", None)
        if not_empty is not None:  # sync Queue: threads waiting on the condition
            return len(not_empty._waiters)  # noqa: SLF001 - no public waiter count exists
        aqueue = vars(queue).get("_queue") if queue is not None else None
        if aqueue is not None:  # asyncio.Queue, created on first use
            return sum(1 for f in aqueue._getters if not f.done())  # noqa: SLF001 - same reason
    except (AttributeError, TypeError):
        return 0
    return 0


class EngineSource:
    """One SQLAlchemy engine (sync or async), held weakly."""

    def __init__(self, engine: Any, name: str | None = None) -> None:
        sync = getattr(engine, "sync_engine", engine)
        self.ref: weakref.ref[Any] = weakref.ref(sync)
        self._engine = self.ref
        self.name = name or sqlalchemy_pool_name(sync)
        self.system = sqlalchemy_system(sync)
        self._warned = False

    @property
    def engine(self) -> Any:
        return self._engine()

    def alive(self) -> bool:
        return self._engine() is not None

    def read(self) -> PoolStats | None:
        engine = self._engine()
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
        checkedin = pool.checkedin()
        return PoolStats(
            name=self.name,
            system=self.system,
            max_connections=size + max_overflow if max_overflow >= 0 else -1,
            max_idle=size,
            used=pool.checkedout(),
            idle=checkedin,
            overflow=max(0, pool.overflow()),
            pending=_pending_sqlalchemy(pool),
            timeouts=0,
        )


def redis_pool_name(pool: Any) -> str:
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return _url_pool_name(kwargs.get("host"), kwargs.get("port"), str(kwargs.get("db", 0)))


class RedisPoolSource:
    """One redis-py connection pool (sync or asyncio), held weakly."""

    def __init__(self, pool: Any, name: str | None = None) -> None:
        self.ref: weakref.ref[Any] = weakref.ref(pool)
        self._pool = self.ref
        self.name = name or redis_pool_name(pool)
        self.system = "redis"

    def alive(self) -> bool:
        return self._pool() is not None

    def read(self) -> PoolStats | None:
        pool = self._pool()
        if pool is None:
            return None
        idle = used = 0
        for count, attrs in pool.get_connection_count():
            if attrs.get("db.client.connection.state") == "used":
                used = count
            else:
                idle = count
        max_connections = int(getattr(pool, "max_connections", -1) or -1)
        return PoolStats(
            name=self.name,
            system="redis",
            max_connections=max_connections,
            max_idle=max_connections,
            used=used,
            idle=idle,
            overflow=0,
            pending=0,
            timeouts=0,
        )
