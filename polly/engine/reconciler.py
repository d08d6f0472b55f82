"""The reconciler: makes each poll's votes match what its voters did, from the message's reactions.

Votes can be missed while the bot was down, when Discord drops a gateway event, when the event
queue shed under load, or when events were still queued at shutdown. A repair reads every
reaction of a poll (each emoji, every page of users) and applies the events that make the votes
match them, with the per-kind meaning of :mod:`polly.engine.repair`: missing votes are added,
missed changes of mind applied, and, only after a complete read, votes whose reaction is gone are
removed on polls that keep reactions. An event seen after the read wins over it (the vote path
remembers recent adds and removes), so a repair never undoes a newer act.

Two kinds of pass: the background pass every ``reconcile_interval_seconds`` (recently opened
active polls, least recently reconciled first), and the prompt pass (:meth:`Reconciler.repair_marked`,
every second) for polls *marked* as needing repair: their events were shed or failed to apply, a
reaction removal was given up, or polly was down while they were active (every active poll is
marked at start-up).

Each pass makes at most ``budget`` Discord calls. A 429 holds only that channel until its
retry-after has passed; the pass goes on with the other channels' polls. A poll whose fetch fails
transiently is retried with exponential backoff. Only Discord's 404 counts towards "the message is
gone", through the failure tracker; a poll whose message has been gone for longer than
``orphan_after`` is closed as orphaned (votes kept), never deleted. A cache miss or a transient
error never counts as gone.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cachetools import TTLCache

from polly.clock import Backoff
from polly.db.poll_rows import PollView
from polly.engine.gateway import MAX_REACTION_USERS_PAGE, Gateway, ShedActs
from polly.engine.missed import Missed
from polly.engine.repair import repair_events
from polly.engine.store import PollStore
from polly.engine.votes import VoteProcessor
from polly.errors import GatewayError, NotFoundError, RateLimitedError

logger = logging.getLogger(__name__)
#: a failing poll in the background pass: 30 s doubling up to an hour, shortened by up to 20 %
BACKGROUND_BACKOFF = Backoff(30.0, 2.0, cap=3600.0, jitter=0.2)
#: a failing marked poll (the prompt pass): 2 s doubling up to 10 s, shortened by up to 20 %
MARKED_BACKOFF = Backoff(2.0, 2.0, cap=10.0, jitter=0.2)

Clock = Callable[[], datetime]
_NEVER = datetime(1970, 1, 1)  # noqa: DTZ001 - naive UTC, like every engine time


class FailureRun(Protocol):
    """A run of failures: first and latest, in seconds on the tracker's clock, and how many."""

    @property
    def first_failure(self) -> float: ...
    @property
    def last_attempt(self) -> float: ...
    @property
    def count(self) -> int: ...


class GoneTracker(Protocol):
    """Remembers since when a key has been failing (:class:`polly.caches.FailureTracker` satisfies it,
    built with a retry window of at least ``orphan_after`` so a run is not restarted mid-way)."""

    def record_failure(self, key: str, method: str | None = None) -> FailureRun: ...

    def clear(self, key: str) -> bool: ...


class Orphaner(Protocol):
    async def orphan(self, poll_id: int, reason: str) -> None: ...


@dataclass(slots=True)
class ReconcileReport:
    """What one pass did."""

    polls: int = 0
    calls: int = 0
    votes_added: int = 0
    votes_removed: int = 0
    gone: int = 0
    orphaned: int = 0
    transient_failures: int = 0
    rate_limited: bool = False


#: 404s in a row after which a marked poll's message counts as gone for the prompt pass
GONE_PROMPT_READS = 3


class Reconciler:
    """Repairs missed votes from message reactions, within a Discord call budget per pass."""

    #: (message, user) pairs whose shed events are remembered; past it a message counts as lost for all
    MAX_LOST_ACTS = 50_000

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        votes: VoteProcessor,
        orphaner: Orphaner,
        gone: GoneTracker,
        *,
        clock: Clock,
        budget: int,
        lookback: timedelta,
        orphan_after: timedelta,
        max_polls: int = 5_000,
        max_marked: int = 10_000,
        confirm_seconds: float = 10.0,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        take_shed: Callable[[], None] | None = None,
    ) -> None:
        self._monotonic = monotonic
        #: called before each poll is read: the engine hands over what its queue shed until then,
        #: so the read is never newer than the shed record it is applied with
        self._take_shed = take_shed
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
        # poll -> (retry after, failures, retry a marked poll after)
        self._retry_at: dict[int, tuple[datetime, int, datetime]] = {}
        self._held: dict[int, datetime] = {}  # channel -> end of the retry-after Discord gave
        self._max_marked = max_marked
        # message ids needing a prompt repair -> when marked (a sequence number): a repair that read
        # the message before a newer mark (another task's pass, a shed noted meanwhile) keeps it
        self._marked: OrderedDict[int, int] = OrderedDict()
        self._mark_seq = 0
        self._mark_all = False
        self._confirm_seconds = confirm_seconds
        # (message, user, emoji) -> (first seen, the votes then): single-choice changes awaiting a 2nd read
        self._candidates: TTLCache[tuple[int, int, str], tuple[float, frozenset[int]]] = TTLCache(
            maxsize=max_marked,
            ttl=max(confirm_seconds * 30, 60.0),
            timer=monotonic,
        )
        self.missed = Missed(clock, monotonic, max_messages=max_marked, max_users=self.MAX_LOST_ACTS)
        self._deferred = False
        self.passes = 0
        self.totals = ReconcileReport()

    def mark_message(self, message_id: int) -> None:
        """Note that ``message_id``'s poll needs a prompt repair, because some of its events may have
        been missed (shed, failed to apply, a reaction removal given up); past ``max_marked``: every
        poll."""
        if self._votes.remover.giving_up != message_id:  # a removal given up loses no event
            self.missed.lost(message_id)
        self._mark(message_id)

    def note_shed(self, message_id: int, users: Mapping[int, ShedActs] | None) -> None:
        """Mark ``message_id``'s poll for a prompt repair because the queue shed some of its events:
        those of ``users`` (each taken in at the time given), or of anyone (``None``: then as
        :meth:`mark_message`). Knowing whose, a reaction older than a user's recorded vote stays a
        leftover though other users' events were shed (:meth:`may_have_missed`)."""
        if users is None:
            self.mark_message(message_id)
            return
        self.missed.shed(message_id, users)
        self._mark(message_id)

    def _mark(self, message_id: int) -> None:
        if message_id not in self._marked and len(self._marked) >= self._max_marked:
            self.mark_all()
            return
        self._mark_seq += 1
        self._marked[message_id] = self._mark_seq

    def mark_all(self) -> None:
        """Every active poll needs a prompt repair, because any of their events up to now may have been
        missed (start-up after downtime, a shed whose messages are unknown)."""
        self._mark_all = True
        self.missed.all_lost()

    def may_have_missed(self, message_id: int, since: datetime, user_id: int) -> bool:
        """See :meth:`Missed.may_have_missed`."""
        return self.missed.may_have_missed(message_id, since, user_id)

    @property
    def marked(self) -> int:
        """Messages waiting for a prompt repair (``-1``: every active poll)."""
        return -1 if self._mark_all else len(self._marked)

    async def pass_once(self) -> ReconcileReport:
        """One budgeted background pass; returns what it did (also added to :attr:`totals`)."""
        return await self._pass(marked=False)

    async def repair_marked(self) -> ReconcileReport:
        """Repair marked polls, within the budget; unfinished ones stay marked."""
        if not (self._marked or self._mark_all):
            return ReconcileReport()
        return await self._pass(marked=True)

    async def _pass(self, *, marked: bool) -> ReconcileReport:
        now = self._clock()
        report = ReconcileReport()
        self.passes += 1
        self._held = {c: t for c, t in self._held.items() if t > now}
        lookback = timedelta(days=36_500) if marked else self._lookback
        candidates = await self._store.reconcile_candidates(now, lookback, self._max_polls)
        if not marked:
            live = {p.id for p in candidates}
            # Bookkeeping only for current candidates: the maps stay bounded by max_polls.
            self._last_done = {k: v for k, v in self._last_done.items() if k in live}
            self._retry_at = {k: v for k, v in self._retry_at.items() if k in live}
        else:
            everything, self._mark_all = self._mark_all, False
            wanted = set(self._marked)
            if not everything:
                candidates = [p for p in candidates if p.message_id in wanted]
            # Polls outside the candidates cannot be repaired: forget their marks.
            self._marked = OrderedDict(
                (p.message_id, self._marked.get(p.message_id, 0)) for p in candidates if p.message_id
            )
        candidates.sort(key=lambda p: self._last_done.get(p.id, _NEVER))
        for poll in candidates:
            if report.calls >= self.budget:
                break
            if poll.channel_id in self._held:
                continue  # that channel's retry-after is running: the others go on
            retry = self._retry_at.get(poll.id)
            if retry is not None and (retry[2] if marked else retry[0]) > now:
                continue
            report.polls += 1
            if self._take_shed is not None:
                self._take_shed()
            mark = self._marked.get(poll.message_id or 0)
            repaired = await self._reconcile_poll(poll, now, report)
            if repaired and poll.message_id is not None and self._marked.get(poll.message_id) == mark:
                self._marked.pop(poll.message_id, None)  # not marked again since it was read
        self._add(report)
        return report

    async def _reconcile_poll(self, poll: PollView, now: datetime, report: ReconcileReport) -> bool:
        """Repair one poll; ``True`` when its reactions were read completely and applied."""
        assert poll.message_id is not None
        key = f"poll:{poll.id}"
        try:
            report.calls += 1
            observed_at, read_at = self._monotonic(), self._clock()
            message = await self._gateway.fetch_message(poll.channel_id, poll.message_id)
            self._gone.clear(key)
            held: dict[int, set[int]] = {}
            complete = True
            for reaction in message.reactions:
                option = poll.option_for(reaction.emoji)
                if option is None or reaction.count - (1 if reaction.me else 0) <= 0:
                    continue
                if not await self._read_users(poll, reaction.emoji, option, held, report):
                    complete = False
                    break
            self._deferred = False
            await self._apply(
                poll, held, complete=complete, observed_at=observed_at, read_at=read_at, report=report
            )
            if not complete or self._deferred:
                return False  # read again: unfinished, or a change of mind awaiting its second look
            self._last_done[poll.id] = now
            self._retry_at.pop(poll.id, None)
            return True  # noqa: TRY300 - the except clauses below return False
        except NotFoundError:
            report.gone += 1
            run = self._gone.record_failure(key, "fetch_message")
            # A 404 can be transient: a marked poll stays marked (read again within seconds) for its
            # first few; then it is left to the background pass, which tracks a gone message.
            prompt = poll.message_id in self._marked and run.count < GONE_PROMPT_READS
            if not prompt:
                self._marked.pop(poll.message_id, None)
            gone_for = run.last_attempt - run.first_failure
            if gone_for >= self._orphan_after.total_seconds():
                reason = f"message {poll.message_id} not found for {gone_for / 3600:.1f} h"
                await self._orphaner.orphan(poll.id, reason)
                self._gone.clear(key)
                self._marked.pop(poll.message_id, None)
                report.orphaned += 1
            else:
                self._backoff(poll.id, now, prompt=prompt)
            await self._replay_shed_adds(poll, report)
        except RateLimitedError as err:
            report.rate_limited = True
            if len(self._held) < self._max_polls:
                self._held[poll.channel_id] = now + timedelta(seconds=err.retry_after_seconds)
        except GatewayError as err:
            report.transient_failures += 1
            self._backoff(poll.id, now, prompt=poll.message_id in self._marked)
            logger.debug("reconcile of poll %s deferred: %s", poll.id, type(err).__name__)
        return False

    async def _apply(
        self, poll: PollView, held: dict[int, set[int]], *, complete: bool, observed_at: float,
        read_at: datetime, report: ReconcileReport,
    ) -> None:  # fmt: skip
        assert poll.message_id is not None
        recorded, voted_at = await self._store.votes_with_times(poll.id)
        remover = self._votes.remover

        def is_leftover(message_id: int, user_id: int, emoji: str) -> bool:
            """Removals this replica has not confirmed, and on single-choice polls any reaction other
            than the vote when this replica received every event since the vote was recorded: a
            newer choice would have reached it as an event, so the reaction is older than the vote
            (one whose removal another replica is retrying, or was retrying when it stopped)."""
            if remover.is_leftover(message_id, user_id, emoji):
                return True
            when, option = voted_at.get(user_id), poll.option_for(emoji)
            return (
                not poll.multiple_choice and when is not None and option not in recorded.get(user_id, set())
                and not self.may_have_missed(message_id, when, user_id)
            )  # fmt: skip

        shed_adds: dict[int, tuple[int, datetime]] = {}
        if not poll.multiple_choice:
            for user_id, (emoji, at) in self.missed.newest_shed_adds(poll.message_id, voted_at).items():
                option = poll.option_for(emoji)
                if option is not None:
                    shed_adds[user_id] = (option, at)
        events, leftovers = repair_events(
            poll, held, recorded, complete=complete, is_leftover=is_leftover, read_at=read_at,
            confirmed=self._confirmed, shed_adds=shed_adds,
        )  # fmt: skip
        for user, emoji in leftovers:
            await remover.remove_now((poll.channel_id, poll.message_id, emoji, user))
        # A shed add is an event as Discord sent it, ordered against the votes by when it was taken
        # in; it is not a view of the message that a later event makes stale (a reaction taken back
        # afterwards changes neither a single-choice vote nor an anonymous multiple-choice one).
        replays = [e for e in events if e.user_id in shed_adds] + self.missed.shed_additions(poll, recorded)
        replayed = {(e.user_id, e.emoji) for e in replays}  # the replay records it and removes its reaction
        read = [e for e in events if e.user_id not in shed_adds and (e.user_id, e.emoji) not in replayed]
        outcomes = await self._votes.apply_events(replays, inline=True) if replays else []
        if read:
            outcomes += await self._votes.apply_events(read, observed_at=observed_at, inline=True)
        for outcome in outcomes:
            if outcome is not None and outcome.changed:
                if outcome.action == "removed":
                    report.votes_removed += 1
                else:
                    report.votes_added += 1

    async def _replay_shed_adds(self, poll: PollView, report: ReconcileReport) -> None:
        """With its message not found (deleted, or a transient 404), a poll still gets what this
        replica shed, as the events they were (not a reading of the message): on a single-choice
        poll each user's latest add newer than the vote, on an anonymous multiple-choice one every
        add of an option not recorded, on another multiple-choice one each user's latest act per
        emoji, in the order they were taken in (the vote rules skip what a newer vote already
        decided)."""
        recorded, voted_at = await self._store.votes_with_times(poll.id)
        events = self.missed.shed_events(poll, voted_at, recorded)
        if events:
            for outcome in await self._votes.apply_events(events, inline=True):
                report.votes_added += outcome is not None and outcome.changed

    def _confirmed(self, message_id: int, user_id: int, emoji: str, votes: frozenset[int]) -> bool:
        key, now = (message_id, user_id, emoji), self._monotonic()
        seen = self._candidates.get(key)
        if seen is not None and seen[1] == votes and now - seen[0] >= self._confirm_seconds:
            del self._candidates[key]
            return True
        if seen is None or seen[1] != votes:
            self._candidates[key] = (now, votes)
        self._deferred = True
        self._mark(message_id)  # the second look comes from the prompt pass
        return False

    async def _read_users(
        self, poll: PollView, emoji: str, option: int, held: dict[int, set[int]], report: ReconcileReport
    ) -> bool:
        """Page through one reaction's users into ``held``; ``False`` when the budget ran out mid-way."""
        assert poll.message_id is not None
        after = 0
        while True:
            if report.calls >= self.budget:
                return False
            report.calls += 1
            page = await self._gateway.list_reaction_users(
                poll.channel_id, poll.message_id, emoji, after=after, limit=MAX_REACTION_USERS_PAGE
            )
            for user in page:
                if not user.is_bot:
                    held.setdefault(user.user_id, set()).add(option)
            if len(page) < MAX_REACTION_USERS_PAGE:
                return True
            after = page[-1].user_id

    def _backoff(self, poll_id: int, now: datetime, *, prompt: bool = False) -> None:
        """Back a failing poll off (:data:`BACKGROUND_BACKOFF`, or :data:`MARKED_BACKOFF` for the prompt
        pass: a marked poll must be repaired promptly, also when it failed in the background before
        it was marked); one jitter draw for both."""
        failures = self._retry_at.get(poll_id, (now, 0, now))[1] + 1
        draw = self._rng.random()
        background = BACKGROUND_BACKOFF.base(failures) * (1.0 - BACKGROUND_BACKOFF.jitter * draw)
        marked = MARKED_BACKOFF.base(failures) * (1.0 - MARKED_BACKOFF.jitter * draw)
        self._retry_at[poll_id] = (
            now + timedelta(seconds=marked if prompt else background),
            failures,
            now + timedelta(seconds=marked),
        )

    def _add(self, report: ReconcileReport) -> None:
        for f in dataclasses.fields(ReconcileReport):
            if f.type in ("int", int):  # the counts (whether a pass was rate limited is not one)
                setattr(self.totals, f.name, getattr(self.totals, f.name) + getattr(report, f.name))
