"""Connection pool metrics (``db.client.connection.*``) for every pool in the process.

Where pools come from, each reported once under one name (see ``_naming``):

* the application's :class:`~.seam.StatsSource` objects (polly's own pools, with its waiter and
  timeout counts and wait durations); a discovered pool a source :meth:`~.seam.StatsSource.owns`
  is left to it;
* every SQLAlchemy engine and redis-py pool found by ``_discovery`` (zero-code);
* pools registered by hand (``register_engine`` / ``register_redis_pool``, with a name of choice).

Gauges (observable up-down counters, read at collection): ``db.client.connection.count`` by
``db.client.connection.state`` (idle|used), ``.max``, ``.idle.max``, ``.pending_requests``;
``db.client.connection.timeouts`` is an observable counter of the pool's cumulative count. All
carry ``db.client.connection.pool.name`` and ``db.system.name``. A value the pool class cannot
tell (``-1``) is not reported.

Histograms ``db.client.connection.wait_time`` / ``use_time`` / ``create_time`` (``s``): from the
sources' duration events, and for discovered SQLAlchemy engines from the ``Pool.connect`` wrapper
(wait) and pool events (``checkout``/``checkin``, ``do_connect``/``connect``).

While redis-py's native metrics are on (``_coexist``), redis pools are named as redis-py names
them and the metrics redis-py emits for its pools (``.count`` and ``.create_time`` with its
``CONNECTION_BASIC`` group, ``.timeouts`` and ``.wait_time`` with ``CONNECTION_ADVANCED``) are left to
it for redis pools: one pool name, never two series of one metric for one pool.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.instrumentation.polly import _naming
from opentelemetry.instrumentation.polly._coexist import redis_native_connection_count, redis_native_metrics
from opentelemetry.instrumentation.polly._pool_sources import (
    EngineSource,
    PoolRead,
    RedisPoolSource,
    engine_base_name,
    is_async_engine,
)
from opentelemetry.instrumentation.polly.seam import DurationReading, StatsSource
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SYSTEM = "db.system.name"
#: Pools discovered or registered, at most (a cap like every other set here).
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
_START_KEY = "opentelemetry.instrumentation.polly.start"

_Source = EngineSource | RedisPoolSource


class PoolSignals:
    def __init__(
        self, meter: Meter, sources: Sequence[StatsSource], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.active = True
        self._app = tuple(sources)
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: list[_Source] = []
        self._owned: weakref.WeakSet[Any] = weakref.WeakSet()
        self._by_pool: weakref.WeakKeyDictionary[Any, EngineSource | None] = weakref.WeakKeyDictionary()
        self._cache: tuple[float, list[tuple[PoolRead, bool]]] | None = None
        self._duplicates_logged: set[str] = set()
        self._full_logged = False
        self._histograms = {
            kind: meter.create_histogram(
                f"db.client.connection.{kind}", unit="s", description=desc,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            for kind, desc in (
                ("wait_time", "Time to obtain an open connection from the pool"),
                ("use_time", "Time between borrowing a connection and returning it"),
                ("create_time", "Time to create a new connection"),
            )
        }  # fmt: skip
        up_down = meter.create_observable_up_down_counter
        up_down("db.client.connection.count", [self._observe_count], unit="{connection}",
                description="Connections by state, read from the pool")  # fmt: skip
        up_down("db.client.connection.max", [self._field("max_connections")], unit="{connection}",
                description="Maximum open connections allowed")  # fmt: skip
        up_down("db.client.connection.idle.max", [self._field("max_idle")], unit="{connection}",
                description="Maximum idle open connections allowed")  # fmt: skip
        up_down("db.client.connection.pending_requests", [self._field("pending")], unit="{request}",
                description="Callers waiting for a connection")  # fmt: skip
        meter.create_observable_counter(
            "db.client.connection.timeouts", [self._field("timeouts", "db.client.connection.timeouts")],
            unit="{timeout}",
            description="Connection acquisitions that timed out",
        )  # fmt: skip
        self._removers: list[Callable[[], None]] = []
        self.open()

    def open(self) -> None:
        """Listen to the sources' duration events (again, after :meth:`close`)."""
        self.active = True
        if not self._removers:
            for source in self._app:
                try:
                    self._removers.append(source.add_duration_listener(self._on_duration))
                except Exception:
                    logger.exception("stats source %r refused a duration listener", source)

    def close(self) -> None:
        self.active = False
        for remove in self._removers:
            remove()
        self._removers = []

    # --- discovery sink and registration --------------------------------------------------------

    def _claimed(self, target: Any) -> bool:
        if target in self._owned:
            return True
        for source in self._app:
            try:
                owned = source.owns(target)
            except Exception:  # noqa: BLE001 - a faulty source must not stop discovery
                owned = False
            if owned:
                self._owned.add(target)
                return True
        return False

    def engine_created(self, engine: Any) -> None:
        self.add_engine(engine, None)

    def redis_pool_created(self, pool: Any) -> None:
        self.add_redis_pool(pool, None)

    def add_engine(self, engine: Any, name: str | None = None) -> str | None:
        """Report a SQLAlchemy engine (sync or async); returns its pool name (None if not added)."""
        sync = getattr(engine, "sync_engine", engine)
        with self._lock:
            for known in self._sources:
                if isinstance(known, EngineSource) and known.owns_pool(sync.pool):
                    return known.name
            if self._claimed(sync):
                return None
            final = self._name(name, lambda: engine_base_name(sync), is_async=is_async_engine(sync))
            if final is None:
                return None
            source = EngineSource(sync, final)
            self._sources.append(source)
            self._by_pool.pop(sync.pool, None)  # a checkout seen before it was added: look it up again
            self._cache = None
        self._listen_engine(source)
        return source.name

    def add_redis_pool(self, pool: Any, name: str | None = None) -> str | None:
        """Report a redis-py connection pool (sync or asyncio); returns its pool name."""
        with self._lock:
            for known in self._sources:
                if isinstance(known, RedisPoolSource) and known.owns_pool(pool):
                    return known.name
            is_async = type(pool).__module__.startswith("redis.asyncio")
            final = self._name(name, lambda: _naming.redis_base_name(pool), is_async=is_async)
            if final is None:
                return None
            self._sources.append(RedisPoolSource(pool, final))
            self._cache = None
        return final

    def _name(self, given: str | None, base: Callable[[], str], *, is_async: bool) -> str | None:
        # Under the lock. Drops dead sources first, so names of disposed pools can be reused.
        self._sources = [s for s in self._sources if s.target() is not None]
        taken = {s.name for s in self._sources}
        if len(self._sources) >= MAX_SOURCES:
            if not self._full_logged:
                self._full_logged = True
                logger.warning("%d pools reported already (the limit); ignoring further pools", MAX_SOURCES)
            return None
        if given is None:
            return _naming.unique_name(base(), taken, is_async=is_async)
        if given in taken:
            logger.warning("a pool named %r is reported already; give the new one a distinct name", given)
            return None
        return given

    def _listen_engine(self, source: EngineSource) -> None:
        from sqlalchemy import event

        engine = source.target()
        if engine is None:
            return
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
            started = record.info.pop(_START_KEY, None) if record is not None else None
            if started is not None and self.active:
                use_time.record(time.perf_counter() - started, attrs)

        event.listen(engine, "do_connect", on_do_connect)
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)

    def connect_waited(self, pool: Any, seconds: float) -> None:
        """From the ``Pool.connect`` wrapper: one checkout of ``pool`` took ``seconds``."""
        if not self.active:
            return
        try:
            source = self._by_pool[pool]
        except KeyError:
            with self._lock:
                source = next(
                    (s for s in self._sources if isinstance(s, EngineSource) and s.owns_pool(pool)), None
                )
            if source is None and len(self._by_pool) >= MAX_SOURCES:
                return
            self._by_pool[pool] = source
        if source is not None:
            self._histograms["wait_time"].record(seconds, {POOL: source.name, SYSTEM: source.system})

    # --- reading ----------------------------------------------------------------------------------

    def snapshot(self, refresh: bool = False) -> list[tuple[PoolRead, bool]]:
        """``(read, from_source)`` for every pool, one per name.

        The SDK calls callbacks in registration order, so the first pool callback of a collection
        (``db.client.connection.count``) refreshes and the others reuse that read (if younger than
        ``SNAPSHOT_MAX_AGE``): one read of each pool per collection.
        """
        now = self._clock()
        with self._lock:
            if not refresh and self._cache is not None and now - self._cache[0] <= SNAPSHOT_MAX_AGE:
                return self._cache[1]
            discovered = list(self._sources)
        joined = redis_native_connection_count()
        native = {
            s.native_name: s.reported_name(joined)
            for s in discovered
            if isinstance(s, RedisPoolSource) and s.native_name
        }
        seen: set[str] = set()
        out: list[tuple[PoolRead, bool]] = []
        for app in self._app:
            try:
                readings = list(app.pools())
            except Exception:
                logger.exception("stats source %r failed", app)
                continue
            for r in readings:
                name = native.get(r.name, r.name) if r.system == "redis" else r.name
                read = PoolRead(name, r.system, r.max_connections, r.max_idle, r.used, r.idle, r.pending,
                                r.timeouts)  # fmt: skip
                if self._keep(read.name, seen):
                    out.append((read, True))
        for source in discovered:
            target = source.target()
            if target is None or self._claimed(target):
                continue
            try:
                got = source.read(joined) if isinstance(source, RedisPoolSource) else source.read()
            except Exception:  # a pool in a strange state must not end the collection
                logger.exception("reading pool %s failed", source.name)
                continue
            if got is not None and self._keep(got.name, seen):
                out.append((got, False))
        with self._lock:
            self._cache = (now, out)
        return out

    def redis_name(self, name: str) -> str:
        """The reported name of the redis-py pool a source calls ``name`` (redis-py's own name)."""
        joined = redis_native_connection_count()
        with self._lock:
            for s in self._sources:
                if isinstance(s, RedisPoolSource) and s.native_name == name:
                    return s.reported_name(joined)
        return name

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
        for read, _from_source in self.snapshot(refresh=True):
            if native_redis and read.system == "redis":
                continue  # redis-py reports this one under the same pool name
            base = {POOL: read.name, SYSTEM: read.system}
            out.append(Observation(read.idle, {**base, STATE: "idle"}))
            out.append(Observation(read.used, {**base, STATE: "used"}))
        return out

    def _field(self, field: str, metric: str = "") -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            native = metric in redis_native_metrics() if metric else False
            return [
                Observation(getattr(read, field), {POOL: read.name, SYSTEM: read.system})
                for read, _ in self.snapshot()
                if getattr(read, field) >= 0 and not (native and read.system == "redis")
            ]

        return callback

    def _on_duration(self, event: DurationReading) -> None:
        if self.active and event.kind in self._histograms:
            if event.system == "redis" and f"db.client.connection.{event.kind}" in redis_native_metrics():
                return  # redis-py records this one for its pool
            name = self.redis_name(event.pool_name) if event.system == "redis" else event.pool_name
            self._histograms[event.kind].record(event.seconds, {POOL: name, SYSTEM: event.system})
