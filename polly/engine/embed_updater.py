"""Coalesced edits of the results embed: each poll's message at most once per interval.

Time is injected: ``monotonic`` times the intervals and ``sleep`` is every wait of the loop (the
rest of an interval, a 429's retry-after); a test passes a :class:`~polly.clock.FakeClock`'s methods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from polly.clock import Monotonic, Sleep
from polly.engine.embeds import poll_embed
from polly.engine.gateway import Gateway
from polly.engine.store import PollStore
from polly.errors import CorruptPollError, GatewayError, RateLimitedError, ServerError

logger = logging.getLogger(__name__)


class EmbedUpdater:
    """Coalesces embed edits: each dirty poll is edited at most once per ``interval_seconds``.

    The dirty set holds at most ``max_pending`` polls; beyond that the oldest mark is dropped (the
    next vote on that poll marks it again, and closing shows final results regardless). An edit
    that fails transiently (5xx, timeout, transport) keeps its poll marked, so it is tried again
    after the interval until it succeeds; a 429 waits out its retry-after (≤ 60 s) first.
    """

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        *,
        interval_seconds: float,
        max_pending: int = 10_000,
        monotonic: Monotonic = time.monotonic,
        on_refresh: Callable[[int], Awaitable[None]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
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
            await self._sleep(min(err.retry_after_seconds, 60.0))
        except ServerError as err:
            # 5xx, timeout or transport failure: the results would stay stale until the next vote,
            # so the poll stays marked and is edited again once its interval has passed.
            self.failures += 1
            self.mark(poll_id)
            logger.debug("embed refresh of poll %s failed, retried later: %s", poll_id, err)
        except (GatewayError, CorruptPollError) as err:
            # 404/403/400 or a corrupt row: retrying cannot help (the reconciler tracks gone messages).
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
                await self._sleep(delay)
                self._wake.set()
