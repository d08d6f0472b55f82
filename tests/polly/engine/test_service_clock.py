"""The engine's loops wait on the injected sleep and time the reconciler on the injected monotonic clock."""

from __future__ import annotations

import asyncio

import pytest

from polly.clock import FakeClock
from polly.engine.reconciler import ReconcileReport
from polly.engine.service import Engine
from polly.supervisor import Supervisor
from tests.polly.engine.harness import harness


async def test_the_loops_wait_on_the_injected_clock(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(sqlite_url, tick_seconds=7.0, reconcile_interval_seconds=3600.0) as h:
        fake = FakeClock(monotonic_start=h.clock.monotonic())
        engine = Engine(
            h.settings, h.database, h.sandbox, clock=h.clock, monotonic=fake.monotonic, sleep=fake.sleep
        )
        real_pass = engine.reconciler.pass_once

        async def slow_pass() -> ReconcileReport:
            fake.advance(100.0)  # the pass takes 100 s of the engine's time
            return await real_pass()

        monkeypatch.setattr(engine.reconciler, "pass_once", slow_pass)
        try:
            async with Supervisor(name="t", registry=None) as sup:
                engine.start(sup)
                await sup.wait_ready(10)
                async with asyncio.timeout(60):  # a bound on the test, not a timing (a loaded machine)
                    while not ({7.0, 1.0} <= set(fake.sleeps) and max(fake.sleeps) > 60.0):  # noqa: ASYNC110
                        await asyncio.sleep(0)
                await sup.shutdown(5)
        finally:
            engine.close()
    waits = set(fake.sleeps)
    assert 7.0 in waits, "the scheduler waits tick_seconds"
    assert 1.0 in waits, "the repair loop waits a second"
    reconcile = [w for w in waits if w > 60.0]
    assert reconcile, "the reconciler waits the rest of its interval"
    assert all(w <= 3500.0 for w in reconcile), "the 100 s its pass took are subtracted"
