"""Keeping upstream's Redis caches honest while the engine changes polls.

Upstream's web dashboard caches a poll's results under ``cache:poll_results:{id}`` (300 s),
``cache:live_poll_results:{id}`` and ``cache:poll_dashboard:{id}`` (10 s while open, a week once
closed) and ``cache:closed_poll_results:{id}``. When the engine records votes (at most once per embed
interval per poll) or closes a poll, it deletes those keys so the dashboard recomputes them, as
upstream's own services invalidate on every change. While Redis is down the breaker answers at once
and nothing waits.
"""

from __future__ import annotations

from polly.redis import RedisConnector

POLL_CACHE_KEYS = ("poll_results", "live_poll_results", "poll_dashboard", "closed_poll_results")


class PollCacheInvalidator:
    """Deletes a poll's cached results in upstream's key layout."""

    def __init__(self, redis: RedisConnector) -> None:
        self._redis = redis
        self.invalidations = 0

    async def __call__(self, poll_id: int) -> None:
        keys = [f"cache:{name}:{poll_id}" for name in POLL_CACHE_KEYS]
        self._redis.forget(*keys)  # the fallback cache must not answer with the old results either
        await self._redis.run(lambda r: r.delete(*keys), 0, "DEL")
        self.invalidations += 1
