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

Reaction events: Discord's raw ``MESSAGE_REACTION_ADD`` / ``MESSAGE_REACTION_REMOVE`` become
:class:`ReactionEvent` values in a bounded :class:`ReactionEventQueue`; the engine pulls them with
:meth:`Gateway.next_reaction_event` from one consumer coroutine it owns. When the queue is full the
newest event is dropped and counted (:attr:`ReactionQueueStats.dropped`): Discord cannot be slowed
down, so a bounded queue must shed, and the reconciler repairs from the message's reactions.
Discord also sends a ``remove`` event when *the bot* removes a user's reaction (the event names
the user, not the bot), so a ``remove`` is not always the user's own act.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True)
class ReactionEvent:
    """A raw reaction add or remove, for any message (cached or not).

    ``emoji`` is compared as upstream does, ``str(emoji)``: Unicode as is, custom as ``<:name:id>``
    or ``<a:name:id>``. ``guild_id`` is ``None`` in DMs. ``is_bot`` comes from the member Discord
    sends with an add; a remove carries no member, so it is ``True`` only for the bot's own user.
    """

    kind: Literal["add", "remove"]
    guild_id: int | None
    channel_id: int
    message_id: int
    user_id: int
    emoji: str
    is_bot: bool
    #: When the engine took the event in (naive UTC; set by the vote dispatcher when the gateway did
    #: not): a replica applying an event later than a vote recorded from a newer one skips it.
    received_at: dt.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReactionQueueStats:
    """The event queue: ``depth`` waiting (≤ ``max_events``), ``accepted`` and ``dropped`` since start."""

    depth: int
    max_events: int
    accepted: int
    dropped: int


@dataclass(slots=True)
class ReactionEventQueue:
    """A bounded FIFO of :class:`ReactionEvent`; :meth:`offer` never blocks and sheds when full."""

    max_events: int
    #: When an event is taken in (naive UTC; default the wall clock): stamped on events that carry
    #: no ``received_at``, so replicas order one user's acts by when Discord delivered them.
    clock: Callable[[], dt.datetime] | None = None
    _queue: asyncio.Queue[ReactionEvent] = field(init=False, repr=False)
    _accepted: int = field(default=0, init=False)
    _dropped: int = field(default=0, init=False)
    max_shed_messages: int = 10_000
    _shed: dict[int, None] = field(default_factory=dict, init=False, repr=False)
    _shed_overflow: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.max_events < 1:
            msg = f"max_events must be at least 1, got {self.max_events}"
            raise ValueError(msg)
        self._queue = asyncio.Queue(maxsize=self.max_events)

    def offer(self, event: ReactionEvent) -> bool:
        """Enqueue ``event``; return ``False`` (and count a drop) if ``max_events`` are waiting."""
        if event.received_at is None:
            now = self.clock() if self.clock is not None else dt.datetime.now(dt.UTC).replace(tzinfo=None)
            event = dataclasses.replace(event, received_at=now)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1
            if event.message_id in self._shed or len(self._shed) < self.max_shed_messages:
                self._shed[event.message_id] = None
            else:
                self._shed_overflow = True
            return False
        self._accepted += 1
        return True

    async def get(self) -> ReactionEvent:
        """Wait for and return the oldest event."""
        return await self._queue.get()

    def stats(self) -> ReactionQueueStats:
        return ReactionQueueStats(self._queue.qsize(), self.max_events, self._accepted, self._dropped)

    def take_shed_messages(self) -> tuple[list[int], bool]:
        """The messages whose events were shed since the last call (at most ``max_shed_messages``), and
        whether more were shed than that set holds (then every active poll needs repair)."""
        shed, overflow = list(self._shed), self._shed_overflow
        self._shed, self._shed_overflow = {}, False
        return shed, overflow

    def pending_messages(self) -> set[int]:
        """The messages of the events still waiting (for the shutdown record)."""
        return {e.message_id for e in list(self._queue._queue)}  # type: ignore[attr-defined]  # noqa: SLF001 - read-only peek


@runtime_checkable
class SessionCounter(Protocol):
    """A gateway that can say how many sessions it began (READY, not RESUMED): events between two
    sessions were never delivered, so every active poll is repaired after a new one."""

    def sessions_started(self) -> int: ...


@runtime_checkable
class ShedReporter(Protocol):
    """A gateway that can say which messages lost events to a full queue (the sandbox can; a
    gateway that cannot makes the engine repair every active poll when its drop counter grows)."""

    def take_shed_messages(self) -> tuple[list[int], bool]: ...

    def pending_messages(self) -> set[int]: ...


def check_message(content: str | None, embed: Embed | None, attachment: Path | None = None) -> None:
    """Raise :class:`~polly.errors.PollValidationError` unless the message has something to send
    and ``content`` fits Discord's 2000-character limit."""
    if content is None and embed is None and attachment is None:
        raise PollValidationError(["a message needs content, an embed or a file; got none"])
    if content is not None and len(content) > MAX_CONTENT_CHARS:
        raise PollValidationError(
            [f"message content has {len(content)} characters; at most {MAX_CONTENT_CHARS} allowed"]
        )


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
