"""Removing voters' reactions off the vote path, with a bounded retry of the removals that fail.

On anonymous and single-choice polls the bot removes a voter's reaction once the vote is recorded
(as upstream does), and it removes a reaction refused by ``max_choices``. A reaction left behind
would later read as a *new* choice to the repair (:mod:`polly.engine.repair`), so a visible reaction
would mean two different things: every failed removal is therefore retried.

:class:`ReactionRemover` holds the pending removals (at most ``max_pending``; past that the oldest
is given up and its poll marked for repair, which removes leftovers); up to ``concurrency`` (8)
removals are in flight at once, since a removal left waiting behind others is a reaction another
replica may read. A 404 means the reaction or
message is gone (done); a 403 is final (the bot lacks Manage Messages: retrying cannot help). A 5xx,
transport failure or 429 is retried after 1 s doubling up to 60 s (a 429 after its retry-after at
least), at most ``attempts`` times; after that the poll is marked for repair. Removals that were
recorded but never confirmed are remembered for ``leftover_seconds`` (bounded) so the repair knows
such a reaction is a leftover, not a change of mind. When the engine stops, the pending removals
are each tried once more, for at most ``shutdown_flush_seconds`` (a retry-after still running is
respected): a reaction left behind by a stopped replica would look like a choice to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cachetools import TTLCache

from polly.clock import Backoff
from polly.engine.gateway import Gateway
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError

logger = logging.getLogger(__name__)
#: a failed removal is retried after 1 s, doubling, at most a minute (or the retry-after)
REMOVAL_RETRY_BACKOFF = Backoff(1.0, 2.0, cap=60.0)

#: (channel, message, emoji, user)
Removal = tuple[int, int, str, int]


@dataclass(slots=True)
class _Pending:
    attempts: int
    due: float


class ReactionRemover:
    """Removes reactions; retries failures a bounded number of times. Clock: ``monotonic`` seconds."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        attempts: int = 6,
        max_pending: int = 20_000,
        leftover_seconds: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_given_up: Callable[[int], None] | None = None,
        shutdown_flush_seconds: float = 2.0,
        concurrency: int = 8,
    ) -> None:
        self._concurrency = max(1, concurrency)
        self._flush_seconds = shutdown_flush_seconds
        self._gateway = gateway
        self._attempts = attempts
        self._max_pending = max_pending
        self._now = monotonic
        self._on_given_up = on_given_up
        self._pending: OrderedDict[Removal, _Pending] = OrderedDict()
        self._leftovers: TTLCache[tuple[int, int, str], float] = TTLCache(
            maxsize=max_pending, ttl=leftover_seconds, timer=monotonic
        )
        self._wake = asyncio.Event()
        self.removed = 0
        self.failures = 0
        self.given_up = 0
        self.giving_up: int | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def is_leftover(self, message_id: int, user_id: int, emoji: str) -> bool:
        """``True`` if the bot recorded this reaction and its removal has not been confirmed."""
        return (message_id, user_id, emoji) in self._leftovers

    def enqueue(self, removal: Removal) -> None:
        """Queue a removal to be made by :meth:`run` (or :meth:`retry_due`) as soon as possible."""
        self._leftovers[(removal[1], removal[3], removal[2])] = self._now()
        self._add(removal, _Pending(0, self._now()))

    async def remove_now(self, removal: Removal) -> bool:
        """Try once at once; a transient failure is queued for retry. ``True`` if it is done."""
        self._leftovers[(removal[1], removal[3], removal[2])] = self._now()
        return await self._try(removal, _Pending(0, self._now()))

    def _add(self, removal: Removal, entry: _Pending) -> None:
        if removal not in self._pending and len(self._pending) >= self._max_pending:
            old, _ = self._pending.popitem(last=False)
            self._give_up(old, "too many pending removals")
        self._pending[removal] = entry
        self._wake.set()

    def _give_up(self, removal: Removal, why: str) -> None:
        self.given_up += 1
        logger.debug("gave up removing reaction %s of %s on %s: %s", removal[2], removal[3], removal[1], why)
        if self._on_given_up is not None:
            self.giving_up = removal[1]  # while the callback runs: it can tell this from a lost event
            try:
                self._on_given_up(removal[1])
            finally:
                self.giving_up = None

    async def _try(self, removal: Removal, entry: _Pending) -> bool:
        channel, message, emoji, user = removal
        try:
            await self._gateway.remove_reaction(channel, message, emoji, user)
        except NotFoundError:
            # Gone with its message, or Discord lost track: either way nothing to retry, but the
            # reaction stays noted as a leftover in case it is still visible.
            return True
        except ForbiddenError:
            self.failures += 1
            self._give_up(removal, "forbidden")
            return False
        except GatewayError as err:
            self.failures += 1
            entry.attempts += 1
            if entry.attempts >= self._attempts:
                self._give_up(removal, f"{entry.attempts} failures")
                return False
            delay = REMOVAL_RETRY_BACKOFF.delay(entry.attempts)
            if isinstance(err, RateLimitedError):
                delay = max(delay, err.retry_after_seconds)
            entry.due = self._now() + delay
            self._add(removal, entry)
            return False
        self._leftovers.pop((message, user, emoji), None)
        self.removed += 1
        return True

    async def retry_due(self) -> float:
        """Make every removal that is due, ``concurrency`` at a time; return seconds until the next one
        is (≤ 1)."""
        now = self._now()
        wait = 1.0
        due: list[tuple[Removal, _Pending]] = []
        for removal, entry in list(self._pending.items()):
            if entry.due > now:
                wait = min(wait, entry.due - now)
                continue
            del self._pending[removal]
            due.append((removal, entry))
        for wave in self._waves(due):
            await asyncio.gather(*(self._try(r, e) for r, e in wave))
            await asyncio.sleep(0)  # calls that answer at once never yield: let the loop run
        return max(wait, 0.01)

    def _waves(self, items: list[tuple[Removal, _Pending]]) -> Iterator[list[tuple[Removal, _Pending]]]:
        """``items`` in waves of at most ``concurrency`` removals, each in a different channel: the
        channels' reaction routes are rate-limited, and a call already in flight when a 429 arrives
        would land inside its retry-after window."""
        by_channel: dict[int, deque[tuple[Removal, _Pending]]] = {}
        for item in items:
            by_channel.setdefault(item[0][0], deque()).append(item)
        channels = deque(by_channel.values())
        while channels:
            wave = []
            for _ in range(min(self._concurrency, len(channels))):
                queue = channels.popleft()
                wave.append(queue.popleft())
                if queue:
                    channels.append(queue)
            yield wave

    async def run(self) -> None:
        """Loop forever (the owner cancels it; then :meth:`flush` runs)."""
        try:
            while True:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                await asyncio.sleep(await self.retry_due() if self._pending else 0)
        except asyncio.CancelledError:
            await self.flush(self._flush_seconds)
            raise

    async def flush(self, seconds: float) -> int:
        """Try every pending removal once now, due or not, for at most ``seconds``; return how many
        are still pending (the gate still answers a running retry-after locally)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                for wave in self._waves(list(self._pending.items())):
                    chunk = [(r, e) for r, e in wave if self._pending.pop(r, None)]
                    await asyncio.gather(*(self._try(r, e) for r, e in chunk))
        if self._pending:
            logger.info("stopping with %d reaction removal(s) not made", len(self._pending))
        return len(self._pending)
