"""A retry-after gate in front of any :class:`~polly.engine.gateway.Gateway`.

Once Discord answers a call with 429 and a retry-after, every further call into the same bucket
(the channel; all DMs share one) is answered locally with
:class:`~polly.errors.RateLimitedError` carrying the time left, without calling Discord, until the
retry-after has passed. Callers already treat that error as "wait this long" (the scheduler holds
the channel, the embed updater and the reaction remover retry after it, the reconciler pauses), so
no part of the engine, reaction removals included, calls into a known retry-after window.

The gate wraps the sandbox and the discord.py adapter alike. The lifecycle and the event methods
pass through (:class:`~polly.engine.pass_through.PassThroughGateway`). The map of
windows holds at most ``max_buckets`` entries (expired ones are dropped first; if all are live the
one ending soonest goes). Clock: ``monotonic`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from polly.clock import Monotonic
from polly.engine.gateway import Gateway
from polly.engine.pass_through import DM_BUCKET, PassThroughGateway
from polly.errors import RateLimitedError

__all__ = ["DM_BUCKET", "RateLimitGate"]

T = TypeVar("T")


class RateLimitGate(PassThroughGateway):
    """``Gateway`` that refuses, locally, calls into a bucket inside its known retry-after."""

    def __init__(
        self, inner: Gateway, *, monotonic: Monotonic = time.monotonic, max_buckets: int = 10_000
    ) -> None:
        super().__init__(inner)
        self._now = monotonic
        self._max = max_buckets
        self._until: dict[int, float] = {}
        self.held = 0  # calls answered locally
        self.rate_limited = 0  # 429s seen from Discord

    def blocked_for(self, bucket: int) -> float:
        """Seconds left in ``bucket``'s retry-after window (0 when open)."""
        until = self._until.get(bucket)
        if until is None:
            return 0.0
        left = until - self._now()
        if left <= 0:
            del self._until[bucket]
            return 0.0
        return left

    async def _through(self, bucket: int, what: str, call: Callable[[], Awaitable[T]]) -> T:
        left = self.blocked_for(bucket)
        if left > 0:
            self.held += 1
            msg = f"{what}: held for {left:.3f} s, the rest of a retry-after Discord gave"
            raise RateLimitedError(msg, left)
        try:
            return await call()
        except RateLimitedError as err:
            self.rate_limited += 1
            self._block(bucket, self._now() + err.retry_after_seconds)
            raise

    def _block(self, bucket: int, until: float) -> None:
        if bucket not in self._until and len(self._until) >= self._max:
            now = self._now()
            self._until = {b: u for b, u in self._until.items() if u > now}
            if len(self._until) >= self._max:
                del self._until[min(self._until, key=self._until.__getitem__)]
        self._until[bucket] = max(until, self._until.get(bucket, 0.0))
