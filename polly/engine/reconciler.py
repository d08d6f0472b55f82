"""The reconciler: a budgeted pass that records votes the event path missed.

Votes can be missed while the bot was down, when Discord drops a gateway event, or when the
event queue shed under load. Each pass reads the reactions of recently active polls (least
recently reconciled first) and records every reaction that has no vote yet, only ever adding
(:meth:`PollStore.apply_reaction` with ``reconcile=True``): it never toggles and never removes, so
it cannot delete a vote (upstream's safeguard re-submitted kept reactions and deleted them).

Each pass makes at most ``budget`` Discord calls. A poll whose fetch fails transiently is retried
with exponential backoff. Only Discord's 404 counts towards "the message is gone", through the
failure tracker; a poll whose message has been gone for longer than ``orphan_after`` is closed as
orphaned (votes kept), never deleted. A cache miss or a transient error never counts as gone.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from polly.engine.gateway import MAX_REACTION_USERS_PAGE, Gateway, ReactionEvent
from polly.engine.store import PollStore
from polly.engine.views import PollView
from polly.errors import GatewayError, NotFoundError, RateLimitedError

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_NEVER = datetime(1970, 1, 1)  # noqa: DTZ001 - naive UTC, like every engine time


class FailureRun(Protocol):
    """A run of failures: first and latest, in seconds on the tracker's clock."""

    @property
    def first_failure(self) -> float: ...
    @property
    def last_attempt(self) -> float: ...


class GoneTracker(Protocol):
    """Remembers since when a key has been failing (:class:`polly.caches.FailureTracker` satisfies it,
    built with a retry window of at least ``orphan_after`` so a run is not restarted mid-way)."""

    def record_failure(self, key: str, method: str | None = None) -> FailureRun: ...

    def clear(self, key: str) -> bool: ...


class Orphaner(Protocol):
    async def orphan(self, poll_id: int, reason: str) -> None: ...


class VoteSink(Protocol):
    async def handle(
        self, event: ReactionEvent, *, reconcile: bool = False, observed_at: float | None = None
    ) -> object: ...


@dataclass(slots=True)
class ReconcileReport:
    """What one pass did."""

    polls: int = 0
    calls: int = 0
    votes_added: int = 0
    gone: int = 0
    orphaned: int = 0
    transient_failures: int = 0
    rate_limited: bool = False


class Reconciler:
    """Repairs missed votes from message reactions, within a Discord call budget per pass."""

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        votes: VoteSink,
        orphaner: Orphaner,
        gone: GoneTracker,
        *,
        clock: Clock,
        budget: int,
        lookback: timedelta,
        orphan_after: timedelta,
        max_polls: int = 5_000,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._store = store
        self._gateway = gateway
        self._votes = votes
        self._orphaner = orphaner
        self._gone = gone
        self._clock = clock
        self.budget = budget
        self._lookback = lookback
        self._orphan_after = orphan_after
        self._max_polls = max_polls
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._last_done: dict[int, datetime] = {}
        self._retry_at: dict[int, tuple[datetime, int]] = {}
        self._paused_until: datetime | None = None
        self.passes = 0
        self.totals = ReconcileReport()

    async def pass_once(self) -> ReconcileReport:
        """One budgeted pass; returns what it did (also added to :attr:`totals`)."""
        now = self._clock()
        report = ReconcileReport()
        self.passes += 1
        if self._paused_until is not None and now < self._paused_until:
            return report
        candidates = await self._store.reconcile_candidates(now, self._lookback, self._max_polls)
        live = {p.id for p in candidates}
        # Bookkeeping only for current candidates: the maps stay bounded by max_polls.
        self._last_done = {k: v for k, v in self._last_done.items() if k in live}
        self._retry_at = {k: v for k, v in self._retry_at.items() if k in live}
        candidates.sort(key=lambda p: self._last_done.get(p.id, _NEVER))
        for poll in candidates:
            if report.calls >= self.budget or report.rate_limited:
                break
            retry = self._retry_at.get(poll.id)
            if retry is not None and retry[0] > now:
                continue
            report.polls += 1
            await self._reconcile_poll(poll, now, report)
        self._add(report)
        return report

    async def _reconcile_poll(self, poll: PollView, now: datetime, report: ReconcileReport) -> None:
        assert poll.message_id is not None
        key = f"poll:{poll.id}"
        try:
            report.calls += 1
            message = await self._gateway.fetch_message(poll.channel_id, poll.message_id)
            self._gone.clear(key)
            for reaction in message.reactions:
                option = poll.option_for(reaction.emoji)
                if option is None or reaction.count - (1 if reaction.me else 0) <= 0:
                    continue
                if not await self._record_users(poll, reaction.emoji, report):
                    return
            self._last_done[poll.id] = now
            self._retry_at.pop(poll.id, None)
        except NotFoundError:
            report.gone += 1
            run = self._gone.record_failure(key, "fetch_message")
            gone_for = run.last_attempt - run.first_failure
            if gone_for >= self._orphan_after.total_seconds():
                reason = f"message {poll.message_id} not found for {gone_for / 3600:.1f} h"
                await self._orphaner.orphan(poll.id, reason)
                self._gone.clear(key)
                report.orphaned += 1
            else:
                self._backoff(poll.id, now)
        except RateLimitedError as err:
            report.rate_limited = True
            self._paused_until = now + timedelta(seconds=err.retry_after_seconds)
        except GatewayError as err:
            report.transient_failures += 1
            self._backoff(poll.id, now)
            logger.debug("reconcile of poll %s deferred: %s", poll.id, type(err).__name__)

    async def _record_users(self, poll: PollView, emoji: str, report: ReconcileReport) -> bool:
        """Page through one reaction's users; ``False`` when the budget ran out mid-way."""
        assert poll.message_id is not None
        after = 0
        while True:
            if report.calls >= self.budget:
                return False
            report.calls += 1
            observed_at = self._monotonic()
            page = await self._gateway.list_reaction_users(
                poll.channel_id, poll.message_id, emoji, after=after, limit=MAX_REACTION_USERS_PAGE
            )
            for user in page:
                if user.is_bot:
                    continue
                event = ReactionEvent(
                    "add", poll.server_id, poll.channel_id, poll.message_id, user.user_id, emoji, is_bot=False
                )
                outcome = await self._votes.handle(event, reconcile=True, observed_at=observed_at)
                if getattr(outcome, "changed", False):
                    report.votes_added += 1
            if len(page) < MAX_REACTION_USERS_PAGE:
                return True
            after = page[-1].user_id

    def _backoff(self, poll_id: int, now: datetime) -> None:
        failures = self._retry_at.get(poll_id, (now, 0))[1] + 1
        delay = min(30.0 * 2 ** (failures - 1), 3600.0) * self._rng.uniform(0.8, 1.2)
        self._retry_at[poll_id] = (now + timedelta(seconds=delay), failures)

    def _add(self, report: ReconcileReport) -> None:
        t = self.totals
        t.polls += report.polls
        t.calls += report.calls
        t.votes_added += report.votes_added
        t.gone += report.gone
        t.orphaned += report.orphaned
        t.transient_failures += report.transient_failures
