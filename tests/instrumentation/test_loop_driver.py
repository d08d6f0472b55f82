"""The loop-side work on an application's loop is loop callbacks, not a task: the instrumentation
starts no task, stop ends it from any thread, and nothing is logged when an application's
``asyncio.run`` ends without closing it or its loop is closed."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import Generator, Iterator

import pytest
from opentelemetry.instrumentation.polly import PollyInstrumentor
from opentelemetry.instrumentation.polly._census import CensusResult
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly.setup import TelemetryHandle, start_telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.config import Settings
from polly.stats import StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.helpers import collect, new_provider

#: What asyncio logs for a task nobody owns.
UNOWNED = ("never retrieved", "destroyed but it is pending", "was never awaited")


def _others() -> list[asyncio.Task[object]]:
    """The tasks on this loop besides the running one: the instrumentation must add none."""
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def _first_census(telemetry: Telemetry) -> None:
    for _ in range(500):
        if telemetry.census.latest is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no census within 5 s")


async def _settled(telemetry: Telemetry) -> int:
    """The census count after a while longer than the census takes to run again."""
    telemetry.census.interval_seconds = 0.01
    await asyncio.sleep(0.1)
    return telemetry.census.censuses


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[list[warnings.WarningMessage]]:
    """Every log record (asyncio's included) and every warning, checked for unowned-task reports."""
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
        gc.collect()  # a task destroyed pending, or an exception never retrieved, is reported here
    reports = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    reports += [str(w.message) for w in caught]
    assert [m for m in reports if any(u in m for u in UNOWNED)] == []


def _handle(stats_registry: StatsRegistry, *, run_by_owner: bool = False) -> TelemetryHandle:
    handle = start_telemetry(
        Settings(), sources=[PollyStatsSource(stats_registry)], run_by_owner=run_by_owner
    )
    assert handle.telemetry is not None
    return handle


def test_a_plain_asyncio_run_app_gets_censuses_and_no_task(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, object] = {}

    async def main() -> None:
        handle = _handle(stats_registry)  # a loop runs: driven by its callbacks, as zero-code
        assert handle.telemetry is not None
        assert handle.telemetry.driven_loop is asyncio.get_running_loop()
        await _first_census(handle.telemetry)
        seen["tasks"] = _others()
        await handle.aclose()
        seen["loop"] = handle.telemetry.driven_loop
        seen["censuses"] = handle.telemetry.census.censuses
        await asyncio.sleep(0.1)
        seen["later"] = handle.telemetry.census.censuses

    asyncio.run(main())
    assert seen["tasks"] == []  # the census ran without a task of its own
    assert seen["loop"] is None
    assert seen["later"] == seen["censuses"]  # nothing after the close
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_census_keeps_running_on_the_loop_until_stopped(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    telemetry.census.interval_seconds = 0.01

    async def main() -> None:
        telemetry.attach_loop(asyncio.get_running_loop())
        await _first_census(telemetry)
        before = telemetry.census.censuses
        assert await _settled(telemetry) > before  # again every interval_seconds
        telemetry.stop()
        after = telemetry.census.censuses
        assert await _settled(telemetry) == after

    asyncio.run(main())


def test_instrumentor_aclose_stops_the_loop_side_work(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        provider, _reader = new_provider()
        instrumentor = PollyInstrumentor()
        instrumentor.instrument(meter_provider=provider, sources=[PollyStatsSource(stats_registry)])
        try:
            telemetry = instrumentor.telemetry
            assert telemetry is not None
            await _first_census(telemetry)
            assert _others() == []
            await instrumentor.aclose()
            assert instrumentor.telemetry is None
            assert telemetry.driven_loop is None
            stopped = telemetry.census.censuses
            assert await _settled(telemetry) == stopped
            await instrumentor.aclose()  # idempotent
        finally:
            provider.shutdown()

    asyncio.run(main())


def test_asyncio_run_ending_without_aclose_logs_nothing(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> TelemetryHandle:
        handle = _handle(stats_registry)
        assert handle.telemetry is not None
        await _first_census(handle.telemetry)
        return handle  # the loop ends with the next census callback scheduled

    handle = asyncio.run(main())
    try:
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        handle.shutdown()


def test_a_failing_census_is_logged_and_the_next_one_still_runs(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    steps = telemetry.census.steps

    def broken_once() -> Generator[CensusResult | None, None, None]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("census broke")
        return steps()

    telemetry.census.steps = broken_once  # type: ignore[method-assign]
    telemetry.census.interval_seconds = 0.01

    async def main() -> None:
        telemetry.attach_loop(asyncio.get_running_loop())
        await _first_census(telemetry)
        telemetry.stop()

    asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["gc class census failed"]
    assert errors[0].exc_info is not None
    assert "census broke" in str(errors[0].exc_info[1])
    assert len(calls) >= 2


def test_stop_from_another_thread_ends_the_loop_side_work(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        handle = _handle(stats_registry)
        assert handle.telemetry is not None
        await _first_census(handle.telemetry)
        stopper = threading.Thread(target=handle.shutdown)
        stopper.start()
        await asyncio.to_thread(stopper.join, 10)
        assert not stopper.is_alive()
        assert handle.telemetry.driven_loop is None
        stopped = handle.telemetry.census.censuses
        assert await _settled(handle.telemetry) == stopped
        assert _others() == []
        await handle.aclose()  # after shutdown: nothing left, returns at once

    asyncio.run(main())


def test_a_start_stopped_from_another_thread_before_it_runs_does_nothing(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def elsewhere() -> None:  # the start is scheduled on the loop, then cancelled at once
            telemetry.attach_loop(loop)
            telemetry.stop()

        await asyncio.to_thread(elsewhere)
        await asyncio.sleep(0.1)
        assert telemetry.census.censuses == 0
        assert telemetry.driven_loop is None

    asyncio.run(main())


def test_aclose_from_another_loop_stops_the_work_on_the_applications_loop(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    ready, closed = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    async def app() -> None:
        telemetry.attach_loop(asyncio.get_running_loop())
        await _first_census(telemetry)
        ready.set()
        await asyncio.to_thread(closed.wait, 10)
        seen["stopped"] = telemetry.census.censuses
        seen["later"] = await _settled(telemetry)

    app_thread = threading.Thread(target=asyncio.run, args=(app(),))
    app_thread.start()
    assert ready.wait(10)
    asyncio.run(telemetry.aclose())
    closed.set()
    app_thread.join(10)
    assert seen["later"] == seen["stopped"]


def test_a_loop_closed_while_driven_logs_nothing(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    loop = asyncio.new_event_loop()
    try:
        telemetry.attach_loop(loop)  # no asyncio.run: nothing cancels anything before close
        loop.run_until_complete(_first_census(telemetry))
        assert telemetry.census.censuses >= 1
        assert asyncio.all_tasks(loop) == set()
    finally:
        loop.close()  # the next census callback is simply never run
    telemetry.stop()  # after the close: nothing to cancel there, no error


async def test_stop_during_a_census_records_nothing_after(
    telemetry: Telemetry, provider: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    telemetry.census.chunk_size = 500  # many slices, so stop lands inside one census
    telemetry.attach_loop(asyncio.get_running_loop())
    for _ in range(3):
        await asyncio.sleep(0)  # a few slices in
    telemetry.stop()
    await asyncio.sleep(0.1)
    assert telemetry.census.latest is None
    assert telemetry.census.censuses == 0
    assert "polly.gc.census.duration" not in collect(provider[1])


async def test_run_by_owner_schedules_nothing_and_the_owner_awaits_run(stats_registry: StatsRegistry) -> None:
    handle = _handle(stats_registry, run_by_owner=True)
    assert handle.telemetry is not None
    try:
        assert handle.telemetry.driven_loop is None
        async with asyncio.TaskGroup() as group:
            owned = group.create_task(handle.run(), name="owner")
            await _first_census(handle.telemetry)
            owned.cancel()
        assert owned.cancelled()
    finally:
        await handle.aclose()
