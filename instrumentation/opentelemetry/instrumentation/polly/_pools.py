"""Connection pool metrics (``db.client.connection.*``) for polly's pools and registered ones.

Sources, deduplicated by ``db.client.connection.pool.name`` (the first wins, and polly's registry
comes first): ``polly.stats.registry`` kinds ``db_pool`` (:class:`PoolStats`) and ``redis_pool``
(:class:`RedisStats`), then engines and redis-py pools registered with the instrumentor.

Gauges (observable up-down counters, read at collection): ``db.client.connection.count`` by
``db.client.connection.state`` (idle|used), ``.max``, ``.idle.max``, ``.pending_requests``;
``db.client.connection.timeouts`` is an observable counter of the pool's cumulative count. All
carry ``db.client.connection.pool.name`` and ``db.system.name``.

Histograms ``db.client.connection.wait_time`` / ``use_time`` / ``create_time`` (``s``) come from
the registry's duration events, and for registered SQLAlchemy engines use/create times from pool
events (``checkout``/``checkin``, ``do_connect``/``connect``). Registered engines have no
wait-time or timeout events in SQLAlchemy, so those two are polly-pool-only.

For registered redis-py pools, ``db.client.connection.count`` is left to redis-py when its native
metrics are on (see ``_coexist``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.instrumentation.polly._coexist import redis_native_connection_count
from opentelemetry.instrumentation.polly._pool_sources import EngineSource, RedisPoolSource
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from polly.stats import DurationEvent, PoolStats, RedisStats, StatsRegistry

logger = logging.getLogger("opentelemetry.instrumentation.polly")

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SYSTEM = "db.system.name"
#: Sources registered by hand, at most (a cap like every other set here).
MAX_SOURCES = 256
SNAPSHOT_MAX_AGE = 1.0
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_START_KEY = "polly.instrumentation.start"


class PoolSignals:
    def __init__(
        self, meter: Meter, registry: StatsRegistry, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.active = True
        self._registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, EngineSource | RedisPoolSource] = {}
        self._cache: tuple[float, list[tuple[PoolStats, bool]]] | None = None
        self._duplicates_logged: set[str] = set()
        self._histograms = {
            kind: meter.create_histogram(
                f"db.client.connection.{kind}",
                unit="s",
                description=desc,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            for kind, desc in (
                ("wait_time", "Time to obtain an open connection from the pool"),
                ("use_time", "Time between borrowing a connection and returning it"),
                ("create_time", "Time to create a new connection"),
            )
        }
        up_down = meter.create_observable_up_down_counter
        up_down(
            "db.client.connection.count",
            [self._observe_count],
            unit="{connection}",
            description="Connections by state, read from the pool",
        )
        up_down(
            "db.client.connection.max",
            [self._field("max_connections")],
            unit="{connection}",
            description="Maximum open connections allowed",
        )
        up_down(
            "db.client.connection.idle.max",
            [self._field("max_idle")],
            unit="{connection}",
            description="Maximum idle open connections allowed",
        )
        up_down(
            "db.client.connection.pending_requests",
            [self._field("pending")],
            unit="{request}",
            description="Callers waiting for a connection",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            [self._field("timeouts", polly_only=True)],
            unit="{timeout}",
            description="Connection acquisitions that timed out",
        )
        self._remove_listener: Callable[[], None] | None = None
        self.open()

    def open(self) -> None:
        """Start listening to the registry's duration events (again, after :meth:`close`)."""
        self.active = True
        if self._remove_listener is None:
            self._remove_listener = self._registry.add_listener(self._on_duration)

    # --- registration -----------------------------------------------------------------------------

    def add_engine(self, engine: Any, name: str | None = None) -> str:
        source = EngineSource(engine, name)
        if self._add(source):
            self._listen_engine(source)
        return source.name

    def add_redis_pool(self, pool: Any, name: str | None = None) -> str:
        source = RedisPoolSource(pool, name)
        self._add(source)
        return source.name

    def _add(self, source: EngineSource | RedisPoolSource) -> bool:
        with self._lock:
            for key in [k for k, s in self._sources.items() if not s.alive()]:
                del self._sources[key]
            existing = self._sources.get(source.name)
            if existing is not None:
                if existing.ref == source.ref:  # the same pool again: nothing to do
                    return False
                logger.warning(
                    "a pool named %r is registered already; give the new one a distinct name "
                    "(name=..., or pool_logging_name= for SQLAlchemy); ignoring it",
                    source.name,
                )
                return False
            if len(self._sources) >= MAX_SOURCES:
                logger.warning(
                    "%d pools registered already (the limit); ignoring %r", MAX_SOURCES, source.name
                )
                return False
            self._sources[source.name] = source
            self._cache = None
            return True

    def _listen_engine(self, source: EngineSource) -> None:
        from sqlalchemy import event

        engine = source.engine
        attrs = {POOL: source.name, SYSTEM: source.system}
        use_time = self._histograms["use_time"]
        create_time = self._histograms["create_time"]

        def on_do_connect(_dialect: Any, record: Any, _cargs: Any, _cparams: Any) -> None:
            record.info[_START_KEY] = time.perf_counter()

        def on_connect(_dbapi: Any, record: Any) -> None:
            started = record.info.pop(_START_KEY, None)
            if started is not None and self.active:
                create_time.record(time.perf_counter() - started, attrs)

        def on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
            record.info[_START_KEY] = time.perf_counter()

        def on_checkin(_dbapi: Any, record: Any) -> None:
            started = record.info.pop(_START_KEY, None)
            if started is not None and self.active:
                use_time.record(time.perf_counter() - started, attrs)

        event.listen(engine, "do_connect", on_do_connect)
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)

    # --- reading ----------------------------------------------------------------------------------

    def snapshot(self, refresh: bool = False) -> list[tuple[PoolStats, bool]]:
        """``(stats, from_polly)`` for every pool, deduplicated by name.

        The SDK calls callbacks in registration order, so the first pool callback of a collection
        (``db.client.connection.count``) refreshes and the others reuse that read (if younger than
        ``SNAPSHOT_MAX_AGE``): one read of each pool per collection.
        """
        now = self._clock()
        with self._lock:
            if not refresh and self._cache is not None and now - self._cache[0] <= SNAPSHOT_MAX_AGE:
                return self._cache[1]
            sources = list(self._sources.values())
        seen: set[str] = set()
        out: list[tuple[PoolStats, bool]] = []
        polly_stats: list[PoolStats] = [
            s for s in self._registry.collect("db_pool") if isinstance(s, PoolStats)
        ]
        polly_stats += [s.pool for s in self._registry.collect("redis_pool") if isinstance(s, RedisStats)]
        out.extend((stats, True) for stats in polly_stats if self._keep(stats.name, seen))
        for source in sources:
            try:
                read = source.read()
            except Exception:  # a pool in a strange state must not end the collection
                logger.exception("reading pool %s failed", source.name)
                continue
            if read is not None and self._keep(read.name, seen):
                out.append((read, False))
        with self._lock:
            self._cache = (now, out)
        return out

    def _keep(self, name: str, seen: set[str]) -> bool:
        if name in seen:
            if name not in self._duplicates_logged and len(self._duplicates_logged) < MAX_SOURCES:
                self._duplicates_logged.add(name)
                logger.info("pool %r is reported by two sources; keeping the first", name)
            return False
        seen.add(name)
        return True

    def _observe_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return ()
        native_redis = redis_native_connection_count()
        out: list[Observation] = []
        for stats, from_polly in self.snapshot(refresh=True):
            if native_redis and stats.system == "redis" and not from_polly:
                continue
            base = {POOL: stats.name, SYSTEM: stats.system}
            out.append(Observation(stats.idle, {**base, STATE: "idle"}))
            out.append(Observation(stats.used, {**base, STATE: "used"}))
        return out

    def _field(
        self, field: str, polly_only: bool = False
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            return [
                Observation(getattr(stats, field), {POOL: stats.name, SYSTEM: stats.system})
                for stats, from_polly in self.snapshot()
                if getattr(stats, field) >= 0 and (from_polly or not polly_only)
            ]

        return callback

    def _on_duration(self, event: DurationEvent) -> None:
        if self.active and event.kind in self._histograms:
            self._histograms[event.kind].record(event.seconds, {POOL: event.pool_name, SYSTEM: event.system})

    def close(self) -> None:
        self.active = False
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
