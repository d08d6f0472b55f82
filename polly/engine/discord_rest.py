"""The REST half of :class:`~polly.engine.discord_adapter.DiscordGateway`: the Discord operations.

Each operation is one discord.py call (a poll message: the send, then one call per reaction) inside
:func:`~polly.engine.discord_convert.discord_errors`, which bounds it by ``request_timeout_seconds``
and turns discord.py's failures into polly's (a 429 longer than ``max_ratelimit_wait_seconds`` is
:class:`~polly.errors.RateLimitedError`). Messages are addressed as partial messages: nothing is
fetched or cached to call them. An operation before log-in raises :class:`~polly.errors.GatewayError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import discord

from polly.engine.discord_connection import PollyClient
from polly.engine.discord_convert import (
    discord_errors,
    reaction_route_emoji,
    to_discord_embed,
    to_discord_mentions,
)
from polly.engine.gateway import (
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    PostedMessage,
    ReactionCount,
    ReactionUser,
    check_edit,
    check_message,
    check_page_limit,
    check_poll_emojis,
)
from polly.errors import GatewayError

# The adapter's logger: these lines are the gateway's, wherever the code sits.
logger = logging.getLogger("polly.engine.discord_adapter")


class DiscordRest:
    """The REST operations of :class:`~polly.engine.gateway.Gateway` on a discord.py client.

    The gateway sets ``_client``, ``_request_timeout_seconds`` and ``_max_wait`` (the longest 429
    wait discord.py absorbs).
    """

    _client: PollyClient
    _request_timeout_seconds: float
    _max_wait: float

    def _call(self, what: str) -> contextlib.AbstractAsyncContextManager[None]:
        return discord_errors(what, self._request_timeout_seconds, self._max_wait)

    def _message(self, channel_id: int, message_id: int) -> discord.PartialMessage:
        if self._client.user is None:
            msg = "not logged in: start() (or login()) must run before REST operations"
            raise GatewayError(msg)
        return self._client.get_partial_messageable(channel_id).get_partial_message(message_id)

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Sequence[str], content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        check_poll_emojis(emojis)
        routes = [reaction_route_emoji(e) for e in emojis]
        message_id = await self.send_message(
            channel_id, content=content, embed=embed, allowed_mentions=allowed_mentions
        )
        missing: list[str] = []
        for emoji, route in zip(emojis, routes, strict=True):
            try:
                async with self._call(f"add reaction {emoji} to message {message_id}"):
                    await self._message(channel_id, message_id).add_reaction(route)
            except GatewayError as err:
                logger.warning("poll message %d posted without reaction %s: %s", message_id, emoji, err)
                missing.append(emoji)
        return PostedMessage(message_id, tuple(missing))

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        check_edit(embed, content)
        if content is not None:
            check_message(content, embed)
        message = self._message(channel_id, message_id)
        async with self._call(f"edit message {message_id} in channel {channel_id}"):
            if embed is None:
                await message.edit(content=content)
            elif content is None:
                await message.edit(embed=to_discord_embed(embed))
            else:
                await message.edit(content=content, embed=to_discord_embed(embed))

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        route = reaction_route_emoji(emoji)
        async with self._call(f"add reaction {emoji} to message {message_id}"):
            await self._message(channel_id, message_id).add_reaction(route)

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        async with self._call(f"clear reactions of message {message_id}"):
            await self._message(channel_id, message_id).clear_reactions()

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        route = reaction_route_emoji(emoji)
        async with self._call(f"remove reaction {emoji} of user {user_id} from message {message_id}"):
            await self._message(channel_id, message_id).remove_reaction(route, discord.Object(user_id))

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        async with self._call(f"fetch message {message_id} in channel {channel_id}"):
            message = await self._message(channel_id, message_id).fetch()
        return FetchedMessage(
            message_id=message.id,
            channel_id=message.channel.id,
            reactions=tuple(ReactionCount(str(r.emoji), r.count, r.me) for r in message.reactions),
        )

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        check_page_limit(limit)
        route = reaction_route_emoji(emoji)
        self._message(channel_id, message_id)  # raises before login
        async with self._call(f"list users of reaction {emoji} on message {message_id}"):
            users = await self._client.http.get_reaction_users(
                channel_id, message_id, route, limit, after=after or None
            )
        return tuple(ReactionUser(int(u["id"]), bool(u.get("bot", False))) for u in users)

    async def send_message(
        self, channel_id: int, *, content: str | None = None, embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS, attachment: Path | None = None,
    ) -> int:  # fmt: skip
        check_message(content, embed, attachment)
        channel = self._message(channel_id, 0).channel
        async with self._call(f"send a message to channel {channel_id}"):
            sent = await channel.send(
                content=content,
                embed=to_discord_embed(embed) if embed is not None else None,  # type: ignore[arg-type]  # send() accepts None
                allowed_mentions=to_discord_mentions(allowed_mentions),
                file=discord.File(attachment) if attachment is not None else None,  # type: ignore[arg-type]  # send() accepts None
            )
        return sent.id

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        check_message(content, embed)
        self._message(0, 0)  # raises before login
        async with self._call(f"send a DM to user {user_id}"):
            channel = await self._client.create_dm(discord.Object(user_id))
            sent = await channel.send(
                content=content,
                embed=to_discord_embed(embed) if embed is not None else None,  # type: ignore[arg-type]  # send() accepts None
                allowed_mentions=discord.AllowedMentions.none(),
            )
        return sent.id
