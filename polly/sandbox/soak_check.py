"""Comparing the database with the sandbox's ground truth, and fanning events out to replicas.

Expected votes per (message, user), from :class:`~polly.sandbox.truth.VoterTruth`:

- single choice: the user's last added emoji (a new vote replaces the old one);
- multiple choice, not anonymous: the emojis the user still holds (removing a reaction un-votes);
- multiple choice, anonymous: every emoji the user added (the bot removes reactions, so a user's
  "remove" can only hit a reaction the bot failed to remove, and never un-votes).

With ``max_choices`` the engine refuses additions past the cap, so only "no vote that the user did
not cast" and "no more than ``max_choices``" can be checked. A *lost vote* is an expected
(user, option) with no row in ``votes``; a *phantom vote* is a row no user act explains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from polly.clock import Monotonic
from polly.db.poll_rows import PollView
from polly.engine.gateway import ReactionEventQueue, ShedReportingEvents
from polly.engine.pass_through import PassThroughGateway
from polly.errors import RateLimitedError
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.truth import MessageTruth

T = TypeVar("T")


@dataclass(slots=True)
class VoteAudit:
    """Lost and phantom votes, over the polls audited."""

    polls: int = 0
    exact_polls: int = 0
    expected_votes: int = 0
    lost_votes: int = 0
    phantom_votes: int = 0
    over_max_choices: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


def expected_options(poll: PollView, truth: MessageTruth) -> dict[int, set[int]]:
    """user id → the option indexes the user's acts call for."""
    out: dict[int, set[int]] = {}
    for user_id, voter in truth.voters.items():
        if not poll.multiple_choice:
            emojis: Iterable[str] = [voter.last_added] if voter.last_added else []
        elif poll.anonymous:
            emojis = [e for e, n in voter.adds.items() if n > 0]
        else:
            emojis = voter.held
        options = {i for e in emojis if (i := poll.option_for(e)) is not None}
        if options:
            out[user_id] = options
    return out


def audit_poll(
    audit: VoteAudit, poll: PollView, truth: MessageTruth, votes: Mapping[int, set[int]], *, exact: bool
) -> None:
    """Compare one poll's ``votes`` (user → options) with the truth; ``exact`` for polls still open."""
    audit.polls += 1
    expected = expected_options(poll, truth)
    acted = {
        uid: {i for e, n in v.adds.items() if n > 0 and (i := poll.option_for(e)) is not None}
        for uid, v in truth.voters.items()
    }
    for user_id, options in votes.items():
        extra = options - acted.get(user_id, set())
        if extra:
            audit.phantom_votes += len(extra)
            audit.note(f"poll {poll.id}: user {user_id} has votes {sorted(extra)} nobody cast")
        if poll.max_choices is not None and len(options) > poll.max_choices:
            audit.over_max_choices += 1
            audit.note(f"poll {poll.id}: user {user_id} has {len(options)} votes, max {poll.max_choices}")
    if not exact or (poll.multiple_choice and poll.max_choices is not None):
        # Past the cap the engine refuses additions in arrival order, which the truth does not
        # record: for such polls only the phantom and cap checks above apply.
        return
    audit.exact_polls += 1
    for user_id, options in expected.items():
        got = votes.get(user_id, set())
        audit.expected_votes += len(options)
        missing = len(options - got)
        if missing:
            audit.lost_votes += missing
            audit.note(f"poll {poll.id}: user {user_id} expected {sorted(options)}, recorded {sorted(got)}")


class ReplicaGateway(ShedReportingEvents, PassThroughGateway):
    """One replica's view of a shared sandbox: its own event queue, the sandbox's REST calls
    (through :meth:`_through`) and readiness; :meth:`start` and :meth:`close` leave the shared
    sandbox alone.

    Discord delivers every event to every connection of a bot; :meth:`fan_out` does that here.
    :attr:`window_violations` counts the calls this replica made into a bucket (channel; all DMs
    share one) inside a retry-after that a 429 had given *it*: the soak requires 0. (The sandbox's
    own count also includes calls by a replica that had not been told.)
    """

    def __init__(self, sandbox: SandboxGateway, max_events: int, clock: Monotonic = time.monotonic) -> None:
        super().__init__(sandbox)
        self._events = ReactionEventQueue(max_events)
        self._clock = clock
        # bucket -> (end of the retry-after this replica was given, the number of the call told)
        self._told: dict[int, tuple[float, int]] = {}
        self._calls = 0
        self.context: tuple[int, int] | None = None
        self.window_violations = 0  # calls this replica made inside a retry-after it had been given

    async def _through(self, bucket: int, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Count a call inside a window this replica knows of, and learn windows from 429s.

        Over a connection (:mod:`polly.sandbox.remote`) calls overlap: :attr:`context` is
        then the call's request number and the last answer the replica had read when it sent it,
        so a call already on its way when the 429 came back is not counted. In process every
        earlier answer is known.
        """
        del what  # the gate's words for the call; the count needs only its bucket
        self._calls += 1
        number, known = self.context or (self._calls, self._calls - 1)
        now = self._clock()
        told = self._told.get(bucket)
        if told is not None and told[0] > now and known >= told[1]:
            self.window_violations += 1
        try:
            return await call()
        except RateLimitedError as err:
            if len(self._told) >= 10_000:
                self._told = {b: t for b, t in self._told.items() if t[0] > now}
            self._told[bucket] = (now + err.retry_after_seconds, number)
            raise

    @staticmethod
    async def fan_out(sandbox: SandboxGateway, replicas: Sequence[ReplicaGateway]) -> None:
        """Copy every sandbox event to each replica's queue (the owner runs and cancels this)."""
        while True:
            event = await sandbox.next_reaction_event()
            for replica in replicas:
                replica._events.offer(event)  # noqa: SLF001 - the fan-out is part of this class

    async def start(self) -> None:
        await asyncio.Event().wait()  # the shared sandbox is started once, by the soak

    async def close(self) -> None:
        return None
