"""How a supervised loop is run: restarted after a failure with a :class:`~polly.clock.Backoff`,
reported through an :class:`~polly.outages.OutageLog`, counted as *failing* while it keeps failing.

The rules are in :mod:`polly.supervisor`'s docstring; this is the part that waits, so it reads the
time and sleeps only through the injected :class:`~polly.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging

from polly.clock import Backoff, Clock, Jitter
from polly.outages import OutageLog, describe
from polly.supervisor.tasks import Counters, Entry, LoopFn, Readiness

logger = logging.getLogger("polly.supervisor")

#: A loop's restart schedule unless told: 1 s doubling to a minute, shortened by up to 10 %.
RESTART_BACKOFF = Backoff(initial=1.0, multiplier=2.0, cap=60.0, jitter=0.1)


class LoopRestarts:
    """Runs loop functions for one supervisor: restart, backoff, failure reports, health."""

    def __init__(
        self,
        *,
        backoff: Backoff,
        clock: Clock,
        rng: Jitter,
        counters: Counters,
        changed: asyncio.Event,
        failing_after: int,
        healthy_after_seconds: float,
        recovered_after_seconds: float,
    ) -> None:
        self.backoff = backoff
        self.failing_after = failing_after
        self.healthy_after_seconds = healthy_after_seconds
        self.recovered_after_seconds = recovered_after_seconds
        self._clock = clock
        self._rng = rng
        self._counters = counters
        self._changed = changed
        self._outages = OutageLog(logger, timer=clock.monotonic)

    async def run(self, entry: Entry, fn: LoopFn, restart: bool) -> None:
        """Run ``fn`` until it returns; after a failure wait the backoff and run it again (if ``restart``)."""
        try:
            await self._body(entry, fn, restart)
        finally:
            if entry.recovery is not None:
                entry.recovery.cancel()
                entry.recovery = None

    async def _body(self, entry: Entry, fn: LoopFn, restart: bool) -> None:
        handle = Readiness(entry, self._changed)
        while True:
            entry.run_started = started = self._clock.monotonic()
            try:
                await fn(handle)
            except Exception as exc:
                self._counters.failed += 1
                entry.run_started = None
                healthy = self._clock.monotonic() - started >= self.healthy_after_seconds
                entry.streak = 1 if healthy else entry.streak + 1
                if not restart:
                    logger.exception("supervised loop %s failed; it is not restarted", entry.name)
                    return
                delay = self.backoff.delay(entry.streak, self._rng)
                self._report_failure(entry, exc, delay)
            else:
                entry.run_started = None
                return
            await self._clock.sleep(delay)  # outside the except block: the traceback is not kept alive
            self._counters.restarted += 1
            self._watch_recovery(entry)

    def _report_failure(self, entry: Entry, exc: Exception, delay: float) -> None:
        """One line when a loop starts failing, a throttled summary while it keeps failing."""
        if entry.recovery is not None:  # the restarted run failed before it counted as recovered
            entry.recovery.cancel()
            entry.recovery = None
        self._outages.failed(f"supervised loop {entry.name}", exc, retry_in_seconds=delay)
        if entry.streak == self.failing_after:  # once per outage: it is now listed as failing
            logger.error(
                "supervised loop %s is failing: %d consecutive failures, last %s; restart in %.2f s",
                entry.name, entry.streak, describe(exc), delay,
            )  # fmt: skip

    def _watch_recovery(self, entry: Entry) -> None:
        """After a restart, a run that lasts ``recovered_after_seconds`` means the loop recovered."""
        cause = f"supervised loop {entry.name}"
        if self._outages.down_for(cause) is None:
            return
        restarted = self._clock.monotonic()

        def recovered() -> None:
            entry.recovery = None
            self._outages.succeeded(cause, at=restarted)

        entry.recovery = asyncio.get_running_loop().call_later(self.recovered_after_seconds, recovered)

    def is_failing(self, entry: Entry, now: float) -> bool:
        """``failing_after`` consecutive failures or more, and no run lasting ``healthy_after_seconds``."""
        if entry.streak < self.failing_after:
            return False
        return entry.run_started is None or now - entry.run_started < self.healthy_after_seconds
