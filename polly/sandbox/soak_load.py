"""The soak's voter driver: simulated users acting at a rate a burst can change while it runs.

Each (message, voter) pair uses two emojis of that message, fixed by the pair, so the sandbox's
ground truth has a known final size; a first sweep touches both emojis of every pair (two acts
each), after which acts toggle a random pair's emoji. With the default 5 voters and 2000 polls the
sweep is 20 000 acts: 100 s at 200 events/s, inside the two-minute warm-up.

The driver wakes every ``tick_seconds`` on the injected clock and makes, in one go, every act the
time since its last wake-up calls for: when the replicas keep the event loop busy it wakes late and
makes up the difference in bulk, so the rate offered is the rate asked for, not what a starved
loop manages. A backlog of more than ``max_backlog_seconds`` (a stall of the whole process) is not
made up; :attr:`Voters.missed` counts those acts (and acts due while no message could take one), so
the report can say what was really offered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from polly.clock import SYSTEM_CLOCK, Clock
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.soak_setup import USER_BASE


@dataclass(frozen=True, slots=True)
class LoadMark:
    """The driver at one instant: monotonic time, acts made and acts missed so far."""

    t: float
    acts: int
    missed: int


def offered_rate(start: LoadMark, end: LoadMark) -> float:
    """Acts per second made between two marks."""
    return (end.acts - start.acts) / max(end.t - start.t, 1e-9)


class Voters:
    """``voters`` simulated users per message acting at :attr:`rate` acts per second in total."""

    def __init__(
        self,
        sandbox: SandboxGateway,
        voters: int,
        rate: float,
        rng: random.Random,
        *,
        clock: Clock = SYSTEM_CLOCK,
        tick_seconds: float = 0.02,
        max_backlog_seconds: float = 1.0,
    ) -> None:
        self._sb, self._voters, self.rate, self._rng = sandbox, voters, rate, rng
        self._clock, self._tick, self._max_backlog = clock, tick_seconds, max_backlog_seconds
        self._swept: dict[int, int] = {}
        self.acts = 0
        self.missed = 0
        self.running = True

    @staticmethod
    def pair_emojis(message_id: int, user_index: int, emojis: list[str]) -> tuple[str, str]:
        first = (user_index * 7 + message_id) % len(emojis)
        return emojis[first], emojis[(first + 1) % len(emojis)]

    def mark(self) -> LoadMark:
        return LoadMark(self._clock.monotonic(), self.acts, self.missed)

    def act(self) -> bool | None:
        """One act of one voter: ``True`` if made, ``False`` if the message picked is not ready (its
        poll's reactions are still being added), ``None`` if there is no message to vote on."""
        sb, rng = self._sb, self._rng
        picked = sb.pick_votable(rng)
        if picked is None:
            return None
        message_id, emojis = picked
        if len(emojis) < 2:
            return False
        swept = self._swept.get(message_id, 0)
        if swept < 2 * self._voters:
            self._swept[message_id] = swept + 1
            index, which = divmod(swept, 2)
        else:
            index, which = rng.randrange(self._voters), rng.randrange(2)
        user = USER_BASE + index
        emoji = self.pair_emojis(message_id, index, sorted(emojis))[which]
        if sb.has_reaction(message_id, user, emoji):
            sb.user_remove_reaction(message_id, user, emoji)
        else:
            sb.user_add_reaction(message_id, user, emoji)
        self.acts += 1
        return True

    def act_many(self, count: int) -> int:
        """Up to ``count`` acts at once, picking again past messages not ready (at most ``4 * count``
        picks; fewer acts if nothing is votable); returns the acts made."""
        act, made = self.act, 0
        for _ in range(4 * count):
            if made >= count:
                break
            done = act()
            if done is None:
                break
            made += done
        return made

    async def run(self) -> None:
        """Act at :attr:`rate` (which a burst changes while running) until :attr:`running` is off."""
        clock = self._clock
        last, owed = clock.monotonic(), 0.0
        while self.running:
            now = clock.monotonic()
            owed += (now - last) * self.rate
            last = now
            limit = self.rate * self._max_backlog + 1.0
            if owed > limit:
                self.missed += int(owed - limit)
                owed = limit
            due = int(owed)
            self.missed += due - self.act_many(due)
            owed -= due
            await clock.sleep(self._tick)
