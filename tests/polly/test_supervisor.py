"""polly.supervisor: ownership, restart with backoff, readiness, deadline shutdown and stats.

The clock is a :class:`~polly.clock.FakeClock` (its sleep advances it and yields once), so restart
tests never wait. Only the shutdown and readiness deadlines, which are event-loop time by
design, use short real timeouts.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from polly.clock import Backoff, FakeClock
from polly.errors import ReadinessTimeoutError, SupervisorError, TaskLimitError
from polly.stats import StatsRegistry, TaskStats
from polly.supervisor import Readiness, Supervisor


def make(fake: FakeClock, **kwargs: object) -> Supervisor:
    options: dict[str, object] = {
        "registry": None,
        "clock": fake,
        "rng": random.Random(5),
        "shutdown_timeout_seconds": 2.0,
    }
    options.update(kwargs)
    return Supervisor(**options)  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], limit: int = 10_000) -> None:
    """Let the loop run until ``predicate`` holds (bounded number of iterations, no sleeping)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def forever(on_start: Callable[[], None] | None = None) -> Callable[[Readiness], Awaitable[None]]:
    async def loop(ready: Readiness) -> None:
        if on_start is not None:
            on_start()
        ready.ready()
        await asyncio.Event().wait()

    return loop


async def test_short_tasks_run_and_are_released_at_once() -> None:
    fake = FakeClock()
    results: list[int] = []

    async def work(i: int) -> None:
        results.append(i)

    async with make(fake) as sup:
        for i in range(50):
            sup.spawn("work", work(i))
        assert sup.stats().live_by_name == (("work", 50),)
        await until(lambda: not sup.live())
        stats = sup.stats()
    assert sorted(results) == list(range(50))
    assert (stats.started, stats.finished, stats.failed, stats.cancelled) == (50, 50, 0, 0)
    assert stats.live_by_name == ()
    assert sup.live_count == 0


async def test_live_lists_names_and_ages_on_the_injected_clock() -> None:
    fake = FakeClock()
    async with make(fake) as sup:
        sup.start_loop("first", forever())
        fake.advance(10.0)
        sup.start_loop("second", forever())
        fake.advance(15.0)
        live = sup.live()
        assert [(t.name, t.kind, t.age_seconds) for t in live] == [
            ("first", "loop", 25.0),
            ("second", "loop", 15.0),
        ]


async def test_a_failing_task_never_cancels_its_siblings(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeClock()
    ticks = 0

    async def sibling(ready: Readiness) -> None:
        nonlocal ticks
        ready.ready()
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def broken() -> None:
        raise RuntimeError("short task broke")

    async with make(fake) as sup:
        sup.start_loop("sibling", sibling)
        sup.spawn("broken", broken())
        await until(lambda: sup.stats().failed == 1)
        before = ticks
        await until(lambda: ticks > before + 10)
        assert [t.name for t in sup.live()] == ["sibling"]
    assert "supervised task broken failed" in caplog.text
    assert "short task broke" in caplog.text


async def test_chaos_loop_restarts_with_growing_delays_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop that always raises is restarted with growing, capped delays and shown as failing."""
    fake = FakeClock()
    calls = 0
    sibling_ticks = 0

    async def always_fails(ready: Readiness) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"attempt {calls}")

    async def sibling(ready: Readiness) -> None:
        nonlocal sibling_ticks
        ready.ready()
        while True:
            sibling_ticks += 1
            await asyncio.sleep(0)

    registry = StatsRegistry()
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.1)
    async with make(fake, registry=registry, backoff=backoff, failing_after=3) as sup:
        sup.start_loop("sibling", sibling)
        sup.start_loop("chaos", always_fails)
        await until(lambda: len(fake.sleeps) >= 9)
        delays = list(fake.sleeps)[:9]
        stats = registry.collect("tasks")
        live = {t.name: t for t in sup.live()}
        ticks_when_failing = sibling_ticks
        await until(lambda: sibling_ticks > ticks_when_failing + 20)  # the sibling keeps running
        assert "sibling" in dict(sup.stats().live_by_name)
    assert all(later > earlier for earlier, later in itertools.pairwise(delays[:6])), delays
    bases = [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert all(0.9 * base <= delay <= base for base, delay in zip(bases, delays, strict=True)), delays
    assert max(fake.sleeps) <= 30.0
    assert len(stats) == 1
    snapshot = stats[0]
    assert isinstance(snapshot, TaskStats)
    assert snapshot.failing == ("chaos",)
    assert snapshot.restarted >= 8
    assert snapshot.failed >= 9
    assert live["chaos"].failing
    assert live["chaos"].consecutive_failures >= 9
    assert not live["sibling"].failing
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "is failing" in r.getMessage()]
    assert errors, "a loop that keeps failing must be logged at ERROR"
    assert "chaos is failing: 3 consecutive failures" in errors[0].getMessage()
    assert registry.collect("tasks") == [], "stats are unregistered at shutdown"


async def test_a_long_healthy_run_clears_failing_and_resets_the_backoff() -> None:
    fake = FakeClock()
    runs = 0
    gate = asyncio.Event()

    async def flaky(ready: Readiness) -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError("early failure")
        ready.ready()
        await gate.wait()  # healthy run, ended by the test
        raise ValueError("late failure")

    async with make(fake, failing_after=3, healthy_after_seconds=60.0) as sup:
        sup.start_loop("flaky", flaky)
        await until(lambda: runs == 4)
        assert sup.stats().failing == ("flaky",)
        fake.advance(60.0)  # the fourth run has now lasted healthy_after_seconds
        assert sup.stats().failing == ()
        gate.set()
        await until(lambda: len(fake.sleeps) == 4)
        assert sup.live()[0].consecutive_failures == 1
        assert fake.sleeps[3] <= 1.0, "the backoff starts over after a healthy run"


async def test_loop_without_restart_runs_once() -> None:
    fake = FakeClock()
    runs = 0

    async def once(ready: Readiness) -> None:
        nonlocal runs
        runs += 1
        raise ValueError("no retry")

    async with make(fake) as sup:
        sup.start_loop("once", once, restart=False)
        await until(lambda: not sup.live())
        stats = sup.stats()
    assert runs == 1
    assert not fake.sleeps
    assert (stats.failed, stats.restarted, stats.finished) == (1, 0, 1)


async def test_wait_ready_returns_once_every_loop_is_ready() -> None:
    fake = FakeClock()
    go = asyncio.Event()

    async def slow_start(ready: Readiness) -> None:
        await go.wait()
        ready.ready()
        await asyncio.Event().wait()

    async with make(fake) as sup:
        sup.start_loop("fast", forever())
        sup.start_loop("slow", slow_start)
        waiter = asyncio.ensure_future(sup.wait_ready(timeout_seconds=5))
        await until(lambda: sup.live()[0].name == "fast")
        await asyncio.sleep(0)
        assert not waiter.done()
        go.set()
        await asyncio.wait_for(waiter, 5)


async def test_wait_ready_times_out_naming_the_loop() -> None:
    fake = FakeClock()

    async def never_ready(ready: Readiness) -> None:
        await asyncio.Event().wait()

    async with make(fake) as sup:
        sup.start_loop("ok", forever())
        sup.start_loop("stuck-start", never_ready)
        with pytest.raises(ReadinessTimeoutError, match=r"not ready after 0.05 s: stuck-start$") as info:
            await sup.wait_ready(timeout_seconds=0.05)
    assert info.value.task_names == ("stuck-start",)
    assert isinstance(info.value, TimeoutError)


async def test_wait_ready_fails_fast_when_a_loop_ends_unready() -> None:
    fake = FakeClock()

    async def quits(ready: Readiness) -> None:
        return

    async with make(fake) as sup:
        sup.start_loop("quitter", quits)
        started = time.monotonic()
        with pytest.raises(ReadinessTimeoutError, match="ended before signalling readiness: quitter"):
            await sup.wait_ready(timeout_seconds=30)
        assert time.monotonic() - started < 5


async def test_shutdown_runs_in_reverse_start_order() -> None:
    fake = FakeClock()
    stopped: list[str] = []

    def named(name: str) -> Callable[[Readiness], Awaitable[None]]:
        async def loop(ready: Readiness) -> None:
            ready.ready()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(name)

        return loop

    sup = make(fake)
    async with sup:
        for name in ("db", "redis", "engine"):
            sup.start_loop(name, named(name))
        await sup.wait_ready(timeout_seconds=5)
    assert stopped == ["engine", "redis", "db"]
    stats = sup.stats()
    assert (stats.cancelled, stats.live_by_name) == (3, ())
    assert sup.stuck == ()


async def test_shutdown_names_a_task_that_ignores_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    """Shutdown returns by its deadline, names the stubborn task, and still stops the well-behaved ones."""
    fake = FakeClock()
    release = asyncio.Event()
    polite_stopped = False

    async def stubborn(ready: Readiness) -> None:
        ready.ready()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores cancellation on purpose

    async def polite(ready: Readiness) -> None:
        nonlocal polite_stopped
        ready.ready()
        try:
            await asyncio.Event().wait()
        finally:
            polite_stopped = True

    sup = make(fake)
    await sup.__aenter__()
    sup.start_loop("polite", polite)
    sup.start_loop("stubborn", stubborn)
    await sup.wait_ready(timeout_seconds=5)
    started = time.monotonic()
    stuck = await sup.shutdown(0.2)
    elapsed = time.monotonic() - started
    assert stuck == ("stubborn",)
    assert 0.15 <= elapsed < 1.5
    assert polite_stopped, "tasks started before the stubborn one are still cancelled and awaited"
    assert "still running after the 0.2 s shutdown deadline: stubborn" in caplog.text
    assert await sup.shutdown(0.2) == ("stubborn",)
    with pytest.raises(SupervisorError, match="is closed"):
        sup.spawn("late", asyncio.sleep(0))
    release.set()  # the stubborn task ends on its own; the task group then closes
    assert sup._host is not None
    await asyncio.wait_for(sup._host, 5)


async def test_max_tasks_is_enforced_and_refused_coroutines_are_closed() -> None:
    fake = FakeClock()
    gate = asyncio.Event()
    async with make(fake, max_tasks=2) as sup:
        sup.spawn("a", gate.wait())
        sup.spawn("b", gate.wait())
        refused = gate.wait()
        with pytest.raises(TaskLimitError, match="limit of 2 live tasks"):
            sup.spawn("c", refused)
        assert inspect.getcoroutinestate(refused) == inspect.CORO_CLOSED, "closed, not left un-awaited"
        gate.set()
        await until(lambda: not sup.live())
        sup.spawn("d", gate.wait())


async def test_tasks_cancelled_before_they_start_leave_nothing_behind() -> None:
    fake = FakeClock()
    sup = make(fake)
    async with sup:
        for _ in range(5):
            sup.spawn("never-started", asyncio.sleep(10))
    assert sup.stats().cancelled == 5
    assert sup.live() == []


def test_the_default_restart_schedule_is_one_second_doubling_to_a_minute() -> None:
    backoff = Supervisor(registry=None).backoff
    assert (backoff.initial, backoff.multiplier, backoff.cap, backoff.jitter) == (1.0, 2.0, 60.0, 0.1)


async def test_restarts_follow_the_injected_backoff_and_rng() -> None:
    """The waits are exactly ``backoff.delay(n, rng)``: the same schedule drawn from an equal rng."""
    fake = FakeClock()
    backoff = Backoff(initial=0.5, multiplier=3.0, cap=10.0, jitter=0.5)

    async def always_fails(ready: Readiness) -> None:
        raise ConnectionError("down")

    async with make(fake, backoff=backoff, rng=random.Random(7)) as sup:
        sup.start_loop("chaos", always_fails)
        await until(lambda: len(fake.sleeps) >= 6)
    twin = random.Random(7)
    assert list(fake.sleeps)[:6] == [backoff.delay(n, twin) for n in range(1, 7)]


def test_invalid_settings_are_refused_with_the_rule() -> None:
    rules = r"^supervisor 'polly': max_tasks=0 must be >= 1; failing_after=0 must be >= 1$"
    with pytest.raises(ValueError, match=rules):
        Supervisor(max_tasks=0, failing_after=0)


async def test_supervisor_can_be_entered_once() -> None:
    sup = make(FakeClock())
    async with sup:
        pass
    with pytest.raises(SupervisorError, match="entered once"):
        await sup.__aenter__()
