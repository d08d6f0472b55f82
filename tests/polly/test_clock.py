"""polly.clock: the Backoff schedule (growth, cap, jitter bounds, validation), the fake and system clocks."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from polly.clock import FAKE_EPOCH, SYSTEM_CLOCK, Backoff, FakeClock, utcnow_naive


class Fixed:
    """A jitter source that always draws ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_the_schedule_multiplies_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, multiplier=2.0, cap=10.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(initial=2.0, multiplier=3.0, cap=100.0).delay(3) == 18.0
    assert Backoff(initial=1.0, multiplier=1.0, cap=5.0).delay(50) == 1.0


def test_zero_failures_counts_as_the_first_and_huge_counts_stay_at_the_cap() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, cap=60.0)
    assert backoff.delay(0) == backoff.delay(1) == 1.0
    assert backoff.delay(10**9) == 60.0
    assert Backoff(initial=1e-9, multiplier=1e6, cap=1e300).delay(10**6) == 1e300  # no overflow


def test_jitter_only_shortens_and_by_at_most_its_fraction() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, cap=8.0, jitter=0.25)
    assert backoff.delay(3, Fixed(0.0)) == 4.0
    assert backoff.delay(3, Fixed(0.5)) == 3.5
    assert backoff.delay(4, Fixed(0.999)) == pytest.approx(8.0 * (1 - 0.25 * 0.999))
    rng = random.Random(3)
    for failures in range(1, 12):
        base = backoff.base(failures)
        for _ in range(50):
            assert 0.75 * base <= backoff.delay(failures, rng) <= base <= 8.0


def test_full_jitter_spreads_over_the_whole_wait() -> None:
    backoff = Backoff(initial=4.0, multiplier=2.0, cap=4.0, jitter=1.0)
    draws = [backoff.delay(1, random.Random(seed)) for seed in range(200)]
    assert all(0 < d <= 4.0 for d in draws)
    assert min(draws) < 0.5
    assert max(draws) > 3.5


def test_the_same_rng_gives_the_same_schedule() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.5)
    first = [backoff.delay(n, random.Random(9)) for n in range(1, 6)]
    assert first == [backoff.delay(n, random.Random(9)) for n in range(1, 6)]
    assert first != [backoff.base(n) for n in range(1, 6)]


def test_a_backoff_is_a_frozen_value() -> None:
    backoff = Backoff(initial=1.0)
    assert backoff == Backoff(initial=1.0, multiplier=2.0, cap=60.0, jitter=0.0)
    with pytest.raises(AttributeError):
        backoff.cap = 5.0  # type: ignore[misc]


def test_each_bad_field_is_one_line_naming_the_rule() -> None:
    with pytest.raises(ValueError, match="initial") as info:
        Backoff(initial=0.0, multiplier=0.5, cap=float("nan"), jitter=1.5)
    assert str(info.value).splitlines() == [
        "backoff initial=0.0 must be a finite number > 0",
        "backoff multiplier=0.5 must be a finite number >= 1",
        "backoff cap=nan must be a finite number >= initial (0.0)",
        "backoff jitter=1.5 must be a fraction in [0, 1]",
    ]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"initial": -1.0}, "backoff initial=-1.0 must be a finite number > 0"),
        ({"initial": float("inf")}, "backoff initial=inf must be a finite number > 0"),
        ({"initial": 2.0, "cap": 1.0}, "backoff cap=1.0 must be a finite number >= initial (2.0)"),
        ({"initial": 1.0, "jitter": -0.1}, "backoff jitter=-0.1 must be a fraction in [0, 1]"),
        ({"initial": True}, "backoff initial=True must be a finite number > 0"),
    ],
)
def test_one_bad_field_is_exactly_one_line(fields: dict[str, float], line: str) -> None:
    with pytest.raises(ValueError, match=r"^backoff ") as info:
        Backoff(**fields)
    assert str(info.value) == line


def test_the_edges_of_the_rules_are_allowed() -> None:
    Backoff(initial=1.0, multiplier=1.0, cap=1.0, jitter=0.0)
    Backoff(initial=1e-6, cap=1e-6, jitter=1.0)


async def test_the_fake_clock_moves_only_when_told_and_records_sleeps() -> None:
    clock = FakeClock(monotonic_start=100.0)
    assert (clock.now(), clock.monotonic()) == (FAKE_EPOCH, 100.0)
    clock.advance(1.5)
    await clock.sleep(2.5)
    await clock.sleep(-1.0)  # asyncio.sleep treats a negative wait as none: so does the fake
    assert list(clock.sleeps) == [2.5, -1.0]
    assert clock.monotonic() == 104.0
    assert clock.now() == FAKE_EPOCH + timedelta(seconds=4)
    with pytest.raises(ValueError, match=r"advance\(-1\) must be >= 0"):
        clock.advance(-1)


async def test_the_fake_sleep_yields_to_other_tasks() -> None:
    clock = FakeClock()
    seen: list[str] = []

    async def other() -> None:
        seen.append("other ran")

    task = asyncio.ensure_future(other())
    await clock.sleep(3600)
    assert seen == ["other ran"]
    await task


def test_the_fake_clock_keeps_a_bounded_history_and_refuses_aware_starts() -> None:
    clock = FakeClock(max_sleeps=3)
    for i in range(10):
        asyncio.run(clock.sleep(float(i)))
    assert list(clock.sleeps) == [7.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="naive UTC"):
        FakeClock(datetime(2026, 1, 1, tzinfo=UTC))


async def test_the_system_clock_is_naive_utc_and_monotonic() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is None
    assert abs(now - before) < timedelta(seconds=60)
    assert abs(utcnow_naive() - now) < timedelta(seconds=60)
    first = SYSTEM_CLOCK.monotonic()
    await SYSTEM_CLOCK.sleep(0)
    assert SYSTEM_CLOCK.monotonic() >= first
