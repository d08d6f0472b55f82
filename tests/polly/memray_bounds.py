"""Memory bounds of the runtime, measured by pytest-memray.

pytest-memray's markers act only under ``pytest --memray``, so this file is not collected by a plain
run (its name does not match ``test_*.py``): ``tests/polly/test_memory_bounds.py`` runs it in a
subprocess as ``python -m pytest --memray tests/polly/memray_bounds.py`` (with ``PYTHONMALLOC=malloc``
so leak accounting sees every object) and asserts it passes. It also runs it with
``POLLY_MEMRAY_NEGATIVE=1``, which swaps in upstream's unbounded behaviour (a plain dict of failures;
references kept to finished tasks) and asserts that both limits then fail.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import pytest

from polly.caches import FailureTracker
from polly.supervisor import Supervisor

NEGATIVE = os.environ.get("POLLY_MEMRAY_NEGATIVE") == "1"

FAILING_KEYS = 1_000_000
TRACKER_ENTRIES = 10_000
FAILURE_MEMORY_LIMIT = "8 MB"  # measured peak: 4.7 MiB for 10 000 entries

SUPERVISED_TASKS = 100_000
BATCH = 100
LEAK_LIMIT_PER_LOCATION = "64 KB"

_kept: list[Any] = []  # the negative run's stand-in for upstream's set of finished tasks


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.mark.limit_memory(FAILURE_MEMORY_LIMIT)
def test_a_million_distinct_failing_keys_stay_under_the_limit() -> None:
    if NEGATIVE:
        failures: dict[int, dict[str, Any]] = {}
        for key in range(FAILING_KEYS):
            failures[key] = {
                "count": 1,
                "first_failure": 0.0,
                "last_attempt": 0.0,
                "methods_tried": ["fetch"],
            }
        assert len(failures) == FAILING_KEYS
        return
    tracker = FailureTracker(max_entries=TRACKER_ENTRIES, ttl_seconds=3600.0, timer=_Clock())
    for key in range(FAILING_KEYS):
        tracker.record_failure(key, "fetch_message")
    assert len(tracker) == TRACKER_ENTRIES
    assert tracker.stats().evictions == FAILING_KEYS - TRACKER_ENTRIES


async def _drain(sup: Supervisor) -> None:
    """Yield to the loop until the supervisor has no live task (short tasks end in one step)."""
    for _ in range(100):
        if not sup.live_count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{sup.live_count} tasks still live")


def _live_tasks() -> int:
    return sum(isinstance(obj, asyncio.Task) for obj in gc.get_objects())


@pytest.mark.limit_leaks(LEAK_LIMIT_PER_LOCATION)
async def test_a_hundred_thousand_supervised_tasks_leave_no_task_alive() -> None:
    async def short(i: int) -> int:
        if NEGATIVE:
            _kept.append(asyncio.current_task())
        return i

    gc.collect()
    before = _live_tasks()  # this test's own task and the runner's
    # Batches of BATCH live tasks: asyncio's global weak set of tasks keeps its high-water table
    # size (a set never shrinks), which a bigger peak would show as a "leak" of the interpreter's.
    async with Supervisor(name="memray", registry=None, max_tasks=2 * BATCH) as sup:
        for i in range(SUPERVISED_TASKS):
            sup.spawn("short", short(i))
            if sup.live_count >= BATCH:
                await _drain(sup)
        await _drain(sup)
        stats = sup.stats()
    assert (stats.started, stats.finished) == (SUPERVISED_TASKS, SUPERVISED_TASKS)
    del sup
    await asyncio.sleep(0)  # the loop drops its last wake-up handle of the supervisor's host task
    gc.collect()
    if not NEGATIVE:  # the negative run must be caught by memray's leak check alone
        assert _live_tasks() == before
