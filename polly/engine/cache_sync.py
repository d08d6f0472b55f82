"""Keeping upstream's Redis caches honest while the engine changes polls.

Upstream's web dashboard caches a poll's results under ``cache:poll_results:{id}`` (300 s),
``cache:live_poll_results:{id}`` and ``cache:poll_dashboard:{id}`` (10 s while open, a week once
closed) and ``cache:closed_poll_results:{id}``. When the engine records votes (at most once per embed
interval per poll) or closes a poll, it deletes those keys so the dashboard recomputes them, as
upstream's own services invalidate on every change. While Redis is down the breaker answers at once
and nothing waits.
"""

from __future__ import annotations

from polly.redis_client import RedisClient

POLL_CACHE_KEYS = ("poll_results", "live_poll_results", "poll_dashboard", "closed_poll_results")


class PollCacheInvalidator:
    """Deletes a poll's cached results in upstream's key layout."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.invalidations = 0

    async def __call__(self, poll_id: int) -> None:
        await self._client.delete(*(f"cache:{name}:{poll_id}" for name in POLL_CACHE_KEYS))
        self.invalidations += 1
