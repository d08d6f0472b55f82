"""The engine: scheduler, vote path, embed updater and reconciler wired onto the task supervisor.

:class:`Engine` builds the parts from the settings, a :class:`~polly.db.engine.Database` and a
:class:`~polly.engine.gateway.Gateway`, and :meth:`Engine.start` hands their loops to a
:class:`~polly.supervisor.Supervisor`, which owns, restarts and stops them:

============== =====================================================================
``gateway``    the gateway connection; ready once Discord (or the sandbox) is ready
``votes``      moves reaction events to the vote workers, per message in order
``vote-N``     applies reaction events (``engine.vote_workers`` of them)
``embeds``     coalesced embed refreshes
``scheduler``  a tick every ``engine.tick_seconds``; the first tick runs at start-up, so
               overdue polls open or close at once
``reconciler`` a budgeted repair pass every ``engine.reconcile_interval_seconds``
``reactions``  reaction removals after votes, failed ones retried (bounded)
``repair``     every second: marks polls whose events were shed, then repairs marked
               polls (every active poll is marked at start-up: polly may have been down)
``vote-drain`` started last, so stopped first: on shutdown it lets the queued events be
               applied within half the shutdown deadline and logs the polls still
               needing repair
============== =====================================================================

Every Discord call goes through one :class:`~polly.engine.rate_gate.RateLimitGate`, so no part of
the engine calls into a known retry-after window.

Time is injected: ``clock`` (naive UTC now), ``monotonic`` and ``sleep`` (the loops' waits); a test
passes a :class:`~polly.clock.FakeClock`'s methods. The shutdown drain's deadline is event-loop time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from polly.caches import FailureTracker
from polly.clock import Sleep, utcnow_naive
from polly.config import Settings
from polly.db.engine import Database
from polly.engine.gateway import Gateway, ReactionEvent, SessionCounter, ShedReporter
from polly.engine.rate_gate import RateLimitGate
from polly.engine.reactions import ReactionRemover
from polly.engine.reconciler import Reconciler
from polly.engine.scheduler import PollScheduler, TransitionObserver
from polly.engine.store import PollStore, VoteOutcome
from polly.engine.votes import DmLimiter, EmbedUpdater, VoteProcessor
from polly.supervisor import Readiness, Supervisor, ready_at_once

__all__ = ["Engine", "EngineStats", "current_engine", "set_current_engine", "utcnow_naive"]

logger = logging.getLogger(__name__)


_current: Engine | None = None


def current_engine() -> Engine | None:
    """The engine ``polly run`` is running in this process, if any."""
    return _current


def set_current_engine(engine: Engine | None) -> None:
    """Called by ``polly run`` when its engine starts (``engine``) and stops (``None``)."""
    global _current  # noqa: PLW0603 - one process-wide engine, as upstream's module globals
    _current = engine


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot for the status line and the soak report."""

    replica: str
    votes_recorded: int
    events: int
    event_queue_depth: int
    events_dropped: int
    opened: int
    closed: int
    orphaned: int
    embed_edits: int
    reconciled_votes: int
    known_active: int


class Engine:
    """polly's main job, for one gateway and one database."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        gateway: Gateway,
        *,
        replica: str | None = None,
        clock: Callable[[], datetime] = utcnow_naive,
        on_transition: TransitionObserver | None = None,
        on_outcome: Callable[[ReactionEvent, VoteOutcome], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_poll_changed: Callable[[int], Awaitable[None]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        cfg = settings.engine
        self.settings = settings
        self.replica = replica or uuid.uuid4().hex[:8]
        self.gateway = gateway
        self.discord = RateLimitGate(gateway, monotonic=monotonic)
        self._monotonic = monotonic
        self._sleep = sleep
        self.database = database
        self.store = PollStore(database.async_session_scope)
        self.embeds = EmbedUpdater(
            self.store,
            self.discord,
            interval_seconds=cfg.embed_update_interval_seconds,
            monotonic=monotonic,
            on_refresh=on_poll_changed,
            sleep=sleep,
        )
        self.remover = ReactionRemover(self.discord, monotonic=monotonic, on_given_up=self._mark_for_repair)
        self.votes = VoteProcessor(
            self.store,
            self.discord,
            self.embeds,
            remover=self.remover,
            batch_size=cfg.vote_batch_size,
            flush_seconds=cfg.vote_flush_seconds,
            on_lost=self._mark_for_repair,
            serial_writes=database.backend == "sqlite",
            clock=clock,
            confirmation_dms=cfg.confirmation_dms,
            dm_limiter=DmLimiter(cfg.dm_max_per_minute),
            on_outcome=on_outcome,
            monotonic=monotonic,
        )
        orphan_after = timedelta(seconds=cfg.orphan_after_seconds)
        self.scheduler = PollScheduler(
            self.store,
            self.discord,
            replica=self.replica,
            clock=clock,
            orphan_after=orphan_after,
            on_transition=on_transition,
            on_results_changed=self.embeds.mark,
            monotonic=monotonic,
            on_closed=on_poll_changed,
            image_root=Path(cfg.image_root),
        )
        # "Gone" runs must outlast the orphan period, so the retry window never restarts one early.
        self.gone = FailureTracker(
            max_entries=settings.caches.failure_tracker_max_entries,
            ttl_seconds=cfg.orphan_after_seconds * 2,
            max_retries=settings.caches.max_fetch_retries,
            retry_window_seconds=cfg.orphan_after_seconds * 2,
            name="message_gone",
            timer=monotonic,
        )
        self.reconciler = Reconciler(
            self.store,
            self.discord,
            self.votes,
            self.scheduler,
            self.gone,
            clock=clock,
            budget=cfg.reconcile_budget_per_tick,
            lookback=timedelta(hours=cfg.reconcile_lookback_hours),
            orphan_after=orphan_after,
            monotonic=monotonic,
            take_shed=self.note_shed,
        )
        self._unregister = self.gone.register()
        self._dropped_seen = 0
        self._sessions_seen: int | None = None
        self.still_to_repair: tuple[int, ...] = ()

    def start(self, supervisor: Supervisor) -> None:
        """Hand every loop to ``supervisor`` (in dependency order: shutdown runs in reverse)."""
        cfg = self.settings.engine
        supervisor.start_loop("gateway", self._run_gateway)
        self.votes.partitions(cfg.vote_workers, cfg.vote_queue_max)
        for index in range(cfg.vote_workers):
            supervisor.start_loop(f"vote-{index}", ready_at_once(functools.partial(self.votes.work, index)))
        supervisor.start_loop("votes", ready_at_once(self.votes.dispatch))
        supervisor.start_loop("embeds", ready_at_once(self.embeds.run))
        supervisor.start_loop("scheduler", self._run_scheduler)
        supervisor.start_loop("reconciler", self._run_reconciler)
        supervisor.start_loop("reactions", ready_at_once(self.remover.run))
        supervisor.start_loop("repair", self._run_repair)
        supervisor.start_loop("vote-drain", ready_at_once(self._drain_on_shutdown))

    def _mark_for_repair(self, message_id: int) -> None:
        self.reconciler.mark_message(message_id)

    def note_shed(self) -> None:
        """Mark the polls whose events the gateway shed since the last call, and every active poll
        after a new gateway session (a re-identify: the events in between were never delivered)."""
        if isinstance(self.gateway, SessionCounter):
            sessions = self.gateway.sessions_started()
            if self._sessions_seen is not None and sessions > self._sessions_seen:
                self.reconciler.mark_all()
            self._sessions_seen = sessions
        if isinstance(self.gateway, ShedReporter):
            shed = self.gateway.take_shed()
            for message_id, users in shed.messages.items():
                self.reconciler.note_shed(message_id, users)
            if shed.overflow:
                self.reconciler.mark_all()
            return
        dropped = self.gateway.event_stats().dropped
        if dropped > self._dropped_seen:  # which messages is unknown: repair every active poll
            self.reconciler.mark_all()
        self._dropped_seen = dropped

    async def _run_repair(self, ready: Readiness) -> None:
        await self._ready_gateway()
        self.reconciler.mark_all()  # polly may have been down while any active poll was voted on
        ready.ready()
        while True:
            self.note_shed()
            report = await self.reconciler.repair_marked()
            if report.votes_added or report.votes_removed:
                logger.info(
                    "repair: %d vote(s) recorded, %d removed on %d poll(s)",
                    report.votes_added, report.votes_removed, report.polls,
                )  # fmt: skip
            await self._sleep(1.0)

    async def drain(self, timeout_seconds: float) -> tuple[int, ...]:
        """Wait until the queued events are applied (at most ``timeout_seconds``); return the
        messages whose events are still queued (their polls need repair), also kept in
        :attr:`still_to_repair` and logged."""
        # A shutdown deadline: event-loop time, whatever clock the engine reads (as the supervisor's).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                while self.gateway.event_stats().depth or self.votes.queued:
                    await self._sleep(0.05)
        left: set[int] = self.votes.pending_messages()
        if isinstance(self.gateway, ShedReporter):
            left |= self.gateway.pending_messages()
            left |= set(self.gateway.take_shed().messages)
        self.still_to_repair = tuple(sorted(left))
        if left:
            logger.warning(
                "stopping with events of %d message(s) not applied; their polls are repaired when polly "
                "starts again: %s", len(left), ", ".join(map(str, self.still_to_repair[:20])),
            )  # fmt: skip
        return self.still_to_repair

    async def _drain_on_shutdown(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # Cancelled first at shutdown (started last): the vote loops still run, so let them
            # apply what is queued, within half the shutdown deadline, before stopping.
            await self.drain(self.settings.engine.shutdown_timeout_seconds / 2)
            raise

    async def _ready_gateway(self) -> None:
        # No timeout: an unreachable Discord is waited out (the gateway says so once); `polly run`
        # bounds the rest of start-up.
        await self.gateway.wait_until_ready()

    async def _run_gateway(self, ready: Readiness) -> None:
        # Ready at once: the connection's readiness is the gateway's own (`wait_until_ready`), which
        # every loop that needs Discord awaits, and `polly run` waits for before the rest of start-up.
        ready.ready()
        try:
            await self.gateway.start()
        finally:
            await self.gateway.close()

    async def _run_scheduler(self, ready: Readiness) -> None:
        await self._ready_gateway()
        await self.scheduler.tick()  # start-up: overdue polls open or close now
        ready.ready()
        while True:
            await self._sleep(self.settings.engine.tick_seconds)
            await self.scheduler.tick()

    async def close_now(self, poll_id: int, reason: str = "manual") -> bool:
        """Close ``poll_id`` at once (final results, reactions cleared); ``False`` if it was not active."""
        return await self.scheduler.close_poll(poll_id, reason=reason)

    async def _run_reconciler(self, ready: Readiness) -> None:
        await self._ready_gateway()
        ready.ready()
        while True:
            started = self._monotonic()
            report = await self.reconciler.pass_once()
            if report.votes_added or report.votes_removed or report.orphaned:
                logger.info(
                    "reconciler: %d vote(s) recovered, %d removed, %d poll(s) orphaned, %d Discord call(s)",
                    report.votes_added, report.votes_removed, report.orphaned, report.calls,
                )  # fmt: skip
            elapsed = self._monotonic() - started
            await self._sleep(max(self.settings.engine.reconcile_interval_seconds - elapsed, 0.1))

    def stats(self) -> EngineStats:
        queue = self.gateway.event_stats()
        s = self.scheduler.stats
        return EngineStats(
            replica=self.replica,
            votes_recorded=self.votes.stats.recorded,
            events=self.votes.stats.events,
            event_queue_depth=queue.depth,
            events_dropped=queue.dropped + self.votes.stats.dropped,
            opened=s.opened,
            closed=s.closed + s.closed_unopened,
            orphaned=s.orphaned,
            embed_edits=self.embeds.edits,
            reconciled_votes=self.reconciler.totals.votes_added,
            known_active=self.scheduler.known_active,
        )

    def close(self) -> None:
        """Release what :meth:`__init__` registered."""
        self._unregister()
