"""polly's side of the instrumentation's seam: its pools, caches, breaker, supervised tasks and gateway.

``opentelemetry-instrumentation-polly`` defines a ``StatsSource`` Protocol and finds implementations
through the entry-point group ``opentelemetry_instrumentation_polly_sources``; polly's pyproject
names :func:`source` there. Nothing here imports OpenTelemetry: the Protocol is structural, and this
module only reads :data:`polly.stats.registry`.

Names follow the instrumentation's one pool-naming scheme, ``server.address:server.port/namespace``
(``sqlite:<path>`` for SQLite files), with ``#async`` appended to the async engine's pool when the
sync engine of the same database is reported too. polly's internal pool names
(``sync:postgresql://host:5432/db``) are translated here, once per name (bounded by the registry's
provider cap). The Redis pool keeps redis-py's own pool name; the instrumentation maps it onto the
same scheme as every other redis-py pool.

``owns()`` claims polly's own engines (pools of :class:`~polly.db.pool.MonitoredQueuePool` and its
asyncio variant) and polly's Redis pool, so the instrumentation's discovery reports them once,
with polly's extra knowledge (waiters, timeouts, wait durations).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from polly.stats import (
    BreakerState,
    CacheStats,
    DurationEvent,
    GatewayStats,
    PoolStats,
    RedisStats,
    StatsRegistry,
    TaskStats,
    registry,
)

FALLBACK_CACHE = "redis.fallback"
MAX_NAMES = 512

_STATE_NAMES: dict[BreakerState, Literal["closed", "half_open", "open"]] = {
    BreakerState.CLOSED: "closed",
    BreakerState.HALF_OPEN: "half_open",
    BreakerState.OPEN: "open",
}


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The Redis circuit breaker in front of pool ``pool_name``."""

    pool_name: str
    state: Literal["closed", "half_open", "open"]
    openings: int


def scheme_name(polly_name: str) -> tuple[str, bool]:
    """``(scheme name without suffix, is_async)`` of a polly pool name; other names pass through.

    ``sync:postgresql://db.example:5432/polly`` -> ``("db.example:5432/polly", False)``;
    ``async:sqlite:///data/polly.db`` -> ``("sqlite:data/polly.db", True)``.
    """
    role, sep, rest = polly_name.partition(":")
    if not sep or role not in ("sync", "async"):
        return polly_name, False
    is_async = role == "async"
    if rest.startswith("sqlite:///"):
        return f"sqlite:{rest.removeprefix('sqlite:///')}", is_async
    parts = urlsplit(rest)
    host = parts.hostname or "localhost"
    where = f"{host}:{parts.port}" if parts.port else host
    database = parts.path.lstrip("/")
    return (f"{where}/{database}" if database else where), is_async


class PollyStatsSource:
    """The ``StatsSource`` of :data:`polly.stats.registry` (or of the registry given)."""

    def __init__(self, stats: StatsRegistry = registry) -> None:
        self.registry = stats
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}

    def __repr__(self) -> str:
        return "<PollyStatsSource>"

    # --- names ---------------------------------------------------------------------------------
    def _translate(self, stats: list[PoolStats]) -> list[PoolStats]:
        bases = [scheme_name(p.name) for p in stats]
        sync_bases = {base for base, is_async in bases if not is_async}
        out = []
        for pool, (base, is_async) in zip(stats, bases, strict=True):
            name = f"{base}#async" if is_async and base in sync_bases else base
            self._remember(pool.name, name)
            out.append(pool if name == pool.name else replace(pool, name=name))
        return out

    def _remember(self, polly_name: str, name: str) -> None:
        with self._lock:
            if polly_name not in self._names and len(self._names) < MAX_NAMES:
                self._names[polly_name] = name

    def name_of(self, polly_name: str) -> str:
        """The scheme name reported for ``polly_name`` (the polly name until its pool was read)."""
        with self._lock:
            return self._names.get(polly_name, polly_name)

    # --- the StatsSource Protocol ---------------------------------------------------------------
    def pools(self) -> list[PoolStats]:
        db = self._translate([p for p in self.registry.collect("db_pool") if isinstance(p, PoolStats)])
        return db + [r.pool for r in self._redis()]

    def caches(self) -> list[CacheStats]:
        caches = [c for c in self.registry.collect("cache") if isinstance(c, CacheStats)]
        caches.extend(
            CacheStats(FALLBACK_CACHE, r.fallback_cache_size, r.fallback_cache_max, r.fallback_hits, 0, 0, 0)
            for r in self._redis()
        )
        return caches

    def breakers(self) -> list[BreakerSnapshot]:
        return [
            BreakerSnapshot(r.pool.name, _STATE_NAMES[r.breaker], r.breaker_opened) for r in self._redis()
        ]

    def tasks(self) -> TaskStats | None:
        for snap in self.registry.collect("tasks"):
            if isinstance(snap, TaskStats):
                return snap
        return None

    def gateways(self) -> list[GatewayStats]:
        """The gateway connections (Discord's, or the sandbox's) registered as kind ``gateway``."""
        return [g for g in self.registry.collect("gateway") if isinstance(g, GatewayStats)]

    def owns(self, pool: object) -> bool:
        inner = getattr(pool, "pool", None)
        if inner is not None and hasattr(pool, "dialect"):  # a SQLAlchemy Engine
            from polly.db.pool import MonitoredAsyncQueuePool, MonitoredQueuePool

            return isinstance(inner, (MonitoredQueuePool, MonitoredAsyncQueuePool))
        if hasattr(pool, "connection_kwargs"):  # a redis-py pool: polly names it by redis-py's name
            native = _redis_native_name(pool)
            return native is not None and any(r.pool.name == native for r in self._redis())
        return False

    def add_duration_listener(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        def translated(event: DurationEvent) -> None:
            listener(replace(event, pool_name=self.name_of(event.pool_name)))

        return self.registry.add_listener(translated)

    def _redis(self) -> Iterable[RedisStats]:
        return [r for r in self.registry.collect("redis_pool") if isinstance(r, RedisStats)]


def _redis_native_name(pool: object) -> str | None:
    try:
        from redis.observability.attributes import get_pool_name
    except ImportError:  # redis-py without its observability module
        return None
    return str(get_pool_name(pool))  # type: ignore[arg-type]


_SOURCE = PollyStatsSource()


def source() -> PollyStatsSource:
    """The entry point: polly's process-wide source."""
    return _SOURCE
