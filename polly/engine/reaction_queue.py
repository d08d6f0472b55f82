"""Reaction events and the bounded queue they wait in between Discord and the engine.

Discord's raw ``MESSAGE_REACTION_ADD`` / ``MESSAGE_REACTION_REMOVE`` become :class:`ReactionEvent`
values in a bounded :class:`ReactionEventQueue`; the engine pulls them with
:meth:`~polly.engine.gateway.Gateway.next_reaction_event` from one consumer coroutine it owns. When
the queue is full the newest event is dropped and counted (:attr:`ReactionQueueStats.dropped`):
Discord cannot be slowed down, so a bounded queue must shed, and the reconciler repairs from the
message's reactions. Discord also sends a ``remove`` event when *the bot* removes a user's reaction
(the event names the user, not the bot), so a ``remove`` is not always the user's own act.

A gateway whose events wait in such a queue (``self._events``) takes its event methods from
:class:`QueuedReactionEvents`, and from :class:`ShedReportingEvents` when it also says which
messages lost events (:class:`ShedReporter`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


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


@dataclass(frozen=True, slots=True)
class ShedActs:
    """One user's shed events on one message: when the latest was taken in, and the latest *add*
    (its emoji, when) if one was shed. The latest add is the user's single-choice vote when it is
    newer than the recorded one: a later add would have been applied (then the vote is newer) or
    shed (then it would be the latest)."""

    at: dt.datetime
    last_add: str | None = None
    last_add_at: dt.datetime | None = None
    #: per emoji (at most 20, a message's reaction limit), the latest shed act: (emoji, kind, when)
    acts: tuple[tuple[str, str, dt.datetime], ...] = ()
    #: per emoji (at most 20), the latest shed *add*: (emoji, when). On an anonymous multiple-choice
    #: poll every add is a vote (a removal never un-votes), even one whose reaction was taken back.
    adds: tuple[tuple[str, dt.datetime], ...] = ()

    def merged(self, other: ShedActs | None) -> ShedActs:
        """What both records say (either may be the older)."""
        if other is None:
            return self
        newer_add = self if (self.last_add_at or _NEVER) >= (other.last_add_at or _NEVER) else other
        latest: dict[str, tuple[str, str, dt.datetime]] = {}
        for act in (*other.acts, *self.acts):
            if act[0] not in latest or act[2] >= latest[act[0]][2]:
                latest[act[0]] = act
        acts = tuple(sorted(latest.values(), key=lambda a: a[2])[-MAX_SHED_EMOJIS:])
        added: dict[str, dt.datetime] = {}
        for emoji, at in (*other.adds, *self.adds):
            added[emoji] = max(at, added.get(emoji, at))
        adds = tuple(sorted(added.items(), key=lambda a: a[1])[-MAX_SHED_EMOJIS:])
        return ShedActs(max(self.at, other.at), newer_add.last_add, newer_add.last_add_at, acts, adds)


#: shed acts remembered per user and message: one per emoji, as many as a message takes reactions
MAX_SHED_EMOJIS = 20


_NEVER = dt.datetime.min  # noqa: DTZ901 - naive UTC, as every time the queue stamps


@dataclass(frozen=True, slots=True)
class ShedRecord:
    """What a full queue shed: per message (at most ``max_shed_messages``), each user's
    :class:`ShedActs`, or ``None`` when whose is no longer known (past ``max_shed_users``);
    ``overflow`` when more messages lost events than that (then every active poll needs repair).

    Per user, so a repair can tell a reaction older than a user's recorded vote (a leftover) from a
    change of mind it missed: only an event shed after the vote can be one.
    """

    messages: dict[int, dict[int, ShedActs] | None]
    overflow: bool = False


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
    #: users remembered per shed message, over all messages (past it a message's users are unknown)
    max_shed_users: int = 50_000
    # message -> user -> that user's shed events (None: whose is no longer known)
    _shed: dict[int, dict[int, ShedActs] | None] = field(default_factory=dict, init=False, repr=False)
    _shed_users: int = field(default=0, init=False)
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
            self._note_shed(event)
            return False
        self._accepted += 1
        return True

    async def get(self) -> ReactionEvent:
        """Wait for and return the oldest event."""
        return await self._queue.get()

    def stats(self) -> ReactionQueueStats:
        return ReactionQueueStats(self._queue.qsize(), self.max_events, self._accepted, self._dropped)

    def _note_shed(self, event: ReactionEvent) -> None:
        if event.message_id not in self._shed:
            if len(self._shed) >= self.max_shed_messages:
                self._shed_overflow = True
                return
            self._shed[event.message_id] = {}
        users = self._shed[event.message_id]
        if users is None:
            return
        if event.user_id not in users:
            if self._shed_users >= self.max_shed_users:
                self._shed[event.message_id] = None  # whose events were shed: no longer known
                self._shed_users -= len(users)
                return
            self._shed_users += 1
        at = event.received_at
        assert at is not None  # stamped by offer()
        if event.is_bot:
            acts = ShedActs(at)
        else:
            added = event.kind == "add"
            acts = ShedActs(
                at, event.emoji if added else None, at if added else None, ((event.emoji, event.kind, at),),
                ((event.emoji, at),) if added else (),
            )  # fmt: skip
        users[event.user_id] = acts.merged(users.get(event.user_id))

    def take_shed(self) -> ShedRecord:
        """What was shed since the last call, then forget it."""
        record = ShedRecord(self._shed, self._shed_overflow)
        self._shed, self._shed_users, self._shed_overflow = {}, 0, False
        return record

    def pending_messages(self) -> set[int]:
        """The messages of the events still waiting (for the shutdown record)."""
        return {e.message_id for e in list(self._queue._queue)}  # type: ignore[attr-defined]  # noqa: SLF001 - read-only peek


@runtime_checkable
class ShedReporter(Protocol):
    """A gateway that can say which messages lost events to a full queue (the sandbox can; a
    gateway that cannot makes the engine repair every active poll when its drop counter grows)."""

    def take_shed(self) -> ShedRecord: ...

    def pending_messages(self) -> set[int]: ...


class QueuedReactionEvents:
    """The event side of a gateway whose events wait in its :class:`ReactionEventQueue` ``_events``."""

    _events: ReactionEventQueue

    async def next_reaction_event(self) -> ReactionEvent:
        return await self._events.get()

    def event_stats(self) -> ReactionQueueStats:
        return self._events.stats()


class ShedReportingEvents(QueuedReactionEvents):
    """:class:`QueuedReactionEvents` that also says which messages lost events (a :class:`ShedReporter`)."""

    def take_shed(self) -> ShedRecord:
        return self._events.take_shed()

    def pending_messages(self) -> set[int]:
        return self._events.pending_messages()
