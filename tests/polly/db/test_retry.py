"""polly.db.retry: transient database failures are retried on a Backoff schedule, then reported."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.exc import OperationalError

from polly.clock import Backoff, FakeClock
from polly.db.retry import READ_RETRY_BACKOFF, is_transient, retry_with_backoff
from polly.errors import DatabaseUnavailableError, PoolExhaustedError


class NoJitter:
    def random(self) -> float:
        return 0.0


def flaky(fail_times: int, calls: list[int]) -> Callable[[], Awaitable[str]]:
    async def op() -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise DatabaseUnavailableError("down")
        return "ok"

    return op


async def test_an_outage_is_ridden_out_on_the_schedule_then_given_up() -> None:
    clock = FakeClock()
    calls: list[int] = []
    result = await retry_with_backoff(
        flaky(3, calls), what="read", max_delay_seconds=1.5, sleep=clock.sleep, rng=NoJitter()
    )
    assert result == "ok"
    assert list(clock.sleeps) == [0.5, 1.0, 1.5]
    assert clock.monotonic() == 3.0

    clock, calls = FakeClock(), list[int]()
    with pytest.raises(DatabaseUnavailableError, match=r"^read: still failing after 4 attempts over 3\.5 s"):
        await retry_with_backoff(
            flaky(10, calls), what="read", max_attempts=4, sleep=clock.sleep, rng=NoJitter()
        )
    assert list(clock.sleeps) == [0.5, 1.0, 2.0]
    assert len(calls) == 4


async def test_the_default_schedule_has_full_jitter_under_the_cap() -> None:
    assert Backoff(initial=0.5, multiplier=2.0, cap=30.0, jitter=1.0) == READ_RETRY_BACKOFF
    clock, calls = FakeClock(), list[int]()
    with pytest.raises(DatabaseUnavailableError):
        await retry_with_backoff(flaky(99, calls), what="read", max_attempts=9, sleep=clock.sleep)
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all(0 < wait <= base for wait, base in zip(clock.sleeps, bases, strict=True)), clock.sleeps


async def test_a_given_backoff_and_rng_are_used_exactly() -> None:
    clock, calls = FakeClock(), list[int]()
    backoff = Backoff(initial=0.1, multiplier=3.0, cap=2.0, jitter=0.5)
    await retry_with_backoff(
        flaky(4, calls), what="read", backoff=backoff, sleep=clock.sleep, rng=random.Random(2)
    )
    twin = random.Random(2)
    assert list(clock.sleeps) == [backoff.delay(n, twin) for n in range(1, 5)]


async def test_a_cap_below_the_first_wait_bounds_every_wait() -> None:
    clock, calls = FakeClock(), list[int]()
    await retry_with_backoff(
        flaky(3, calls), what="read", max_delay_seconds=0.2, sleep=clock.sleep, rng=NoJitter()
    )
    assert list(clock.sleeps) == [0.2, 0.2, 0.2]


async def test_exhaustion_and_other_errors_are_not_retried() -> None:
    clock = FakeClock()

    async def exhausted() -> None:
        raise PoolExhaustedError("full")

    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(PoolExhaustedError):
        await retry_with_backoff(exhausted, what="read", sleep=clock.sleep)
    with pytest.raises(KeyError):
        await retry_with_backoff(broken, what="read", sleep=clock.sleep)
    assert not clock.sleeps
    assert is_transient(OperationalError("SELECT 1", {}, Exception("gone")))
    with pytest.raises(ValueError, match="max_attempts must be >= 1, got 0"):
        await retry_with_backoff(broken, what="read", max_attempts=0)
