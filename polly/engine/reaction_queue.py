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
class ShedReporter(Protocol):
    """A gateway that can say which messages lost events to a full queue (the sandbox can; a
    gateway that cannot makes the engine repair every active poll when its drop counter grows)."""

    def take_shed_messages(self) -> tuple[list[int], bool]: ...

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

    def take_shed_messages(self) -> tuple[list[int], bool]:
        return self._events.take_shed_messages()

    def pending_messages(self) -> set[int]:
        return self._events.pending_messages()
