"""polly.background_tasks and polly.memory_utils keep upstream's names without upstream's bugs."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from polly import background_tasks, memory_utils
from polly.config import CacheSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    background_tasks.configure(CacheSettings(), timer=fake)
    yield fake
    background_tasks.configure(CacheSettings())


def test_upstream_constants() -> None:
    assert background_tasks.MAX_FETCH_RETRIES == 5
    assert background_tasks.RETRY_WINDOW_MINUTES == 30


def test_message_fetch_failures_is_a_view_of_the_tracker(clock: FakeClock) -> None:
    view = background_tasks.message_fetch_failures
    background_tasks.failure_tracker.record_failure(42, "fetch_message")
    clock.now += 5
    background_tasks.failure_tracker.record_failure(42, "history_search")
    entry = view[42]
    assert entry["count"] == 2
    assert entry["methods_tried"] == ["fetch_message", "history_search"]
    assert entry["first_failure"].tzinfo is UTC
    assert entry["last_attempt"] - entry["first_failure"] == timedelta(seconds=5)
    assert list(view) == [42]
    assert len(view) == 1
    del view[42]
    assert 42 not in view
    assert background_tasks.failure_tracker.get(42) is None
    with pytest.raises(KeyError):
        del view[42]


def test_message_fetch_failures_accepts_upstream_writes_naive_or_aware(clock: FakeClock) -> None:
    view = background_tasks.message_fetch_failures
    aware = datetime.now(UTC)
    naive = datetime.now()  # noqa: DTZ005 (upstream wrote naive local times; they must be accepted)
    view[1] = {"count": 3, "first_failure": aware, "last_attempt": aware, "methods_tried": ["fetch_message"]}
    view[2] = {"count": 1, "first_failure": naive, "last_attempt": naive, "methods_tried": []}
    assert background_tasks.failure_tracker.get(1) is not None
    assert abs((view[1]["first_failure"] - aware).total_seconds()) < 1e-3
    assert abs((view[2]["first_failure"] - naive.astimezone(UTC)).total_seconds()) < 1e-3
    with pytest.raises(ValueError, match=r"\['count'\]: expected an integer >= 0, got -1"):
        view[3] = {"count": -1}
    with pytest.raises(TypeError, match=r"\['first_failure'\]: expected a datetime"):
        view[3] = {"count": 1, "first_failure": "yesterday"}


def test_configure_keeps_references_working(clock: FakeClock) -> None:
    from polly.background_tasks import message_fetch_failures

    background_tasks.configure(CacheSettings(failure_tracker_max_entries=2), timer=clock)
    for key in range(5):
        background_tasks.failure_tracker.record_failure(key)
    assert len(message_fetch_failures) == 2


def test_startup_warning_counts_follow_the_throttle(clock: FakeClock) -> None:
    counts = background_tasks.startup_warning_counts
    assert dict(counts) == dict.fromkeys(memory_utils.STARTUP_WARNING_RESET_KEYS, 0)
    for _ in range(4):
        background_tasks.log_throttle.log("message_not_found", "missing")
    background_tasks.log_throttle.log("custom", "x")
    counts["rate_limited"] += 1  # upstream's own increment still works
    assert counts["message_not_found"] == 4
    assert counts["rate_limited"] == 1
    assert counts["custom"] == 1
    with pytest.raises(KeyError):
        counts["never-seen"]
    memory_utils.reset_counter_dict(counts)
    assert set(counts.values()) == {0}
    with pytest.raises(ValueError, match="expected an integer >= 0"):
        counts["custom"] = -3


# --- memory_utils --------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def _at(minutes_ago: float) -> datetime:
    return datetime.fromtimestamp(NOW - minutes_ago * 60, tz=UTC)


def test_cleanup_global_dict_mixes_naive_and_aware_without_wiping_everything() -> None:
    """Upstream compared naive with aware, caught the TypeError and deleted every entry."""
    fresh_naive = _at(5).astimezone().replace(tzinfo=None)  # local wall time, as datetime.now() gives
    target: dict[int, Any] = {
        1: {"last_attempt": _at(5), "count": 2},
        2: {"last_attempt": fresh_naive, "count": 4},
        3: {"last_attempt": _at(90)},
        4: {"last_attempt": _at(61).astimezone().replace(tzinfo=None)},
        5: {"last_attempt": NOW - 30},  # epoch seconds
        6: {"count": 1},  # no timestamp: upstream treats it as old
    }
    removed = memory_utils.cleanup_global_dict(target, max_age_minutes=60, now=lambda: NOW)
    assert removed == 3
    assert sorted(target) == [1, 2, 5]


def test_cleanup_global_dict_keeps_the_newest_max_size() -> None:
    target = {key: {"last_attempt": _at(key)} for key in range(10)}
    removed = memory_utils.cleanup_global_dict(target, max_size=4, now=lambda: NOW)
    assert removed == 6
    assert sorted(target) == [0, 1, 2, 3]


def test_cleanup_global_dict_works_through_the_failure_view(clock: FakeClock) -> None:
    tracker = background_tasks.failure_tracker
    for key in range(5):
        tracker.record_failure(key)
    clock.now += 1800
    tracker.record_failure(99)
    wall_now = tracker.to_datetime(clock.now).timestamp()
    removed = memory_utils.cleanup_global_dict(
        background_tasks.message_fetch_failures, max_age_minutes=20, now=lambda: wall_now
    )
    assert removed == 5
    assert tracker.keys() == [99]


def test_force_garbage_collection_is_young_generation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    real = gc.collect

    def spy(*args: Any) -> int:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(gc, "collect", spy)
    assert memory_utils.force_garbage_collection() >= 0
    assert calls == [(0,)]


def test_reset_counter_dict_named_keys_only() -> None:
    counters = {"a": 3, "b": 4}
    memory_utils.reset_counter_dict(counters, keys=["a", "c"])
    assert counters == {"a": 0, "b": 4, "c": 0}


async def test_decorator_awaits_async_functions_and_cleans_up_after() -> None:
    order: list[str] = []

    def cleanup() -> None:
        order.append("cleanup")

    @memory_utils.memory_cleanup_decorator(cleanup)
    async def close_poll(poll_id: int) -> str:
        """Close it."""
        await asyncio.sleep(0)
        order.append(f"body {poll_id}")
        return "closed"

    assert inspect.iscoroutinefunction(close_poll)
    assert close_poll.__name__ == "close_poll"
    assert close_poll.__doc__ == "Close it."
    assert order == []
    assert await close_poll(7) == "closed"
    assert order == ["body 7", "cleanup"]


async def test_decorator_propagates_errors_and_still_cleans_up(caplog: pytest.LogCaptureFixture) -> None:
    cleaned: list[bool] = []

    async def async_cleanup() -> None:
        cleaned.append(True)
        raise OSError("cleanup broke")

    @memory_utils.memory_cleanup_decorator(async_cleanup)
    async def boom() -> None:
        raise KeyError("body broke")

    with pytest.raises(KeyError, match="body broke"):
        await boom()
    assert cleaned == [True]
    assert "memory cleanup after boom failed" in caplog.text


def test_decorator_on_sync_functions_defaults_to_young_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_collection() -> int:
        calls.append("gc")
        return 0

    monkeypatch.setattr(memory_utils, "force_garbage_collection", fake_collection)

    @memory_utils.memory_cleanup_decorator()
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert calls == ["gc"]
    assert not inspect.iscoroutinefunction(add)


def test_cleanup_background_tasks_memory(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    tracker = background_tasks.failure_tracker
    tracker.record_failure(1)
    clock.now += 1000
    tracker.record_failure(2)
    clock.now += 2601  # past the ttl of 1 only; nothing has written since, so it is still held
    for _ in range(6):
        background_tasks.log_throttle.log("rate_limited", "429")
    assert memory_utils.cleanup_background_tasks_memory() == 1
    assert tracker.keys() == [2]
    assert background_tasks.startup_warning_counts["rate_limited"] == 0
