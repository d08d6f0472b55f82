"""The loop-side task has an owner: kept, its end observed, awaited by ``aclose``; nothing is logged
when an application's ``asyncio.run`` ends without closing it, or when its loop is closed."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.polly import PollyInstrumentor
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly.setup import TelemetryHandle, start_telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.config import Settings
from polly.stats import StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.helpers import collect, new_provider

NAME = "polly-telemetry"
#: What asyncio logs for a task nobody owns.
UNOWNED = ("never retrieved", "destroyed but it is pending", "was never awaited")


def _ours() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == NAME]


async def _first_census(telemetry: Telemetry) -> None:
    for _ in range(500):
        if telemetry.census.latest is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no census within 5 s")


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


def test_aclose_awaits_the_task_in_a_plain_asyncio_run_app(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, object] = {}

    async def main() -> None:
        handle = _handle(stats_registry)  # a loop runs: the handle's own task, as zero-code
        assert handle.telemetry is not None
        (task,) = _ours()
        assert handle.telemetry.task is task
        await _first_census(handle.telemetry)
        await handle.aclose()
        seen["done"] = task.done()
        seen["left"] = _ours()
        seen["task"] = task
        seen["censuses"] = handle.telemetry.census.censuses
        await asyncio.sleep(0.05)
        seen["later"] = handle.telemetry.census.censuses

    asyncio.run(main())
    assert seen["done"] is True  # ended when aclose returned: awaited, not only asked to stop
    assert seen["left"] == []
    task = seen["task"]
    assert isinstance(task, asyncio.Task)
    assert task.cancelled()
    assert seen["later"] == seen["censuses"]  # nothing after the close
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_instrumentor_aclose_awaits_the_task_on_its_loop(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        provider, _reader = new_provider()
        instrumentor = PollyInstrumentor()
        instrumentor.instrument(meter_provider=provider, sources=[PollyStatsSource(stats_registry)])
        try:
            (task,) = _ours()
            await asyncio.sleep(0)  # it started
            await instrumentor.aclose()
            assert task.done()  # nothing else yielded to the loop: aclose itself awaited it
            assert task.cancelled()
            assert _ours() == []
            assert instrumentor.telemetry is None
            await instrumentor.aclose()  # idempotent
        finally:
            provider.shutdown()

    asyncio.run(main())


def test_asyncio_run_ending_without_aclose_logs_nothing(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, asyncio.Task[object]] = {}

    async def main() -> TelemetryHandle:
        handle = _handle(stats_registry)
        assert handle.telemetry is not None
        (seen["task"],) = _ours()
        await _first_census(handle.telemetry)
        return handle  # asyncio.run cancels what remains: the telemetry task among them

    handle = asyncio.run(main())
    try:
        assert seen["task"].cancelled()
        assert handle.telemetry is not None
        assert handle.telemetry._loop_task._task is None  # its end was observed: no reference left
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        handle.shutdown()


def test_an_error_in_the_task_is_logged_once(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("census broke")

    telemetry.census.run = broken  # type: ignore[method-assign]

    async def main() -> None:
        telemetry.attach_loop(asyncio.get_running_loop())
        (task,) = _ours()
        await asyncio.wait([task])

    asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"{NAME} ended with an error; no more loop-side work on this loop"
    ]
    assert errors[0].exc_info is not None
    assert "census broke" in str(errors[0].exc_info[1])


def test_stop_from_another_thread_ends_the_task(
    stats_registry: StatsRegistry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        handle = _handle(stats_registry)
        assert handle.telemetry is not None
        (task,) = _ours()
        await _first_census(handle.telemetry)
        stopper = threading.Thread(target=handle.shutdown)
        stopper.start()
        await asyncio.to_thread(stopper.join, 10)
        assert not stopper.is_alive()
        await asyncio.wait([task], timeout=5)
        assert task.cancelled()
        assert _ours() == []
        await handle.aclose()  # after shutdown: nothing left, returns at once

    asyncio.run(main())


def test_a_start_stopped_from_another_thread_before_it_runs_creates_nothing(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def elsewhere() -> None:  # the creation is scheduled on the loop, then cancelled at once
            telemetry.attach_loop(loop)
            telemetry.stop()

        await asyncio.to_thread(elsewhere)
        for _ in range(5):
            await asyncio.sleep(0)
        assert _ours() == []
        assert telemetry.task is None

    asyncio.run(main())


def test_aclose_from_another_loop_waits_for_the_task(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    ready = threading.Event()
    seen: dict[str, bool] = {}

    async def app() -> None:
        telemetry.attach_loop(asyncio.get_running_loop())
        (task,) = _ours()
        await _first_census(telemetry)  # it runs: only a cancellation ends it now
        ready.set()
        await asyncio.wait([task], timeout=10)
        seen["cancelled"] = task.cancelled()

    app_thread = threading.Thread(target=asyncio.run, args=(app(),))
    app_thread.start()
    assert ready.wait(10)

    async def closer() -> None:
        await telemetry.aclose()
        seen["ended_at_return"] = telemetry.task is None

    asyncio.run(closer())
    app_thread.join(10)
    assert seen == {"ended_at_return": True, "cancelled": True}


def test_a_loop_closed_with_the_task_pending_ends_it(
    telemetry: Telemetry, quiet: list[warnings.WarningMessage]
) -> None:
    loop = asyncio.new_event_loop()
    telemetry.attach_loop(loop)  # no asyncio.run: nothing will cancel the task before close
    loop.run_until_complete(asyncio.sleep(0.05))
    task = telemetry.task
    assert task is not None
    assert not task.done()
    loop.close()
    assert telemetry.task is None  # ended at close
    coro = task.get_coro()
    assert coro is not None
    assert getattr(coro, "cr_frame", None) is None  # its coroutine is closed: it never runs again
    del task, coro
    telemetry.stop()  # after the close: nothing left to cancel, no error


async def test_stop_during_a_census_records_nothing_after(
    telemetry: Telemetry, provider: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    telemetry.census.chunk_size = 500  # many slices, so stop lands inside one census
    async with asyncio.TaskGroup() as group:
        group.create_task(telemetry.census.census_async())
        await asyncio.sleep(0)
        telemetry.stop()
    assert telemetry.census.latest is None
    assert telemetry.census.censuses == 0
    assert "polly.gc.census.duration" not in collect(provider[1])


async def test_run_by_owner_schedules_nothing_and_the_owner_awaits_run(stats_registry: StatsRegistry) -> None:
    handle = _handle(stats_registry, run_by_owner=True)
    assert handle.telemetry is not None
    try:
        assert _ours() == []
        assert handle.telemetry.task is None
        async with asyncio.TaskGroup() as group:
            owned = group.create_task(handle.run(), name="owner")
            await _first_census(handle.telemetry)
            owned.cancel()
        assert owned.cancelled()
        assert _ours() == []
    finally:
        await handle.aclose()
