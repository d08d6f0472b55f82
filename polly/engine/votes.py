"""The vote path: raw reaction events become votes in batches; embeds are refreshed in coalesced edits.

:class:`VoteProcessor` takes :class:`~polly.engine.gateway.ReactionEvent` values (the bot's own and
other bots' reactions are ignored) and applies them in batches through
:meth:`PollStore.apply_votes` (:mod:`polly.engine.vote_batch`: one transaction per batch, each
message's events in order, idempotent). After the commit, as upstream does, it has the voter's
reaction removed on anonymous and single-choice polls, and a reaction that would exceed
``max_choices`` (:class:`~polly.engine.reactions.ReactionRemover`, which retries failures), and
sends the optional confirmation DMs. A reaction for an unknown message, an unknown emoji or a
closed poll is ignored with a debug line.

Each worker takes what is waiting in its queue, up to ``batch_size`` events, waiting at most
``flush_seconds`` for more when fewer are there: under load batches fill by themselves while the
previous one commits, and a lone event is applied after ``flush_seconds`` at most. With
``serial_writes`` (SQLite, whose database has one write lock) every event goes to the first worker,
and vote transactions (its own, a repair's) take turns in the process; a worker waiting for its
turn adds what arrives meanwhile to its batch.

:class:`~polly.engine.embed_updater.EmbedUpdater` (importable from here) edits each poll's message
at most once per interval. :class:`DmLimiter` bounds the optional DMs to ``max_per_minute``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cachetools import TTLCache
from sqlalchemy.exc import SQLAlchemyError

from polly.clock import Backoff
from polly.engine.embed_updater import EmbedUpdater
from polly.engine.gateway import Gateway, ReactionEvent
from polly.engine.heap import freeze_startup_heap, refreeze, thaw
from polly.engine.reactions import ReactionRemover
from polly.engine.store import PollStore, VoteCommand, VoteOutcome
from polly.errors import GatewayError

__all__ = ["DmLimiter", "EmbedUpdater", "VoteProcessor", "VoteStats"]

logger = logging.getLogger(__name__)
#: events dispatched after which the heap, warmed up by then, is frozen again (see heap.refreeze)
REFREEZE_AFTER_EVENTS = (2_000, 20_000)
#: waits between tries of a batch the database refused: 0.1 s doubling, at most 5 s
VOTE_RETRY_BACKOFF = Backoff(0.1, 2.0, cap=5.0)

Clock = Callable[[], datetime]


@dataclass(slots=True)
class VoteStats:
    """Cumulative counters of the vote path, by outcome."""

    events: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    reaction_removals_failed: int = 0
    dms_sent: int = 0
    dms_skipped: int = 0
    db_retries: int = 0
    dropped: int = 0

    def count(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1

    @property
    def recorded(self) -> int:
        """Events that changed a vote."""
        return sum(self.actions.get(a, 0) for a in ("created", "updated", "added", "removed"))


class DmLimiter:
    """At most ``max_per_minute`` confirmation DMs in any sliding minute (memory: that many stamps)."""

    def __init__(self, max_per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._stamps: deque[float] = deque(maxlen=max_per_minute)
        self._max = max_per_minute
        self._now = monotonic

    def allow(self) -> bool:
        now = self._now()
        while self._stamps and now - self._stamps[0] >= 60.0:
            self._stamps.popleft()
        if len(self._stamps) >= self._max:
            return False
        self._stamps.append(now)
        return True


class _Stamps:
    """Key → the latest monotonic stamp, for ``ttl`` seconds, at most ``maxsize`` keys (the oldest
    stamps go first). A plain dict of tuples of numbers and strings: its entries are no objects for
    the garbage collector to walk (a cache of linked entries would add two per key, walked by every
    full collection while the vote path runs)."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._stamps: dict[tuple[int, int, str], float] = {}
        self._maxsize, self._ttl = maxsize, ttl

    @property
    def ttl(self) -> float:
        return self._ttl

    def put(self, key: tuple[int, int, str], stamp: float) -> None:
        """Stamp ``key`` (never earlier than it was): re-inserted last, so the dict stays ordered by
        when keys were stamped, which is roughly by stamp (a stamp is when its event was taken in)."""
        stamp = max(stamp, self._stamps.pop(key, stamp))
        self._stamps[key] = stamp
        stamps = self._stamps
        while stamps and (len(stamps) > self._maxsize or next(iter(stamps.values())) <= stamp - self._ttl):
            del stamps[next(iter(stamps))]

    def get(self, key: tuple[int, int, str], now: float) -> float:
        """The key's stamp if younger than ``ttl`` at ``now``, else minus infinity."""
        stamp = self._stamps.get(key)
        return stamp if stamp is not None and stamp > now - self._ttl else float("-inf")


class VoteProcessor:
    """Turns reaction events into votes, in batches."""

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        embeds: EmbedUpdater,
        *,
        clock: Clock,
        confirmation_dms: bool = False,
        dm_limiter: DmLimiter | None = None,
        on_outcome: Callable[[ReactionEvent, VoteOutcome], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        max_recent_removals: int = 20_000,
        recent_removal_seconds: float = 60.0,
        remover: ReactionRemover | None = None,
        batch_size: int = 500,
        flush_seconds: float = 0.01,
        on_lost: Callable[[int], None] | None = None,
        serial_writes: bool = False,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._embeds = embeds
        self._clock = clock
        self._dms = confirmation_dms
        self._dm_limiter = dm_limiter or DmLimiter(30)
        self._on_outcome = on_outcome
        self._on_lost = on_lost
        self.remover = remover or ReactionRemover(gateway, monotonic=monotonic)
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.stats = VoteStats()
        self._queues: list[asyncio.Queue[ReactionEvent]] = []
        # SQLite has one write lock: vote transactions taking turns here (the one worker, repairs)
        # hand it over at once, where a writer waiting in the driver polls with sleeps up to 100 ms.
        self._write_turn: asyncio.Lock | None = asyncio.Lock() if serial_writes else None
        self._in_flight = 0
        self._monotonic = monotonic
        # When each (message, user, emoji) reaction was last seen removed, or added, by an event: a
        # repair that listed reactions before that moment must not undo what the event said.
        self._removed_at = _Stamps(max_recent_removals, recent_removal_seconds)
        self._added_at = _Stamps(max_recent_removals, recent_removal_seconds)
        self._corrupt_reported: TTLCache[int, None] = TTLCache(maxsize=1000, ttl=3600.0, timer=monotonic)

    async def handle(
        self, event: ReactionEvent, *, reconcile: bool = False, observed_at: float | None = None
    ) -> VoteOutcome | None:
        """Apply one event (a batch of one). Returns the outcome, or ``None`` for bots' reactions and
        stale repairs. Reaction removal is tried at once (a failure is retried later).

        ``reconcile`` events only ever add; ``observed_at`` (monotonic seconds) is when a repair read
        the reaction: an add is dropped if the user removed that reaction since, a remove if they
        added it since.
        """
        (outcome,) = await self.apply_events(
            [event], reconcile=reconcile, observed_at=observed_at, inline=True
        )
        return outcome

    def superseded(self, event: ReactionEvent, observed_at: float) -> bool:
        """``True`` if an event after ``observed_at`` said the opposite of ``event`` (a repair's view)."""
        key = (event.message_id, event.user_id, event.emoji)
        seen = self._removed_at if event.kind == "add" else self._added_at
        return seen.get(key, self._monotonic()) >= observed_at

    async def apply_events(
        self, events: Sequence[ReactionEvent], *, reconcile: bool = False, observed_at: float | None = None,
        inline: bool = False, top_up: Callable[[], object] | None = None,
    ) -> list[VoteOutcome | None]:  # fmt: skip
        """Apply ``events`` in order in one transaction, then remove reactions and send DMs.

        ``inline`` tries reaction removals before returning (else they are queued for the remover).
        ``top_up`` (a worker's) is called once the write turn is held, to append to ``events``
        what arrived in its queue meanwhile. Database errors propagate (see :meth:`apply_with_retry`).
        """
        async with self._write_turn or contextlib.nullcontext():
            if top_up is not None:
                top_up()
            accepted, results = self._accept(events, observed_at)
            if not accepted:
                return results
            commands = [
                VoteCommand(
                    e.message_id, e.user_id, e.emoji, e.kind, reconcile=reconcile and e.kind == "add",
                    seen_at=e.received_at, read=observed_at is not None,
                )
                for _, e in accepted
            ]  # fmt: skip
            outcomes = await self._store.apply_votes(commands, now=self._clock())
        for n, ((i, event), outcome) in enumerate(zip(accepted, outcomes, strict=True)):
            results[i] = outcome
            await self._after(event, outcome, inline=inline)
            if n % 100 == 99:
                await asyncio.sleep(0)  # a large batch must not hold the loop
        return results

    def _accept(
        self, events: Sequence[ReactionEvent], observed_at: float | None
    ) -> tuple[list[tuple[int, ReactionEvent]], list[VoteOutcome | None]]:
        """The events to apply (not bots', not superseded repairs), with their indexes in ``events``."""
        bot = self._bot_id()
        now_mono, now = self._monotonic(), self._clock()
        accepted: list[tuple[int, ReactionEvent]] = []
        for i, event in enumerate(events):
            self.stats.events += 1
            if event.is_bot or event.user_id == bot:
                continue
            if observed_at is not None and self.superseded(event, observed_at):
                self.stats.count("ignored_stale_reconcile")
                continue
            key = (event.message_id, event.user_id, event.emoji)
            if observed_at is None:
                stamps = self._removed_at if event.kind == "remove" else self._added_at
                stamps.put(key, self._taken_in(event, now_mono, now, stamps.ttl))
            accepted.append((i, event))
        return accepted, [None] * len(events)

    @staticmethod
    def _taken_in(event: ReactionEvent, now_mono: float, now: datetime, horizon: float) -> float:
        """When ``event`` was taken in, in monotonic seconds: its wait in the queues is taken off, so
        an event taken in before a repair read the message (whose reactions then show it) does not
        overrule that read, however late it is applied. A wait that is negative or past ``horizon``
        (another clock's stamp) counts as none."""
        if event.received_at is None:
            return now_mono
        waited = (now - event.received_at).total_seconds()
        return now_mono - waited if 0.0 <= waited <= horizon else now_mono

    async def _after(self, event: ReactionEvent, outcome: VoteOutcome, *, inline: bool) -> None:
        self.stats.count(outcome.action)
        if outcome.error is not None:
            if outcome.error.poll_id not in self._corrupt_reported:
                self._corrupt_reported[outcome.error.poll_id] = None
                logger.warning("reactions on message %s ignored: %s", event.message_id, outcome.error)
        elif outcome.action.startswith("ignored"):
            logger.debug("reaction on message %s ignored: %s", event.message_id, outcome.action)
        if self._on_outcome is not None:
            self._on_outcome(event, outcome)
        poll = outcome.poll
        # A stale add is an old act the user has since replaced: its reaction goes like any other.
        stale_add = outcome.action == "ignored_stale" and event.kind == "add"
        if poll is None or (outcome.action.startswith("ignored") and not stale_add):
            return
        if outcome.changed:
            self._embeds.mark(poll.id)
        if event.kind == "add" and (poll.removes_reactions or outcome.action == "rejected_max_choices"):
            removal = (event.channel_id, event.message_id, event.emoji, event.user_id)
            if inline:
                await self.remover.remove_now(removal)
            else:
                self.remover.enqueue(removal)
        if self._dms and outcome.changed and event.kind == "add":
            await self._confirm(event, outcome)

    def _bot_id(self) -> int | None:
        try:
            return self._gateway.bot_user_id
        except GatewayError:
            return None

    @property
    def reaction_removals_failed(self) -> int:
        return self.remover.failures

    async def _confirm(self, event: ReactionEvent, outcome: VoteOutcome) -> None:
        poll = outcome.poll
        if poll is None or outcome.option_index is None or not self._dm_limiter.allow():
            self.stats.dms_skipped += 1
            return
        option = poll.options[outcome.option_index]
        try:
            await self._gateway.send_dm(
                event.user_id, content=f"Your vote in **{poll.name}** counts: {option}"
            )
            self.stats.dms_sent += 1
        except GatewayError:
            self.stats.dms_skipped += 1

    @property
    def queued(self) -> int:
        """Events waiting in the worker queues or being applied."""
        return sum(q.qsize() for q in self._queues) + self._in_flight

    def pending_messages(self) -> set[int]:
        """Messages with events waiting in the worker queues (for the shutdown record)."""
        return {e.message_id for q in self._queues for e in list(q._queue)}  # type: ignore[attr-defined]  # noqa: SLF001 - read-only peek

    def partitions(self, workers: int, max_queued: int) -> list[asyncio.Queue[ReactionEvent]]:
        """Create the per-worker queues (bounded by ``max_queued`` in all) before running the loops.

        With ``serial_writes`` every event goes to the first queue: transactions cannot overlap
        there, so one writer committing all that waited beats writers queueing for the lock.
        """
        if self._write_turn is not None:
            self._queues = [asyncio.Queue(maxsize=max(1, max_queued))]
            self._queues += [asyncio.Queue(maxsize=1) for _ in range(workers - 1)]
            return self._queues
        per_worker = max(1, max_queued // workers)
        self._queues = [asyncio.Queue(maxsize=per_worker) for _ in range(workers)]
        return self._queues

    async def dispatch(self) -> None:
        """Move gateway events to the worker owning their message, so one message's events stay in order.

        When a worker's queue is full the dispatcher waits: the gateway's own bounded queue then
        sheds, and the shed messages are marked for repair. While it runs, the start-up heap is
        frozen (:mod:`polly.engine.heap`): full collections then pause the loop for milliseconds,
        not for the hundreds they take walking every module and mapper; what the first events
        build and keep (compiled statements, caches) is frozen after ``REFREEZE_AFTER_EVENTS``.
        """
        queues = self._queues
        spread = 1 if self._write_turn is not None else len(queues)
        refreeze_at = list(REFREEZE_AFTER_EVENTS)
        dispatched = 0
        freeze_startup_heap()
        try:
            while True:
                event = await self._gateway.next_reaction_event()
                if refreeze_at:
                    dispatched += 1
                    if dispatched >= refreeze_at[0]:
                        refreeze_at.pop(0)
                        refreeze()
                if event.received_at is None:
                    event = dataclasses.replace(event, received_at=self._clock())
                await queues[event.message_id % spread].put(event)
        finally:
            thaw()

    async def work(self, index: int) -> None:
        """Apply the events of partition ``index`` in batches forever (the owner cancels it)."""
        queue = self._queues[index]
        while True:
            batch = [await queue.get()]
            self._in_flight += 1
            try:
                while len(batch) < self.batch_size:
                    if queue.empty():
                        if self.flush_seconds <= 0 or len(batch) > 1:
                            break
                        await asyncio.sleep(self.flush_seconds)
                        if queue.empty():
                            break
                    batch.append(queue.get_nowait())
                    self._in_flight += 1
                top_up = functools.partial(self._top_up, queue, batch) if self._write_turn else None
                await self.apply_with_retry(batch, top_up=top_up)
            finally:
                self._in_flight -= len(batch)

    def _top_up(self, queue: asyncio.Queue[ReactionEvent], batch: list[ReactionEvent]) -> None:
        """Add to ``batch`` what ``queue`` holds now, up to ``batch_size``: while a worker waits for
        its write turn, what arrives joins the transaction instead of waiting for the next one."""
        while len(batch) < self.batch_size and not queue.empty():
            batch.append(queue.get_nowait())
            self._in_flight += 1

    async def handle_with_retry(self, event: ReactionEvent, attempts: int = 6) -> None:
        """:meth:`handle` with :meth:`apply_with_retry`'s database retries (kept for callers of one event)."""
        await self.apply_with_retry([event], attempts=attempts, inline=True)

    async def apply_with_retry(
        self, events: Sequence[ReactionEvent], attempts: int = 6, *, inline: bool = False,
        top_up: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        """:meth:`apply_events`, retrying database failures with backoff (0.1 s doubling, ≤ 5 s).

        After ``attempts`` failures the batch is dropped with a warning and its messages are marked
        for repair, which records the votes from the messages' reactions: an outage loses no vote.
        """
        for attempt in range(attempts):
            try:
                await self.apply_events(events, inline=inline, top_up=top_up)
            except SQLAlchemyError as err:
                self.stats.db_retries += 1
                if attempt == attempts - 1:
                    self.stats.dropped += len(events)
                    messages = sorted({e.message_id for e in events})
                    logger.warning("%d reaction(s) on %d message(s) not recorded after %d tries (%s); "
                                   "their polls are marked for repair", len(events), len(messages), attempts,
                                   type(err).__name__)  # fmt: skip
                    if self._on_lost is not None:
                        for message_id in messages:
                            self._on_lost(message_id)
                    return
                await asyncio.sleep(VOTE_RETRY_BACKOFF.delay(attempt + 1))
                continue
            return
