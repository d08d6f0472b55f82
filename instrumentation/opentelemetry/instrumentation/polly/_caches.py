"""Cache and Redis-breaker metrics from ``polly.stats.registry``.

Per cache (``polly.cache.name``): ``polly.cache.entry.count`` and ``polly.cache.entry.max``
(``{entry}``), and the cumulative ``polly.cache.hits`` (``{hit}``), ``polly.cache.misses``
(``{miss}``), ``polly.cache.evictions`` (``{eviction}``), ``polly.cache.expirations``
(``{expiration}``). The Redis fallback cache appears as cache ``redis.fallback`` (entries, max,
hits). Per Redis pool (``db.client.connection.pool.name``): ``polly.redis.breaker.state``
(``1``: 0 closed, 1 half-open, 2 open) and ``polly.redis.breaker.openings`` (``{opening}``).

Names come from registered providers, which the registry caps (256), so attributes stay bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from polly.stats import CacheStats, RedisStats, StatsRegistry

CACHE = "polly.cache.name"
POOL = "db.client.connection.pool.name"
FALLBACK_CACHE = "redis.fallback"

_Reader = Callable[[CacheStats], int | None]


class CacheSignals:
    def __init__(self, meter: Meter, registry: StatsRegistry) -> None:
        self.active = True
        self._registry = registry
        updown = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        updown(
            "polly.cache.entry.count",
            [self._cache(lambda c: c.size)],
            unit="{entry}",
            description="Entries in the cache",
        )
        updown(
            "polly.cache.entry.max",
            [self._cache(lambda c: c.max_size)],
            unit="{entry}",
            description="The cache's entry limit",
        )
        counter("polly.cache.hits", [self._cache(lambda c: c.hits)], unit="{hit}", description="Cache hits")
        counter(
            "polly.cache.misses",
            [self._cache(lambda c: c.misses if c.name != FALLBACK_CACHE else None)],
            unit="{miss}",
            description="Cache misses",
        )
        counter(
            "polly.cache.evictions",
            [self._cache(lambda c: c.evictions if c.name != FALLBACK_CACHE else None)],
            unit="{eviction}",
            description="Entries evicted to stay within the limit",
        )
        counter(
            "polly.cache.expirations",
            [self._cache(lambda c: c.expirations if c.name != FALLBACK_CACHE else None)],
            unit="{expiration}",
            description="Entries dropped because their TTL passed",
        )
        meter.create_observable_gauge(
            "polly.redis.breaker.state",
            [self._breaker(lambda r: r.breaker.value)],
            unit="1",
            description="Redis circuit breaker: 0 closed, 1 half-open, 2 open",
        )
        counter(
            "polly.redis.breaker.openings",
            [self._breaker(lambda r: r.breaker_opened)],
            unit="{opening}",
            description="Times the Redis circuit breaker opened",
        )

    def _caches(self) -> list[CacheStats]:
        caches = [c for c in self._registry.collect("cache") if isinstance(c, CacheStats)]
        caches.extend(
            CacheStats(FALLBACK_CACHE, r.fallback_cache_size, r.fallback_cache_max, r.fallback_hits, 0, 0, 0)
            for r in self._redis()
        )
        return caches

    def _redis(self) -> list[RedisStats]:
        return [r for r in self._registry.collect("redis_pool") if isinstance(r, RedisStats)]

    def _cache(self, read: _Reader) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            values = [(read(cache), cache.name) for cache in self._caches()]
            return [Observation(v, {CACHE: name}) for v, name in values if v is not None]

        return callback

    def _breaker(
        self, read: Callable[[RedisStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            return [Observation(read(r), {POOL: r.pool.name}) for r in self._redis()]

        return callback
