"""Conversions between polly's gateway types and discord.py's (values and errors), for
:mod:`polly.engine.discord_adapter`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
import discord

from polly.engine.gateway import AllowedMentions, Embed, ReactionEvent
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError, ServerError

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


def retry_after_header(headers: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return _EDGE_BAN_DEFAULT_RETRY_SECONDS


@contextlib.asynccontextmanager
async def discord_errors(what: str, timeout_seconds: float, max_wait_seconds: float) -> AsyncIterator[None]:
    """Bound the operation by ``timeout_seconds`` and map discord.py's failures to polly's
    (see :mod:`polly.engine.gateway`); ``max_wait_seconds`` is the client's longest absorbed 429."""
    try:
        async with asyncio.timeout(timeout_seconds):
            yield
    except discord.RateLimited as err:
        msg = (
            f"{what}: rate limited for {err.retry_after:.2f} s "
            f"(longer than the {max_wait_seconds:g} s the client waits)"
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
            retry = retry_after_header(err.response.headers)
            msg = f"{what}: rate limited at Discord's edge (429); retry after {retry:g} s"
            raise RateLimitedError(msg, retry) from err
        if err.status >= 500:
            msg = f"{what}: Discord server error (HTTP {err.status}) after discord.py's retries"
            raise ServerError(msg) from err
        msg = f"{what}: Discord answered HTTP {err.status} (code {err.code}): {err.text}"
        raise GatewayError(msg) from err
    except TimeoutError as err:
        msg = f"{what}: no answer within the {timeout_seconds:g} s request timeout"
        raise ServerError(msg) from err
    except (aiohttp.ClientError, OSError) as err:
        msg = f"{what}: transport failure ({type(err).__name__})"
        raise ServerError(msg) from err
