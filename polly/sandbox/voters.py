"""Simulated voters for the sandbox gateway.

:class:`SandboxVoters` acts as ``voters`` distinct users reacting to the poll messages the sandbox
knows (live messages carrying the bot's reactions), with emojis taken from those reactions, at
``events_per_second`` on the injected clock. Each act toggles: a user who already shows the
emoji takes it back, otherwise adds it. The owner runs :meth:`SandboxVoters.run` as a coroutine
(a supervised task); tests call :meth:`SandboxVoters.step` directly.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from polly.clock import Monotonic, Sleep
from polly.sandbox.gateway import SandboxGateway

FIRST_VOTER_ID = 1_200_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class VoterStats:
    """What the voters did: ``acts`` accepted by the sandbox, ``idle`` steps with nothing to vote on."""

    acts: int
    idle: int


class SandboxVoters:
    """``voters`` users (ids from ``first_voter_id``) acting at ``events_per_second``.

    ``tick_seconds`` is the pacing step; after a stall at most ``max_burst`` acts are made up in one
    tick, so a paused loop never floods the sandbox.
    """

    def __init__(
        self,
        sandbox: SandboxGateway,
        *,
        voters: int,
        events_per_second: float,
        rng: random.Random,
        clock: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        tick_seconds: float = 0.02,
        max_burst: int = 1000,
        first_voter_id: int = FIRST_VOTER_ID,
    ) -> None:
        if voters < 1 or events_per_second <= 0 or tick_seconds <= 0 or max_burst < 1:
            msg = (
                "need voters >= 1, events_per_second > 0, tick_seconds > 0 and max_burst >= 1, got "
                f"{voters}, {events_per_second}, {tick_seconds}, {max_burst}"
            )
            raise ValueError(msg)
        self._sandbox, self._rng, self._clock, self._sleep = sandbox, rng, clock, sleep
        self._voters, self._first = voters, first_voter_id
        self.events_per_second = events_per_second
        self._tick, self._max_burst = tick_seconds, max_burst
        self._acts = self._idle = 0

    def stats(self) -> VoterStats:
        return VoterStats(self._acts, self._idle)

    def step(self) -> bool:
        """One act by a random voter on a random votable message; ``False`` if nothing happened."""
        picked = self._sandbox.pick_votable(self._rng)
        if picked is None or not picked[1]:
            self._idle += 1
            return False
        message_id, emojis = picked
        user = self._first + self._rng.randrange(self._voters)
        emoji = self._rng.choice(emojis)
        sandbox = self._sandbox
        if sandbox.has_reaction(message_id, user, emoji):
            done = sandbox.user_remove_reaction(message_id, user, emoji)
        else:
            done = sandbox.user_add_reaction(message_id, user, emoji)
        self._acts += done
        return done

    async def run(self, *, duration_seconds: float | None = None, max_acts: int | None = None) -> int:
        """Act at the configured rate until ``duration_seconds`` pass on the clock or ``max_acts``
        steps are made (forever if neither); returns the steps taken."""
        start, steps = self._clock(), 0
        while True:
            elapsed = self._clock() - start
            finished = False
            if duration_seconds is not None and elapsed >= duration_seconds:
                finished, elapsed = True, duration_seconds
            # the epsilon keeps float sums of tick lengths (0.1 = 0.0999…) from losing an act
            due = int(elapsed * self.events_per_second + 1e-9) - steps
            if max_acts is not None:
                due = min(due, max_acts - steps)
            if due > self._max_burst:  # a stall: drop the backlog beyond one burst
                start += (due - self._max_burst) / self.events_per_second
                due = self._max_burst
            for _ in range(max(due, 0)):
                self.step()
                steps += 1
            if finished or (max_acts is not None and steps >= max_acts):
                return steps
            await self._sleep(self._tick)
