"""Task metrics: ``polly.task.count`` by ``polly.task.name``, ``polly.task.failures`` and ``.restarts``.

In polly the supervisor publishes :class:`polly.stats.TaskStats` (kind ``tasks``): live tasks by
name and cumulative failure/restart counts. In any other asyncio application (no ``tasks``
provider), :meth:`TaskSignals.sample_loop` runs on the loop's side once per cycle and counts
``asyncio.all_tasks(loop)`` by coroutine ``__qualname__`` (``Task-N`` names are unbounded, the
coroutine's name is not); failures and restarts are then not known and not emitted.

Task names ever reported are capped (``MAX_TASK_NAMES``); later ones count as ``other``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.instrumentation.polly._census import OTHER, TypeNameBudget
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from polly.stats import StatsRegistry, TaskStats

NAME = "polly.task.name"
MAX_TASK_NAMES = 100


def _coro_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


class TaskSignals:
    def __init__(self, meter: Meter, registry: StatsRegistry) -> None:
        self.active = True
        self._registry = registry
        self._budget = TypeNameBudget(MAX_TASK_NAMES)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sampled: tuple[tuple[str, int], ...] | None = None
        meter.create_observable_up_down_counter(
            "polly.task.count", [self._observe_count], unit="{task}", description="Live tasks by name"
        )
        meter.create_observable_counter(
            "polly.task.failures",
            [self._counter("failed")],
            unit="{failure}",
            description="Supervised tasks that ended with an exception",
        )
        meter.create_observable_counter(
            "polly.task.restarts",
            [self._counter("restarted")],
            unit="{restart}",
            description="Supervised tasks restarted after a failure",
        )

    def _stats(self) -> TaskStats | None:
        for snap in self._registry.collect("tasks"):
            if isinstance(snap, TaskStats):
                return snap
        return None

    def _bounded(self, pairs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        merged: Counter[str] = Counter()
        for name, count in pairs:
            merged[name if self._budget.admit(name) else OTHER] += count
        return list(merged.items())

    def sample_loop(self) -> None:
        """Loop-side hook: count the loop's tasks by coroutine name (only without a polly supervisor)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        counts = Counter(_coro_name(t) for t in asyncio.all_tasks(loop))
        self._sampled = tuple(counts.items())

    def _observe_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return ()
        stats = self._stats()
        pairs = stats.live_by_name if stats is not None else self._sampled
        if pairs is None:
            return ()
        return [Observation(count, {NAME: name}) for name, count in self._bounded(pairs)]

    def _counter(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            stats = self._stats() if self.active else None
            return () if stats is None else [Observation(getattr(stats, field))]

        return callback
