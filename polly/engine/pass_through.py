"""A :class:`~polly.engine.gateway.Gateway` in front of another one.

:class:`PassThroughGateway` passes the lifecycle and the events to ``inner`` and every REST call
through one hook, :meth:`PassThroughGateway._through`, with the call's bucket (its channel; all DMs
share :data:`DM_BUCKET`, as Discord's rate limits do) and a few words saying what it does. A
subclass overrides the hook to act around the calls: :class:`~polly.engine.rate_gate.RateLimitGate`
answers calls into a known retry-after locally; the soak's
:class:`~polly.sandbox.soak_check.ReplicaGateway` counts them.
"""

from __future__ import annotations

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

T = TypeVar("T")
DM_BUCKET = -1


class PassThroughGateway:
    """``Gateway`` that hands everything to ``inner``, each REST call through :meth:`_through`."""

    def __init__(self, inner: Gateway) -> None:
        self.inner = inner

    async def _through(self, bucket: int, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Make ``call`` (one REST call into ``bucket``); the base just awaits it."""
        del bucket, what
        return await call()

    # --- lifecycle and events ----------------------------------------------------------------------

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

    # --- REST calls, each through the hook ---------------------------------------------------------

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Sequence[str], content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        what = f"post a poll to channel {channel_id}"
        return await self._through(channel_id, what, lambda: self.inner.post_poll_message(
            channel_id, embed=embed, emojis=emojis, content=content, allowed_mentions=allowed_mentions
        ))  # fmt: skip

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        await self._through(channel_id, f"edit message {message_id}", lambda: self.inner.edit_message(
            channel_id, message_id, embed=embed, content=content
        ))  # fmt: skip

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        what = f"add reaction to {message_id}"
        await self._through(channel_id, what, lambda: self.inner.add_reaction(channel_id, message_id, emoji))

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        what = f"clear reactions of {message_id}"
        await self._through(channel_id, what, lambda: self.inner.clear_reactions(channel_id, message_id))

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        what = f"remove a reaction from {message_id}"
        await self._through(channel_id, what, lambda: self.inner.remove_reaction(
            channel_id, message_id, emoji, user_id
        ))  # fmt: skip

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        what = f"fetch message {message_id}"
        return await self._through(channel_id, what, lambda: self.inner.fetch_message(channel_id, message_id))

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        what = f"list reaction users of {message_id}"
        return await self._through(channel_id, what, lambda: self.inner.list_reaction_users(
            channel_id, message_id, emoji, after=after, limit=limit
        ))  # fmt: skip

    async def send_message(
        self, channel_id: int, *, content: str | None = None, embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS, attachment: Path | None = None,
    ) -> int:  # fmt: skip
        what = f"send to channel {channel_id}"
        return await self._through(channel_id, what, lambda: self.inner.send_message(
            channel_id, content=content, embed=embed, allowed_mentions=allowed_mentions, attachment=attachment
        ))  # fmt: skip

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        what = f"DM user {user_id}"
        return await self._through(
            DM_BUCKET, what, lambda: self.inner.send_dm(user_id, content=content, embed=embed)
        )
