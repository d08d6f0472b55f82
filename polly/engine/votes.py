"""The vote path: raw reaction events become votes, embeds are refreshed in coalesced batches.

:class:`VoteProcessor` takes each :class:`~polly.engine.gateway.ReactionEvent` (the bot's own and
other bots' reactions are ignored), applies it through :meth:`PollStore.apply_reaction`
(idempotent: replaying an event changes nothing), then, as upstream does, removes the voter's
reaction on anonymous and single-choice polls, and removes a reaction that would exceed
``max_choices``. A reaction for an unknown message, an unknown emoji or a closed poll is ignored
with a debug line.

:class:`EmbedUpdater` keeps the set of polls whose results changed and edits each poll's message
at most once per ``interval`` (upstream edited on every vote). :class:`DmLimiter` bounds the
optional confirmation DMs to ``max_per_minute``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from cachetools import TTLCache
from sqlalchemy.exc import SQLAlchemyError

from polly.engine.embeds import poll_embed
from polly.engine.gateway import Gateway, ReactionEvent
from polly.engine.store import PollStore, VoteOutcome
from polly.engine.views import CorruptPollError
from polly.errors import GatewayError, NotFoundError, RateLimitedError

logger = logging.getLogger(__name__)

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


class EmbedUpdater:
    """Coalesces embed edits: each dirty poll is edited at most once per ``interval_seconds``.

    The dirty set holds at most ``max_pending`` polls; beyond that the oldest mark is dropped (the
    next vote on that poll marks it again, and closing shows final results regardless).
    """

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        *,
        interval_seconds: float,
        max_pending: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._on_refresh = on_refresh
        self._store = store
        self._gateway = gateway
        self._interval = interval_seconds
        self._max_pending = max_pending
        self._now = monotonic
        self._dirty: dict[int, None] = {}
        self._last_edit: dict[int, float] = {}
        self._wake = asyncio.Event()
        self.edits = 0
        self.failures = 0

    def mark(self, poll_id: int) -> None:
        """Note that ``poll_id``'s results changed."""
        if poll_id not in self._dirty and len(self._dirty) >= self._max_pending:
            del self._dirty[next(iter(self._dirty))]
        self._dirty[poll_id] = None
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def flush_due(self) -> float:
        """Edit every dirty poll whose interval has passed; return seconds until the next is due."""
        now = self._now()
        wait = self._interval
        for poll_id in list(self._dirty):
            due = self._last_edit.get(poll_id, 0.0) + self._interval
            if due > now:
                wait = min(wait, due - now)
                continue
            del self._dirty[poll_id]
            self._last_edit[poll_id] = now
            await self._edit(poll_id)
        # Forget edit times older than an interval: they no longer delay anything (bounds the map).
        for poll_id in [
            p for p, t in self._last_edit.items() if now - t > self._interval and p not in self._dirty
        ]:
            del self._last_edit[poll_id]
        return max(wait, 0.01)

    async def _edit(self, poll_id: int) -> None:
        try:
            poll = await self._store.view(poll_id)
            if poll is None or poll.status != "active" or poll.message_id is None:
                return
            if self._on_refresh is not None:
                await self._on_refresh(poll_id)
            results, voters = await self._store.results(poll_id)
            await self._gateway.edit_message(
                poll.channel_id, poll.message_id, embed=poll_embed(poll, results, closed=False, voters=voters)
            )
            self.edits += 1
        except RateLimitedError as err:
            self.mark(poll_id)
            await asyncio.sleep(min(err.retry_after_seconds, 60.0))
        except (GatewayError, CorruptPollError) as err:
            self.failures += 1
            logger.debug("embed refresh of poll %s failed: %s", poll_id, err)

    async def run(self) -> None:
        """Loop forever (the owner cancels it): wait for marks, flush what is due."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = await self.flush_due()
            if self._dirty:
                # Sleep until the next poll is due: new marks must not cut the interval short.
                await asyncio.sleep(delay)
                self._wake.set()


class VoteProcessor:
    """Turns reaction events into votes."""

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
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._embeds = embeds
        self._clock = clock
        self._dms = confirmation_dms
        self._dm_limiter = dm_limiter or DmLimiter(30)
        self._on_outcome = on_outcome
        self.stats = VoteStats()
        self._queues: list[asyncio.Queue[ReactionEvent]] = []
        self._monotonic = monotonic
        # When each (message, user, emoji) reaction was last seen removed by the user: a reconcile
        # pass that listed the reaction before that moment must not bring the vote back.
        self._removed_at: TTLCache[tuple[int, int, str], float] = TTLCache(
            maxsize=max_recent_removals, ttl=recent_removal_seconds, timer=monotonic
        )

    async def handle(
        self, event: ReactionEvent, *, reconcile: bool = False, observed_at: float | None = None
    ) -> VoteOutcome | None:
        """Apply one event. Returns the outcome, or ``None`` for bots' reactions and stale reconciles.

        ``reconcile`` events only ever add; ``observed_at`` (monotonic seconds) is when the reconciler
        read the reaction, and the event is dropped if the user removed that reaction since.
        """
        self.stats.events += 1
        if event.is_bot or event.user_id == self._bot_id():
            return None
        key = (event.message_id, event.user_id, event.emoji)
        if event.kind == "remove":
            self._removed_at[key] = self._monotonic()
        elif (
            reconcile and observed_at is not None and self._removed_at.get(key, float("-inf")) >= observed_at
        ):
            self.stats.count("ignored_stale_reconcile")
            return None
        outcome = await self._store.apply_reaction(
            event.message_id,
            event.user_id,
            event.emoji,
            kind=event.kind,
            now=self._clock(),
            reconcile=reconcile,
        )
        self.stats.count(outcome.action)
        if outcome.action.startswith("ignored"):
            logger.debug("reaction on message %s ignored: %s", event.message_id, outcome.action)
        if self._on_outcome is not None:
            self._on_outcome(event, outcome)
        poll = outcome.poll
        if poll is None or outcome.action.startswith("ignored"):
            return outcome
        if outcome.changed:
            self._embeds.mark(poll.id)
        remove = event.kind == "add" and (poll.removes_reactions or outcome.action == "rejected_max_choices")
        if remove:
            await self._remove_reaction(event)
        if self._dms and outcome.changed and event.kind == "add":
            await self._confirm(event, outcome)
        return outcome

    def _bot_id(self) -> int | None:
        try:
            return self._gateway.bot_user_id
        except GatewayError:
            return None

    async def _remove_reaction(self, event: ReactionEvent) -> None:
        try:
            await self._gateway.remove_reaction(
                event.channel_id, event.message_id, event.emoji, event.user_id
            )
        except NotFoundError:
            pass
        except GatewayError as err:
            # The vote is recorded; a reaction left behind is removed by the reconciler later.
            self.stats.reaction_removals_failed += 1
            logger.debug("could not remove reaction of %s on %s: %s", event.user_id, event.message_id, err)

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
        """Events waiting in the worker queues."""
        return sum(q.qsize() for q in self._queues)

    def partitions(self, workers: int, max_queued: int) -> list[asyncio.Queue[ReactionEvent]]:
        """Create the per-worker queues (bounded by ``max_queued`` in all) before running the loops."""
        per_worker = max(1, max_queued // workers)
        self._queues = [asyncio.Queue(maxsize=per_worker) for _ in range(workers)]
        return self._queues

    async def dispatch(self) -> None:
        """Move gateway events to the worker owning their message, so one message's events stay in order.

        When a worker's queue is full the dispatcher waits: the gateway's own bounded queue then
        sheds, and the reconciler repairs what was shed.
        """
        queues = self._queues
        while True:
            event = await self._gateway.next_reaction_event()
            await queues[event.message_id % len(queues)].put(event)

    async def work(self, index: int) -> None:
        """Apply the events of partition ``index`` forever (the owner cancels it)."""
        queue = self._queues[index]
        while True:
            event = await queue.get()
            await self.handle_with_retry(event)

    async def handle_with_retry(self, event: ReactionEvent, attempts: int = 6) -> None:
        """:meth:`handle`, retrying database failures with exponential backoff (0.1 s doubling, ≤ 5 s).

        After ``attempts`` failures the event is dropped with a warning; the reconciler records the
        vote from the message's reactions later, so a database outage loses no vote.
        """
        for attempt in range(attempts):
            try:
                await self.handle(event)
            except CorruptPollError as err:
                logger.warning("reaction on message %s ignored: %s", event.message_id, err)
            except SQLAlchemyError as err:
                self.stats.db_retries += 1
                if attempt == attempts - 1:
                    self.stats.dropped += 1
                    logger.warning("reaction on message %s not recorded after %d tries: %s",
                                   event.message_id, attempts, type(err).__name__)  # fmt: skip
                    return
                await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            return
