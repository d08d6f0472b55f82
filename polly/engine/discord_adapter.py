"""The :class:`~polly.engine.gateway.Gateway` on discord.py.

The client asks only for the ``guilds`` and ``guild_reactions`` intents (no message content, no
members), keeps no message cache (``max_messages=None``), no member cache and no guild chunking:
the engine reads what it needs through REST and raw events, so nothing here grows with traffic.
Votes arrive through ``on_raw_reaction_add``/``on_raw_reaction_remove``, which Discord sends for
every message, cached or not, including messages posted before a restart.

Rate limits: discord.py keeps per-bucket limits and waits out a 429 itself when the wait is at
most ``max_ratelimit_wait_seconds`` (≥ 30, discord.py's floor); a longer wait, or a 429 from
Discord's edge without rate-limit data, becomes :class:`~polly.errors.RateLimitedError` with the
wait. discord.py retries 500/502/504/524 up to five times (1 + 3 + 5 + 7 + 9 s) before giving up;
every operation is also bounded by ``request_timeout_seconds``.

``api_base`` points discord.py's REST client elsewhere (tests, proxies) by setting
``discord.http.Route.BASE``, which is process-wide: one base per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.http
from pydantic import SecretStr

from polly.engine.gateway import (
    MAX_REACTIONS_PER_MESSAGE,
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    PostedMessage,
    ReactionCount,
    ReactionEvent,
    ReactionEventQueue,
    ReactionQueueStats,
    ReactionUser,
    check_attachment,
    check_message,
    check_page_limit,
)
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError, ServerError

logger = logging.getLogger(__name__)

MIN_RATELIMIT_WAIT_SECONDS = 30.0  # discord.py raises max_ratelimit_timeout below this to 30
# A 429 from Discord's edge (Cloudflare) carries no JSON body; without a Retry-After header, back off
# for a minute rather than hammer a ban.
_EDGE_BAN_DEFAULT_RETRY_SECONDS = 60.0


def to_reaction_event(payload: discord.RawReactionActionEvent, bot_user_id: int | None) -> ReactionEvent:
    """Convert discord.py's raw reaction payload. ``emoji`` is ``str(payload.emoji)`` (upstream's
    comparison); ``is_bot`` is the member's flag on adds, and on removes (no member) whether the
    user is the bot itself."""
    member = payload.member
    is_bot = member.bot if member is not None else payload.user_id == bot_user_id
    return ReactionEvent(
        kind="add" if payload.event_type == "REACTION_ADD" else "remove",
        guild_id=payload.guild_id,
        channel_id=payload.channel_id,
        message_id=payload.message_id,
        user_id=payload.user_id,
        emoji=str(payload.emoji),
        is_bot=is_bot,
    )


def reaction_route_emoji(emoji: str) -> str:
    """The emoji as Discord's reaction routes want it.

    Unicode stays as is; custom ``<:name:id>`` and ``<a:name:id>`` become ``name:id``.
    """
    if not emoji:
        msg = "emoji must be a non-empty string (Unicode, or <:name:id> / <a:name:id> for custom)"
        raise ValueError(msg)
    partial = discord.PartialEmoji.from_str(emoji)
    return f"{partial.name}:{partial.id}" if partial.id is not None else emoji


def to_discord_embed(embed: Embed) -> discord.Embed:
    """Build the discord.py embed for polly's :class:`~polly.engine.gateway.Embed`."""
    out = discord.Embed(
        title=embed.title, description=embed.description, colour=embed.colour, timestamp=embed.timestamp
    )
    for f in embed.fields:
        out.add_field(name=f.name, value=f.value, inline=f.inline)
    if embed.footer is not None:
        out.set_footer(text=embed.footer)
    return out


def to_discord_mentions(mentions: AllowedMentions) -> discord.AllowedMentions:
    """Exactly the listed roles and users (and @everyone if allowed) may be pinged; nobody else."""
    return discord.AllowedMentions(
        everyone=mentions.everyone,
        roles=[discord.Object(r) for r in mentions.roles] if mentions.roles else False,
        users=[discord.Object(u) for u in mentions.users] if mentions.users else False,
        replied_user=False,
    )


class _PollyClient(discord.Client):
    """discord.Client whose ready and raw reaction hooks call back into the gateway."""

    def __init__(
        self,
        ready: asyncio.Event,
        offer: Callable[[discord.RawReactionActionEvent], None],
        **options: Any,  # discord.Client's own keyword options
    ) -> None:
        super().__init__(**options)
        self._polly_ready = ready
        self._polly_offer = offer

    async def on_ready(self) -> None:
        self._polly_ready.set()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self._polly_offer(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self._polly_offer(payload)


class DiscordGateway:
    """The Discord gateway on discord.py. Construct it, ``await start()`` in a supervised task.

    ``max_events`` bounds the reaction event queue; ``max_connections`` the HTTP connection pool;
    ``request_timeout_seconds`` each REST operation (including discord.py's own retries and
    rate-limit waits); ``max_ratelimit_wait_seconds`` (≥ 30) the longest 429 wait absorbed silently.
    """

    def __init__(
        self,
        token: SecretStr,
        *,
        api_base: str | None = None,
        max_events: int = 10_000,
        max_connections: int = 16,
        request_timeout_seconds: float = 60.0,
        max_ratelimit_wait_seconds: float = MIN_RATELIMIT_WAIT_SECONDS,
    ) -> None:
        if max_ratelimit_wait_seconds < MIN_RATELIMIT_WAIT_SECONDS:
            msg = (
                "max_ratelimit_wait_seconds must be at least 30 (discord.py's floor), "
                f"got {max_ratelimit_wait_seconds}"
            )
            raise ValueError(msg)
        if request_timeout_seconds <= 0 or max_connections < 1:
            msg = (
                f"request_timeout_seconds must be > 0 and max_connections >= 1, got "
                f"{request_timeout_seconds} and {max_connections}"
            )
            raise ValueError(msg)
        if api_base is not None:
            discord.http.Route.BASE = api_base.rstrip("/")
        self._token = token
        self._max_connections = max_connections
        self._request_timeout_seconds = request_timeout_seconds
        self._max_wait = max_ratelimit_wait_seconds
        self._events = ReactionEventQueue(max_events)
        self._ready = asyncio.Event()
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        self._client = _PollyClient(
            self._ready,
            self._offer,
            intents=intents,
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_ratelimit_timeout=max_ratelimit_wait_seconds,
        )

    def __repr__(self) -> str:
        return f"DiscordGateway(base={discord.http.Route.BASE!r}, ready={self.is_ready()})"

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def bot_user_id(self) -> int:
        user = self._client.user
        if user is None:
            msg = "the bot is not logged in yet: start() must log in before bot_user_id is known"
            raise GatewayError(msg)
        return user.id

    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._client.is_closed()

    async def login(self) -> None:
        """Log in over REST only (no gateway connection): enough for every REST operation."""
        if self._client.user is not None:
            return
        self._client.http.connector = aiohttp.TCPConnector(limit=self._max_connections)
        try:
            async with self._call("log in"):
                await self._client.login(self._token.get_secret_value())
        except GatewayError:
            raise
        except discord.LoginFailure as err:
            msg = "log in: Discord rejected the token (401); check DISCORD_TOKEN"
            raise GatewayError(msg) from err

    async def start(self) -> None:
        await self.login()
        try:
            await self._client.connect(reconnect=True)
        except (discord.GatewayNotFound, discord.ConnectionClosed) as err:
            msg = f"the Discord gateway connection failed: {type(err).__name__}"
            raise ServerError(msg) from err
        finally:
            self._ready.clear()

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    async def close(self) -> None:
        self._ready.clear()
        await self._client.close()

    # --- events ------------------------------------------------------------------------------------

    def _offer(self, payload: discord.RawReactionActionEvent) -> None:
        user = self._client.user
        if not self._events.offer(to_reaction_event(payload, user.id if user else None)):
            logger.debug("reaction event queue full (%d): dropped one", self._events.max_events)

    async def next_reaction_event(self) -> ReactionEvent:
        return await self._events.get()

    def event_stats(self) -> ReactionQueueStats:
        return self._events.stats()

    # --- REST --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        """Bound the operation by the request timeout and map discord.py's failures to polly's."""
        try:
            async with asyncio.timeout(self._request_timeout_seconds):
                yield
        except discord.RateLimited as err:
            msg = (
                f"{what}: rate limited for {err.retry_after:.2f} s "
                f"(longer than the {self._max_wait:g} s the client waits)"
            )
            raise RateLimitedError(msg, err.retry_after) from err
        except discord.NotFound as err:
            msg = f"{what}: not found (404, Discord code {err.code})"
            raise NotFoundError(msg) from err
        except discord.Forbidden as err:
            msg = f"{what}: forbidden (403, Discord code {err.code}): {err.text}"
            raise ForbiddenError(msg) from err
        except discord.HTTPException as err:
            if err.status == 429:
                retry = _retry_after_header(err.response.headers)
                msg = f"{what}: rate limited at Discord's edge (429); retry after {retry:g} s"
                raise RateLimitedError(msg, retry) from err
            if err.status >= 500:
                msg = f"{what}: Discord server error (HTTP {err.status}) after discord.py's retries"
                raise ServerError(msg) from err
            msg = f"{what}: Discord answered HTTP {err.status} (code {err.code}): {err.text}"
            raise GatewayError(msg) from err
        except TimeoutError as err:
            msg = f"{what}: no answer within the {self._request_timeout_seconds:g} s request timeout"
            raise ServerError(msg) from err
        except (aiohttp.ClientError, OSError) as err:
            msg = f"{what}: transport failure ({type(err).__name__})"
            raise ServerError(msg) from err

    def _message(self, channel_id: int, message_id: int) -> discord.PartialMessage:
        if self._client.user is None:
            msg = "not logged in: start() (or login()) must run before REST operations"
            raise GatewayError(msg)
        return self._client.get_partial_messageable(channel_id).get_partial_message(message_id)

    async def post_poll_message(
        self,
        channel_id: int,
        *,
        embed: Embed,
        emojis: Sequence[str],
        content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:
        if len(emojis) > MAX_REACTIONS_PER_MESSAGE:
            msg = f"a poll message takes at most {MAX_REACTIONS_PER_MESSAGE} reactions, got {len(emojis)}"
            raise ValueError(msg)
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
        if embed is None and content is None:
            msg = "edit_message needs an embed, content or both; got neither"
            raise ValueError(msg)
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
        self,
        channel_id: int,
        *,
        content: str | None = None,
        embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
        attachment: Path | None = None,
    ) -> int:
        check_message(content, embed, attachment)
        check_attachment(attachment)
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


def _retry_after_header(headers: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return _EDGE_BAN_DEFAULT_RETRY_SECONDS
