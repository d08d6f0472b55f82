"""The Discord boundary: the operations and events the engine needs, in polly's own types.

The engine talks to Discord only through :class:`Gateway`. Two implementations exist:
:class:`polly.engine.discord_adapter.DiscordGateway` (discord.py) and
:class:`polly.sandbox.gateway.SandboxGateway` (an in-process stand-in with fault injection).
No discord.py type crosses this boundary.

Failures are polly's own (:mod:`polly.errors`): :class:`~polly.errors.NotFoundError` (404: the
message, channel or reaction is gone), :class:`~polly.errors.ForbiddenError` (403: a permission is
missing, or the user does not accept DMs), :class:`~polly.errors.RateLimitedError` (429 that the
library did not absorb; ``retry_after_seconds`` says when to try again),
:class:`~polly.errors.ServerError` (5xx, a transport failure or a request timeout: transient) and
plain :class:`~polly.errors.GatewayError` for anything else (400, 401: a bug or bad input, retrying
will not help).

Reaction events (:class:`ReactionEvent`) wait in a bounded :class:`ReactionEventQueue` that sheds
when full; both live in :mod:`polly.engine.reaction_queue` and are importable from here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# The event types are part of the boundary: re-exported for the gateways and the engine.
from polly.engine.reaction_queue import QueuedReactionEvents as QueuedReactionEvents  # noqa: PLC0414
from polly.engine.reaction_queue import ReactionEvent as ReactionEvent  # noqa: PLC0414
from polly.engine.reaction_queue import ReactionEventQueue as ReactionEventQueue  # noqa: PLC0414
from polly.engine.reaction_queue import ReactionQueueStats as ReactionQueueStats  # noqa: PLC0414
from polly.engine.reaction_queue import ShedActs as ShedActs  # noqa: PLC0414
from polly.engine.reaction_queue import ShedRecord as ShedRecord  # noqa: PLC0414
from polly.engine.reaction_queue import ShedReporter as ShedReporter  # noqa: PLC0414
from polly.engine.reaction_queue import ShedReportingEvents as ShedReportingEvents  # noqa: PLC0414
from polly.errors import PollValidationError

# Discord's documented message and embed limits (characters unless stated).
MAX_CONTENT_CHARS = 2000
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME_CHARS = 256
MAX_FIELD_VALUE_CHARS = 1024
MAX_FOOTER_CHARS = 2048
MAX_EMBED_TOTAL_CHARS = 6000
MAX_COLOUR = 0xFFFFFF
MAX_REACTIONS_PER_MESSAGE = 20
MAX_REACTION_USERS_PAGE = 100
MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024


def check_attachment(attachment: Path | None) -> None:
    """``ValueError`` unless ``attachment`` is ``None`` or a readable file of at most 8 MiB."""
    if attachment is None:
        return
    try:
        size = attachment.stat().st_size
    except OSError as err:
        msg = f"attachment {attachment} cannot be read: {err.strerror or err}"
        raise ValueError(msg) from err
    if not attachment.is_file() or size > MAX_ATTACHMENT_BYTES:
        msg = (
            f"attachment {attachment} must be a file of at most {MAX_ATTACHMENT_BYTES:,} bytes, got {size:,}"
        )
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class EmbedField:
    """One embed field. ``name`` ≤ 256 characters, ``value`` ≤ 1024, both non-empty."""

    name: str
    value: str
    inline: bool = False


@dataclass(frozen=True, slots=True)
class Embed:
    """A rich embed, checked against Discord's limits on construction.

    ``colour`` is 0xRRGGBB (0..0xFFFFFF) or ``None``; ``timestamp`` must be timezone-aware.
    Raises :class:`~polly.errors.PollValidationError` listing every limit broken.
    """

    title: str | None = None
    description: str | None = None
    fields: tuple[EmbedField, ...] = ()
    colour: int | None = None
    footer: str | None = None
    timestamp: dt.datetime | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []

        def limit(label: str, text: str | None, most: int) -> None:
            if text is not None and len(text) > most:
                problems.append(f"embed {label} has {len(text)} characters; at most {most} allowed")

        limit("title", self.title, MAX_TITLE_CHARS)
        limit("description", self.description, MAX_DESCRIPTION_CHARS)
        limit("footer", self.footer, MAX_FOOTER_CHARS)
        if len(self.fields) > MAX_FIELDS:
            problems.append(f"embed has {len(self.fields)} fields; at most {MAX_FIELDS} allowed")
        for i, f in enumerate(self.fields):
            if not f.name or not f.value:
                problems.append(f"embed field {i} has an empty name or value; both must be non-empty")
            limit(f"field {i} name", f.name, MAX_FIELD_NAME_CHARS)
            limit(f"field {i} value", f.value, MAX_FIELD_VALUE_CHARS)
        if self.colour is not None and not 0 <= self.colour <= MAX_COLOUR:
            problems.append(f"embed colour {self.colour} is outside 0..0xFFFFFF")
        if self.timestamp is not None and self.timestamp.utcoffset() is None:
            problems.append("embed timestamp must be timezone-aware (UTC)")
        total = sum(len(t or "") for t in (self.title, self.description, self.footer)) + sum(
            len(f.name) + len(f.value) for f in self.fields
        )
        if total > MAX_EMBED_TOTAL_CHARS:
            problems.append(f"embed has {total} characters in all; at most {MAX_EMBED_TOTAL_CHARS} allowed")
        if problems:
            raise PollValidationError(problems)


@dataclass(frozen=True, slots=True)
class AllowedMentions:
    """Who a message may ping. The default pings nobody (not even a role written in the content).

    ``roles``/``users`` are the ids that may be pinged; ``everyone`` allows @everyone/@here.
    """

    roles: tuple[int, ...] = ()
    users: tuple[int, ...] = ()
    everyone: bool = False


NO_MENTIONS = AllowedMentions()


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A poll message that exists on Discord. ``missing_emojis`` lists reactions that could not be
    added (in the order asked); the message is kept and its id must be stored regardless."""

    message_id: int
    missing_emojis: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactionCount:
    """One reaction on a message: ``emoji`` as ``str(emoji)``, ``count`` users, ``me`` if the bot is one."""

    emoji: str
    count: int
    me: bool


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """A message as fetched: its id, channel and reactions (in Discord's order)."""

    message_id: int
    channel_id: int
    reactions: tuple[ReactionCount, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactionUser:
    """A user who reacted; ``is_bot`` is Discord's bot flag."""

    user_id: int
    is_bot: bool


@runtime_checkable
class SessionCounter(Protocol):
    """A gateway that can say how many sessions it began (READY, not RESUMED): events between two
    sessions were never delivered, so every active poll is repaired after a new one."""

    def sessions_started(self) -> int: ...


def check_message(content: str | None, embed: Embed | None, attachment: Path | None = None) -> None:
    """Raise :class:`~polly.errors.PollValidationError` unless the message has something to send
    and ``content`` fits Discord's 2000-character limit; then ``ValueError`` unless ``attachment``
    is ``None`` or a readable file of at most 8 MiB (:func:`check_attachment`)."""
    if content is None and embed is None and attachment is None:
        raise PollValidationError(["a message needs content, an embed or a file; got none"])
    if content is not None and len(content) > MAX_CONTENT_CHARS:
        raise PollValidationError(
            [f"message content has {len(content)} characters; at most {MAX_CONTENT_CHARS} allowed"]
        )
    check_attachment(attachment)


def check_poll_emojis(emojis: Sequence[str]) -> None:
    """Raise ``ValueError`` unless a poll message's ``emojis`` fit Discord's 20 reactions per message."""
    if len(emojis) > MAX_REACTIONS_PER_MESSAGE:
        msg = f"a poll message takes at most {MAX_REACTIONS_PER_MESSAGE} reactions, got {len(emojis)}"
        raise ValueError(msg)


def check_edit(embed: Embed | None, content: str | None) -> None:
    """Raise ``ValueError`` unless an edit changes something (an embed, content or both)."""
    if embed is None and content is None:
        msg = "edit_message needs an embed, content or both; got neither"
        raise ValueError(msg)


def check_page_limit(limit: int) -> None:
    """Raise ``ValueError`` unless ``1 <= limit <= 100`` (Discord's page size for reaction users)."""
    if not 1 <= limit <= MAX_REACTION_USERS_PAGE:
        msg = f"limit must be between 1 and {MAX_REACTION_USERS_PAGE}, got {limit}"
        raise ValueError(msg)


@runtime_checkable
class Gateway(Protocol):
    """The Discord operations and events the engine uses. Ids are Discord snowflakes (``int``).

    Every REST operation raises :class:`~polly.errors.NotFoundError`,
    :class:`~polly.errors.ForbiddenError`, :class:`~polly.errors.RateLimitedError`,
    :class:`~polly.errors.ServerError` or :class:`~polly.errors.GatewayError` (see the module).
    """

    @property
    def bot_user_id(self) -> int:
        """The bot's own user id; raises :class:`~polly.errors.GatewayError` before :meth:`start` logs in."""
        ...

    def is_ready(self) -> bool:
        """``True`` once connected and ready, until :meth:`close`."""
        ...

    async def start(self) -> None:
        """Log in and connect; runs until :meth:`close` (the owner runs it as a supervised task)."""
        ...

    async def wait_until_ready(self) -> None:
        """Return once ready. No timeout of its own: the caller bounds it."""
        ...

    async def close(self) -> None:
        """Disconnect; :meth:`start` returns. Safe to call twice."""
        ...

    async def next_reaction_event(self) -> ReactionEvent:
        """Wait for the next raw reaction event (one consumer; see :class:`ReactionEventQueue`)."""
        ...

    def event_stats(self) -> ReactionQueueStats:
        """The reaction event queue's depth and counters."""
        ...

    async def post_poll_message(
        self,
        channel_id: int,
        *,
        embed: Embed,
        emojis: Sequence[str],
        content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:
        """Send ``embed`` (and ``content``), then add each of ``emojis`` in order (≤ 20).

        Raises if the message could not be sent; once sent, a failed reaction is listed in
        :attr:`PostedMessage.missing_emojis` instead of raising.
        """
        ...

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        """Replace the embed and/or the content; ``None`` leaves that part unchanged, ``""`` clears
        the content. At least one must be given."""
        ...

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        """Add the bot's reaction ``emoji`` (idempotent)."""
        ...

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        """Remove every reaction from the message (needs Manage Messages)."""
        ...

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        """Remove ``user_id``'s reaction ``emoji`` (idempotent: absent is not an error)."""
        ...

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        """Fetch the message and its reaction counts from Discord (never from a cache)."""
        ...

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        """One page of users who reacted with ``emoji``, ascending by id, all with id > ``after``.

        ``1 <= limit <= 100`` (``ValueError`` otherwise). A page shorter than ``limit`` is the last;
        pass the last user id as ``after`` for the next page.
        """
        ...

    async def send_message(
        self,
        channel_id: int,
        *,
        content: str | None = None,
        embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
        attachment: Path | None = None,
    ) -> int:
        """Send a plain message (role pings, results, a poll's image with its text); returns its id.

        ``attachment`` is a local file sent with the message (at most 8 MiB, Discord's default
        limit); ``ValueError`` if it cannot be read.
        """
        ...

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        """Send a direct message; returns its id.

        A user who does not accept DMs is :class:`~polly.errors.ForbiddenError`.
        """
        ...


class KnownBotReadiness:
    """``bot_user_id``, ``is_ready`` and ``wait_until_ready`` for a gateway that knows its bot's id
    without logging in (``_bot``) and sets ``_ready`` while it is ready (the sandbox, its remote)."""

    _bot: int
    _ready: asyncio.Event

    @property
    def bot_user_id(self) -> int:
        return self._bot

    def is_ready(self) -> bool:
        return self._ready.is_set()

    async def wait_until_ready(self) -> None:
        await self._ready.wait()


async def _nothing_to_prepare(_database: object) -> None:
    return None


def _nothing_to_close() -> None:
    return None


@dataclass(frozen=True, slots=True)
class GatewayParts:
    """A gateway with what its kind adds to a run, so the assembly never asks which kind it is:
    ``prepare(database)`` once the database is open (before the engine starts), extra supervised
    ``loops`` as (name, loop function) pairs, and ``close()`` on the way out."""

    gateway: Gateway
    prepare: Callable[[Any], Awaitable[None]] = _nothing_to_prepare
    loops: tuple[tuple[str, Callable[[Any], Awaitable[None]]], ...] = ()
    close: Callable[[], None] = _nothing_to_close
