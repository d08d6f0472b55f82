"""Cache and circuit-breaker metrics from the application's :class:`~.seam.StatsSource` objects.

Per cache (``polly.cache.name``): ``polly.cache.entry.count`` and ``polly.cache.entry.max``
(``{entry}``), and the cumulative ``polly.cache.hits`` (``{hit}``), ``polly.cache.misses``
(``{miss}``), ``polly.cache.evictions`` (``{eviction}``), ``polly.cache.expirations``
(``{expiration}``). polly reports its Redis fallback cache as cache ``redis.fallback`` (entries,
max, hits only: misses, evictions and expirations of that cache are not reported).

Per breaker (``db.client.connection.pool.name`` of the pool it guards): ``polly.redis.breaker.state``
is a *state set*, as ``hw.status`` is: one series per state (``polly.redis.breaker.state`` attribute
``closed`` | ``half_open`` | ``open``), value 1 for the current state and 0 for the others. Its unit
is ``{state}``, so its Prometheus name is ``polly_redis_breaker_state`` on every path.
``polly.redis.breaker.openings`` (``{opening}``) counts openings.

Names come from the sources, which cap them, so attribute sets stay bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.instrumentation.polly.seam import BREAKER_STATES, BreakerReading, CacheReading, StatsSource
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

CACHE = "polly.cache.name"
POOL = "db.client.connection.pool.name"
BREAKER_STATE = "polly.redis.breaker.state"
FALLBACK_CACHE = "redis.fallback"

_Reader = Callable[[CacheReading], int | None]


class CacheSignals:
    def __init__(
        self, meter: Meter, sources: Sequence[StatsSource], pool_name: Callable[[str], str] = str
    ) -> None:
        self.active = True
        self._sources = tuple(sources)
        self._pool_name = pool_name
        updown = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        updown("polly.cache.entry.count", [self._cache(lambda c: c.size)], unit="{entry}",
               description="Entries in the cache")  # fmt: skip
        updown("polly.cache.entry.max", [self._cache(lambda c: c.max_size)], unit="{entry}",
               description="The cache's entry limit")  # fmt: skip
        counter("polly.cache.hits", [self._cache(lambda c: c.hits)], unit="{hit}", description="Cache hits")
        counter("polly.cache.misses", [self._cache(lambda c: c.misses if c.name != FALLBACK_CACHE else None)],
                unit="{miss}", description="Cache misses")  # fmt: skip
        counter(
            "polly.cache.evictions",
            [self._cache(lambda c: c.evictions if c.name != FALLBACK_CACHE else None)],
            unit="{eviction}", description="Entries evicted to stay within the limit",
        )  # fmt: skip
        counter(
            "polly.cache.expirations",
            [self._cache(lambda c: c.expirations if c.name != FALLBACK_CACHE else None)],
            unit="{expiration}", description="Entries dropped because their TTL passed",
        )  # fmt: skip
        updown("polly.redis.breaker.state", [self._observe_state], unit="{state}",
               description="Breaker state set: 1 for the current state, 0 for the others")  # fmt: skip
        counter("polly.redis.breaker.openings", [self._breaker(lambda b: b.openings)], unit="{opening}",
                description="Times the circuit breaker opened")  # fmt: skip

    def _collect(self, what: str) -> list[object]:
        out: list[object] = []
        for source in self._sources:
            try:
                out.extend(getattr(source, what)())
            except Exception:
                logger.exception("stats source %r failed", source)
        return out

    def _caches(self) -> list[CacheReading]:
        return self._collect("caches")  # type: ignore[return-value]

    def _breakers(self) -> list[BreakerReading]:
        return self._collect("breakers")  # type: ignore[return-value]

    def _cache(self, read: _Reader) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            values = [(read(cache), cache.name) for cache in self._caches()]
            return [Observation(v, {CACHE: name}) for v, name in values if v is not None]

        return callback

    def _observe_state(self, _options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return ()
        out: list[Observation] = []
        for breaker in self._breakers():
            pool = self._pool_name(breaker.pool_name)
            out.extend(
                Observation(int(breaker.state == state), {POOL: pool, BREAKER_STATE: state})
                for state in BREAKER_STATES
            )
        return out

    def _breaker(
        self, read: Callable[[BreakerReading], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            return [Observation(read(b), {POOL: self._pool_name(b.pool_name)}) for b in self._breakers()]

        return callback
