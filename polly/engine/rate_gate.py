"""A retry-after gate in front of any :class:`~polly.engine.gateway.Gateway`.

Once Discord answers a call with 429 and a retry-after, every further call into the same bucket
(the channel; all DMs share one) is answered locally with
:class:`~polly.errors.RateLimitedError` carrying the time left, without calling Discord, until the
retry-after has passed. Callers already treat that error as "wait this long" (the scheduler holds
the channel, the embed updater and the reaction remover retry after it, the reconciler pauses), so
no part of the engine, reaction removals included, calls into a known retry-after window.

The gate wraps the sandbox and the discord.py adapter alike. Event methods pass through. The map of
windows holds at most ``max_buckets`` entries (expired ones are dropped first; if all are live the
one ending soonest goes). Clock: ``monotonic`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from polly.engine.gateway import (
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    Gateway,
    PostedMessage,
    ReactionEvent,
    ReactionQueueStats,
    ReactionUser,
)
from polly.errors import RateLimitedError

T = TypeVar("T")
DM_BUCKET = -1


class RateLimitGate:
    """``Gateway`` that refuses, locally, calls into a bucket inside its known retry-after."""

    def __init__(
        self, inner: Gateway, *, monotonic: Callable[[], float] = time.monotonic, max_buckets: int = 10_000
    ) -> None:
        self.inner = inner
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

    async def _call(self, bucket: int, what: str, call: Callable[[], Awaitable[T]]) -> T:
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

    # --- pass-through ------------------------------------------------------------------------------

    @property
    def bot_user_id(self) -> int:
        return self.inner.bot_user_id

    def is_ready(self) -> bool:
        return self.inner.is_ready()

    async def start(self) -> None:
        await self.inner.start()

    async def wait_until_ready(self) -> None:
        await self.inner.wait_until_ready()

    async def close(self) -> None:
        await self.inner.close()

    async def next_reaction_event(self) -> ReactionEvent:
        return await self.inner.next_reaction_event()

    def event_stats(self) -> ReactionQueueStats:
        return self.inner.event_stats()

    # --- gated REST calls --------------------------------------------------------------------------

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Sequence[str], content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        what = f"post a poll to channel {channel_id}"
        return await self._call(channel_id, what, lambda: self.inner.post_poll_message(
            channel_id, embed=embed, emojis=emojis, content=content, allowed_mentions=allowed_mentions
        ))  # fmt: skip

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        await self._call(channel_id, f"edit message {message_id}", lambda: self.inner.edit_message(
            channel_id, message_id, embed=embed, content=content
        ))  # fmt: skip

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._call(
            channel_id,
            f"add reaction to {message_id}",
            lambda: self.inner.add_reaction(channel_id, message_id, emoji),
        )

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        await self._call(
            channel_id,
            f"clear reactions of {message_id}",
            lambda: self.inner.clear_reactions(channel_id, message_id),
        )

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        what = f"remove a reaction from {message_id}"
        await self._call(channel_id, what, lambda: self.inner.remove_reaction(
            channel_id, message_id, emoji, user_id
        ))  # fmt: skip

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        return await self._call(
            channel_id,
            f"fetch message {message_id}",
            lambda: self.inner.fetch_message(channel_id, message_id),
        )

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        what = f"list reaction users of {message_id}"
        return await self._call(channel_id, what, lambda: self.inner.list_reaction_users(
            channel_id, message_id, emoji, after=after, limit=limit
        ))  # fmt: skip

    async def send_message(
        self, channel_id: int, *, content: str | None = None, embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS, attachment: Path | None = None,
    ) -> int:  # fmt: skip
        return await self._call(channel_id, f"send to channel {channel_id}", lambda: self.inner.send_message(
            channel_id, content=content, embed=embed, allowed_mentions=allowed_mentions, attachment=attachment
        ))  # fmt: skip

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        return await self._call(
            DM_BUCKET, f"DM user {user_id}", lambda: self.inner.send_dm(user_id, content=content, embed=embed)
        )
