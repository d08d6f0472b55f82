"""Frozen snapshots of polly's runtime state: the seam the instrumentation reads.

polly's components (pools, the Redis client, caches, the task supervisor) register a *provider*, a
cheap callable returning a snapshot, under a kind and a name. Readers (the OpenTelemetry
instrumentation, ``polly run``'s status line, tests) call :meth:`StatsRegistry.collect`. Providers are
called from any thread (the OpenTelemetry SDK calls metric callbacks on its exporter thread), so they
must only read state: no I/O, no asyncio, no heap walks.

Durations (connection wait, use and create times) are events, not state: components publish each
one with :meth:`StatsRegistry.record_duration`, and listeners (at most ``MAX_LISTENERS``) receive
them synchronously. With no listener, publishing costs one attribute read.

Nothing here imports OpenTelemetry; the dependency points from the instrumentation to polly.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

MAX_PROVIDERS = 256
MAX_LISTENERS = 16

StatsKind = Literal["db_pool", "redis_pool", "cache", "tasks", "engine", "gateway"]
DurationKind = Literal["wait_time", "use_time", "create_time"]


class BreakerState(enum.Enum):
    """A circuit breaker's state; ``value`` is the number exported (0 closed, 1 half-open, 2 open)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One connection pool, read from the pool's own introspection (never counted from events).

    ``name`` never carries credentials. ``system`` is the OpenTelemetry ``db.system.name``
    (``postgresql``, ``mariadb``, ``mysql``, ``sqlite``, ``redis``). ``max_connections`` is the hard
    limit (size + overflow for SQLAlchemy); ``max_idle`` the number kept idle (the pool size).
    ``timeouts`` and ``errors`` are cumulative since the pool was created.
    """

    name: str
    system: str
    max_connections: int
    max_idle: int
    used: int
    idle: int
    overflow: int
    pending: int
    timeouts: int
    errors: int = 0


@dataclass(frozen=True, slots=True)
class RedisStats:
    """The Redis pool plus the breaker and the fallback cache in front of it."""

    pool: PoolStats
    breaker: BreakerState
    breaker_opened: int
    fallback_cache_size: int
    fallback_cache_max: int
    fallback_hits: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A bounded cache. Counters are cumulative since the cache was created."""

    name: str
    size: int
    max_size: int
    hits: int
    misses: int
    expirations: int
    evictions: int


@dataclass(frozen=True, slots=True)
class TaskStats:
    """The task supervisor: live tasks by name and cumulative lifecycle counters."""

    live_by_name: tuple[tuple[str, int], ...]
    started: int
    finished: int
    failed: int
    restarted: int
    cancelled: int
    failing: tuple[str, ...] = ()


GatewayState = Literal["connecting", "connected", "resuming", "down"]


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """The Discord gateway connection of one client.

    ``state`` is ``"connecting"`` (before the first READY), ``"connected"``, ``"resuming"`` (the
    connection dropped; discord.py is reconnecting) or ``"down"`` (reconnect attempts are failing);
    ``state_since`` is when it entered that state (Unix seconds). ``latency_seconds`` is the last
    heartbeat round trip (``None`` until the first ACK). Counters are cumulative since start:
    ``identifies`` new sessions (READY), ``resumes`` sessions resumed (RESUMED), ``reconnects`` the
    times the connection came back after being lost (either way), ``outages`` the times it went
    ``down``.
    """

    name: str
    state: GatewayState
    state_since: float
    latency_seconds: float | None
    identifies: int
    resumes: int
    reconnects: int
    outages: int

    @property
    def connected(self) -> bool:
        return self.state == "connected"


@dataclass(frozen=True, slots=True)
class DurationEvent:
    """One observed duration of a pool (``kind``) in seconds."""

    kind: DurationKind
    pool_name: str
    system: str
    seconds: float


Snapshot = PoolStats | RedisStats | CacheStats | TaskStats | GatewayStats | object
Provider = Callable[[], "Snapshot | list[Snapshot] | None"]
Listener = Callable[[DurationEvent], None]


class StatsRegistry:
    """Providers of snapshots and listeners of durations, bounded and thread-safe.

    The lock guards only the bookkeeping; providers and listeners are called outside it.
    """

    def __init__(self, max_providers: int = MAX_PROVIDERS, max_listeners: int = MAX_LISTENERS) -> None:
        self._lock = threading.Lock()
        self._providers: dict[tuple[StatsKind, str], Provider] = {}
        self._listeners: tuple[Listener, ...] = ()
        self.max_providers = max_providers
        self.max_listeners = max_listeners

    def register(self, kind: StatsKind, name: str, provider: Provider) -> Callable[[], None]:
        """Register ``provider`` under ``(kind, name)``, replacing any earlier one; returns an unregister."""
        key = (kind, name)
        with self._lock:
            if key not in self._providers and len(self._providers) >= self.max_providers:
                msg = f"stats registry is full: {self.max_providers} providers (kind={kind!r}, name={name!r})"
                raise RuntimeError(msg)
            self._providers[key] = provider

        def unregister() -> None:
            with self._lock:
                if self._providers.get(key) is provider:
                    del self._providers[key]

        return unregister

    def collect(self, kind: StatsKind) -> list[Snapshot]:
        """Call every provider of ``kind``; a provider that raises is logged and skipped."""
        with self._lock:
            providers = [(n, p) for (k, n), p in self._providers.items() if k == kind]
        out: list[Snapshot] = []
        for name, provider in providers:
            try:
                result = provider()
            except Exception:
                logger.exception("stats provider %s/%s failed", kind, name)
                continue
            if result is None:
                continue
            if isinstance(result, list):
                out.extend(result)
            else:
                out.append(result)
        return out

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Receive every :class:`DurationEvent`; returns a function that removes the listener."""
        with self._lock:
            if len(self._listeners) >= self.max_listeners:
                msg = f"stats registry has {self.max_listeners} duration listeners already"
                raise RuntimeError(msg)
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return remove

    @property
    def has_listeners(self) -> bool:
        return bool(self._listeners)

    def record_duration(self, kind: DurationKind, pool_name: str, system: str, seconds: float) -> None:
        """Publish one duration. Listener errors are logged, never raised into the caller."""
        listeners = self._listeners
        if not listeners:
            return
        event = DurationEvent(kind, pool_name, system, seconds)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("duration listener failed")


#: The process-wide registry polly's components register with.
registry = StatsRegistry()
