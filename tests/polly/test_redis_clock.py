"""The Redis probe loop waits on the injected clock, and probes only while the breaker is not closed."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from polly.clock import FakeClock
from polly.config import RedisSettings, SecretUrl
from polly.redis import RedisConnector
from polly.stats import BreakerState

INTERVAL = 45.0


def _connector(clock: FakeClock) -> RedisConnector:
    settings = RedisSettings.model_validate(
        {"url": SecretUrl("redis://127.0.0.1:1/0"), "breaker_probe_interval_seconds": INTERVAL}, strict=False
    )
    return RedisConnector(settings, clock=clock.monotonic, sleep=clock.sleep)


async def test_the_probe_loop_waits_on_the_injected_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    connector = _connector(clock)
    probed_at: list[float] = []

    async def probe() -> bool:  # stands in for the PING: Redis stays down
        probed_at.append(clock.monotonic())
        return False

    monkeypatch.setattr(connector, "probe", probe)
    try:
        async with asyncio.TaskGroup() as tasks:  # the test owns the probe loop here
            loop = tasks.create_task(connector.probe_loop())
            async with asyncio.timeout(5):  # a bound on the test: real sleeps of 45 s would exceed it
                while len(clock.sleeps) < 3:  # noqa: ASYNC110 - the loop under test runs in between
                    await asyncio.sleep(0)
            assert probed_at == [], "a closed breaker is not probed"
            connector.breaker.trip()
            assert connector.breaker.state is not BreakerState.CLOSED
            async with asyncio.timeout(5):
                while len(probed_at) < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            loop.cancel()
    finally:
        await connector.aclose()
    assert set(clock.sleeps) == {INTERVAL}, "every wait is the probe interval, on the injected clock"
    # one probe per interval of the injected clock, after the breaker opened
    assert [b - a for a, b in itertools.pairwise(probed_at)] == [INTERVAL, INTERVAL]
