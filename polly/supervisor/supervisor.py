"""The :class:`Supervisor`: lifecycle, starting tasks, shutdown, readiness and stats.

See :mod:`polly.supervisor` for the rules. This is the only module in polly that creates tasks.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal

from polly.clock import SYSTEM_CLOCK, Backoff, Clock, Jitter
from polly.errors import ReadinessTimeoutError, SupervisorError, TaskLimitError
from polly.stats import StatsRegistry, TaskStats
from polly.stats import registry as default_registry
from polly.supervisor.restarts import RESTART_BACKOFF, LoopRestarts
from polly.supervisor.tasks import Counters, Entry, LiveTask, LoopFn, TaskKind

logger = logging.getLogger("polly.supervisor")


class Supervisor:
    """Owns polly's background tasks; see :mod:`polly.supervisor` for the rules.

    Use it as ``async with Supervisor(...) as sup:``. Arguments (durations in seconds):
    ``max_tasks`` live tasks at most; ``shutdown_timeout_seconds`` the deadline used when the block
    exits; ``backoff`` the loops' restart schedule; ``failing_after`` consecutive failures make a
    loop *failing*; a run of ``healthy_after_seconds`` clears it (and restarts the schedule);
    ``recovered_after_seconds`` of a restarted run writes "recovered". ``clock`` and ``rng`` are the
    time and the jitter. ``registry``: where :meth:`stats` is published under kind ``"tasks"`` and
    ``name`` (None: not).
    """

    def __init__(
        self,
        *,
        name: str = "polly",
        max_tasks: int = 1024,
        shutdown_timeout_seconds: float = 10.0,
        backoff: Backoff = RESTART_BACKOFF,
        failing_after: int = 3,
        healthy_after_seconds: float = 60.0,
        recovered_after_seconds: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: Jitter | None = None,
        registry: StatsRegistry | None = default_registry,
    ) -> None:
        limits = (
            ("max_tasks", max_tasks, ">= 1", max_tasks >= 1),
            ("shutdown_timeout_seconds", shutdown_timeout_seconds, ">= 0", shutdown_timeout_seconds >= 0),
            ("failing_after", failing_after, ">= 1", failing_after >= 1),
            ("healthy_after_seconds", healthy_after_seconds, "> 0", healthy_after_seconds > 0),
            ("recovered_after_seconds", recovered_after_seconds, "> 0", recovered_after_seconds > 0),
        )  # fmt: skip
        problems = [f"{key}={value!r} must be {rule}" for key, value, rule, ok in limits if not ok]
        if problems:
            msg = f"supervisor {name!r}: " + "; ".join(problems)
            raise ValueError(msg)
        self.name = name
        self.max_tasks = max_tasks
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self._clock = clock
        self._counters = Counters()
        self._changed = asyncio.Event()
        self._loops = LoopRestarts(
            backoff=backoff,
            clock=clock,
            rng=rng if rng is not None else random.Random(),  # noqa: S311 (jitter, not cryptography)
            counters=self._counters,
            changed=self._changed,
            failing_after=failing_after,
            healthy_after_seconds=healthy_after_seconds,
            recovered_after_seconds=recovered_after_seconds,
        )
        self._registry = registry
        self._unregister: Callable[[], None] | None = None
        self._ids = itertools.count()
        self._entries: dict[int, Entry] = {}  # start order; only live tasks
        self._lock = threading.Lock()  # guards _entries against stats()/live() from other threads
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._tg: asyncio.TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._stuck: tuple[str, ...] = ()

    @property
    def backoff(self) -> Backoff:
        """The loops' restart schedule."""
        return self._loops.backoff

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        if self._state != "new":
            msg = f"supervisor {self.name!r} is {self._state}: it can be entered once"
            raise SupervisorError(msg)
        loop = asyncio.get_running_loop()
        entered: asyncio.Future[None] = loop.create_future()
        # The task group lives in its own host task, so a child that ignores cancellation can delay
        # the group's exit without holding the owner past the shutdown deadline.
        self._host = loop.create_task(self._host_main(entered), name=f"{self.name}:supervisor")
        try:
            await entered
        except BaseException:
            self._host.cancel()
            raise
        self._state = "running"
        if self._registry is not None:
            self._unregister = self._registry.register("tasks", self.name, self.stats)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown(self.shutdown_timeout_seconds)

    async def _host_main(self, entered: asyncio.Future[None]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                entered.set_result(None)
                await self._closing.wait()
        finally:
            self._tg = None

    async def shutdown(self, deadline_seconds: float) -> tuple[str, ...]:
        """Cancel and await every task, newest first, within ``deadline_seconds`` in total.

        Returns the names of tasks still running at the deadline (also logged at ERROR); empty when
        everything stopped. Further calls return the first call's result.
        """
        if self._state in ("closing", "closed"):
            return self._stuck
        self._state = "closing"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        # Captured now: a done-callback drops an entry's task as soon as it ends.
        order = [(e.name, e.task) for e in self._entries.values() if e.task is not None]
        for _name, task in reversed(order):
            if task.done():
                continue
            task.cancel()
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait({task}, timeout=remaining)
        late = {task for _name, task in order if not task.done()}
        if late:
            await asyncio.wait(late, timeout=max(0.0, deadline - loop.time()))
        self._stuck = tuple(name for name, task in order if not task.done())
        del order, late  # no reference to a finished task outlives the shutdown
        self._closing.set()
        if self._stuck:
            logger.error(
                "supervisor %s: %d task(s) still running after the %g s shutdown deadline: %s",
                self.name, len(self._stuck), deadline_seconds, ", ".join(self._stuck),
            )  # fmt: skip
        elif self._host is not None:
            await self._host  # no child left: the group exits at once
            self._host = None
        self._state = "closed"
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        return self._stuck

    # --- starting tasks --------------------------------------------------------------------------

    def start_loop(self, name: str, fn: LoopFn, *, restart: bool = True) -> None:
        """Run ``fn(ready)`` until it returns; restart it with backoff when it raises (if ``restart``)."""
        entry = self._admit(name, "loop")
        self._launch(entry, self._loops.run(entry, fn, restart))

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` once as a task named ``name``; a failure is logged and counted, never raised.

        Raises :class:`~polly.errors.TaskLimitError` when ``max_tasks`` are live and
        :class:`~polly.errors.SupervisorError` when not running; ``coro`` is closed in both cases.
        """
        try:
            entry = self._admit(name, "task")
        except BaseException:
            coro.close()
            raise
        entry.coro = coro
        self._launch(entry, self._run_once(entry, coro))

    def _admit(self, name: str, kind: TaskKind) -> Entry:
        if self._state != "running" or self._tg is None:
            msg = f"supervisor {self.name!r} is {self._state}: cannot start {name!r}"
            raise SupervisorError(msg)
        if len(self._entries) >= self.max_tasks:
            raise TaskLimitError(name, self.max_tasks)
        entry = Entry(next(self._ids), name, kind, self._clock.monotonic())
        with self._lock:
            self._entries[entry.id] = entry
        self._counters.started += 1
        return entry

    def _launch(self, entry: Entry, wrapper: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        try:
            task = self._tg.create_task(wrapper, name=entry.name)
        except RuntimeError as err:  # the group is shutting down (a child raised a BaseException)
            wrapper.close()
            if entry.coro is not None:
                entry.coro.close()
            self._release(entry.id, None)
            msg = f"supervisor {self.name!r} cannot start {entry.name!r}: {err}"
            raise SupervisorError(msg) from err
        entry.task = task
        task.add_done_callback(functools.partial(self._release, entry.id))

    def _release(self, entry_id: int, task: asyncio.Task[None] | None) -> None:
        with self._lock:
            entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        entry.ended = True
        entry.task = None
        if entry.coro is not None:
            entry.coro.close()  # a task cancelled before it started: no "never awaited" warning
            entry.coro = None
        if task is not None:
            if task.cancelled():
                self._counters.cancelled += 1
            else:
                self._counters.finished += 1
        self._changed.set()

    async def _run_once(self, entry: Entry, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception:
            self._counters.failed += 1
            logger.exception("supervised task %s failed", entry.name)

    # --- readiness ---------------------------------------------------------------------------------

    async def wait_ready(self, timeout_seconds: float) -> None:
        """Wait until every loop started so far has called ``ready()``.

        Raises :class:`~polly.errors.ReadinessTimeoutError` naming the loops not ready after
        ``timeout_seconds``, or at once when a loop ended without ever signalling readiness.
        """
        loops = [e for e in list(self._entries.values()) if e.kind == "loop"]

        def ended() -> list[str]:
            return [e.name for e in loops if e.ended and not e.ready]

        try:
            async with asyncio.timeout(timeout_seconds):
                while not ended() and not all(e.ready for e in loops):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            waiting = [e.name for e in loops if not e.ready and not e.ended]
            raise ReadinessTimeoutError(waiting, timeout_seconds, ended()) from None
        if ended():
            raise ReadinessTimeoutError([], timeout_seconds, ended())

    # --- introspection -----------------------------------------------------------------------------

    def live(self) -> list[LiveTask]:
        """The live tasks in start order, with their age in seconds. Safe from any thread."""
        now = self._clock.monotonic()
        with self._lock:
            entries = list(self._entries.values())
        return [
            LiveTask(e.name, e.kind, now - e.started, self._loops.is_failing(e, now), e.streak)
            for e in entries
        ]

    def stats(self) -> TaskStats:
        """Live tasks by name, lifecycle counters since creation, and the failing loops.

        ``finished`` counts tasks that ended without being cancelled (a loop that failed without
        restart included); ``failed`` counts every failure, each loop restart's too.
        """
        live = self.live()
        by_name: dict[str, int] = {}
        for task in live:
            by_name[task.name] = by_name.get(task.name, 0) + 1
        return TaskStats(
            live_by_name=tuple(sorted(by_name.items())),
            started=self._counters.started,
            finished=self._counters.finished,
            failed=self._counters.failed,
            restarted=self._counters.restarted,
            cancelled=self._counters.cancelled,
            failing=tuple(sorted({t.name for t in live if t.failing})),
        )

    @property
    def live_count(self) -> int:
        """The number of live tasks (O(1))."""
        return len(self._entries)

    @property
    def stuck(self) -> tuple[str, ...]:
        """Names of tasks the last shutdown could not stop by its deadline."""
        return self._stuck
