"""The task supervisor: the one owner of every background task polly runs.

Usage::

    async with Supervisor(name="polly") as sup:
        sup.start_loop("reconciler", reconcile_forever)   # long-running, restarted on failure
        sup.start_loop("redis-probe", probe, restart=True)
        await sup.wait_ready(timeout_seconds=60)          # every loop called ready.ready()
        sup.spawn("dm-42", send_dm(...))                  # short, one-shot
        ...
    # leaving the block shuts down in reverse start order under shutdown_timeout_seconds

Rules:

* **Two kinds of task.** A *loop* (:meth:`Supervisor.start_loop`) is ``fn(ready)``, a coroutine
  function taking a :class:`Readiness`; when it raises it is started again after an exponential
  backoff with jitter (``backoff_initial_seconds * backoff_multiplier ** (n - 1)``, capped at
  ``backoff_max_seconds``, then shortened by up to ``backoff_jitter`` of itself, ``n`` the number of
  consecutive failures). A loop that returns is finished. A *task* (:meth:`Supervisor.spawn`) runs
  once; a failure is logged and counted.
* **Failures stay local.** Every child runs inside an :class:`asyncio.TaskGroup`, wrapped so that an
  ``Exception`` never reaches the group: one failing task never cancels its siblings.
* **Failing loops are reported, quietly.** A loop's first failure is one WARNING line with the next
  restart (its traceback only the first time that loop ever fails, or at DEBUG); while it keeps
  failing, one summary per minute gives the count and the next restart
  (:class:`~polly.outages.OutageLog`); a restarted run that lasts ``recovered_after_seconds`` writes
  "recovered after N s". After ``failing_after`` consecutive failures a loop is listed in
  :meth:`Supervisor.stats` ``failing`` until a run lasts ``healthy_after_seconds`` (which also resets
  the count). Nothing is silently spun.
* **Nothing is kept after it ends.** A task's bookkeeping is dropped by its done-callback; no set of
  finished tasks exists. At most ``max_tasks`` run at once (:class:`~polly.errors.TaskLimitError`).
* **Readiness.** A loop calls ``ready.ready()`` once it serves; :meth:`Supervisor.wait_ready` waits for
  all loops started so far, raising :class:`~polly.errors.ReadinessTimeoutError` naming the laggards.
* **Shutdown** (:meth:`Supervisor.shutdown`) cancels tasks one at a time in reverse start order and
  awaits each, all under one deadline. Tasks reached after the deadline are cancelled together and
  given one loop iteration. Anything still running is named in an ERROR log line and returned. A
  task that ignores cancellation cannot be stopped by asyncio: it is left behind (named), and the
  internal task group closes when it finally ends.

Time is injected: ``clock`` (monotonic seconds) measures ages and healthy runs, ``sleep`` waits the
backoff, ``rng`` draws the jitter; tests pass fakes and never wait. The shutdown and readiness
deadlines are event-loop time. This module is the only place in polly that creates tasks.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from polly.errors import ReadinessTimeoutError, SupervisorError, TaskLimitError
from polly.outages import OutageLog, describe
from polly.stats import StatsRegistry, TaskStats
from polly.stats import registry as default_registry

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
TaskKind = Literal["loop", "task"]


class Readiness:
    """Handed to a loop function: call :meth:`ready` once the loop serves (idempotent)."""

    __slots__ = ("_changed", "_entry")

    def __init__(self, entry: _Entry, changed: asyncio.Event) -> None:
        self._entry = entry
        self._changed = changed

    def ready(self) -> None:
        if not self._entry.ready:
            self._entry.ready = True
            self._changed.set()

    @property
    def is_ready(self) -> bool:
        return self._entry.ready


LoopFn = Callable[[Readiness], Awaitable[None]]


def ready_at_once(body: Callable[[], Awaitable[object]]) -> LoopFn:
    """A loop function for work that serves as soon as it starts: signal ready, then run ``body()``."""

    async def run(ready: Readiness) -> None:
        ready.ready()
        await body()

    return run


@dataclass(frozen=True, slots=True)
class LiveTask:
    """One running task: its name, kind, age (seconds on the supervisor's clock) and health."""

    name: str
    kind: TaskKind
    age_seconds: float
    failing: bool
    consecutive_failures: int


class _Entry:
    __slots__ = (
        "coro", "ended", "id", "kind", "name", "ready", "recovery", "run_started", "started", "streak",
        "task",
    )  # fmt: skip

    def __init__(self, entry_id: int, name: str, kind: TaskKind, started: float) -> None:
        self.id = entry_id
        self.name = name
        self.kind = kind
        self.started = started
        self.task: asyncio.Task[None] | None = None
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.ready = False
        self.ended = False
        self.streak = 0
        self.run_started: float | None = None
        self.recovery: asyncio.TimerHandle | None = None  # pending "recovered" check after a restart


class Supervisor:
    """Owns polly's background tasks; see the module docstring for the rules.

    Use it as ``async with Supervisor(...) as sup:``. Arguments (durations in seconds):
    ``max_tasks`` live tasks at most; ``shutdown_timeout_seconds`` the deadline used when the block
    exits; backoff ``backoff_initial_seconds`` (> 0), ``backoff_multiplier`` (>= 1),
    ``backoff_max_seconds`` (cap), ``backoff_jitter`` (fraction in [0, 1)); ``failing_after``
    consecutive failures make a loop *failing*; a run of ``healthy_after_seconds`` clears it.
    ``registry``: where :meth:`stats` is published under kind ``"tasks"`` and ``name`` (None: not).
    """

    def __init__(
        self,
        *,
        name: str = "polly",
        max_tasks: int = 1024,
        shutdown_timeout_seconds: float = 10.0,
        backoff_initial_seconds: float = 1.0,
        backoff_multiplier: float = 2.0,
        backoff_max_seconds: float = 60.0,
        backoff_jitter: float = 0.1,
        failing_after: int = 3,
        healthy_after_seconds: float = 60.0,
        recovered_after_seconds: float = 5.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        registry: StatsRegistry | None = default_registry,
    ) -> None:
        limits = (
            ("max_tasks", max_tasks, ">= 1", max_tasks >= 1),
            ("shutdown_timeout_seconds", shutdown_timeout_seconds, ">= 0", shutdown_timeout_seconds >= 0),
            ("backoff_initial_seconds", backoff_initial_seconds, "> 0", backoff_initial_seconds > 0),
            ("backoff_multiplier", backoff_multiplier, ">= 1", backoff_multiplier >= 1),
            ("backoff_max_seconds", backoff_max_seconds, ">= backoff_initial_seconds",
             backoff_max_seconds >= backoff_initial_seconds),
            ("backoff_jitter", backoff_jitter, "in [0, 1)", 0 <= backoff_jitter < 1),
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
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_multiplier = backoff_multiplier
        self.backoff_max_seconds = backoff_max_seconds
        self.backoff_jitter = backoff_jitter
        self.failing_after = failing_after
        self.healthy_after_seconds = healthy_after_seconds
        self.recovered_after_seconds = recovered_after_seconds
        self._clock = clock
        self._outages = OutageLog(logger, timer=clock)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not cryptography)
        self._registry = registry
        self._unregister: Callable[[], None] | None = None
        self._ids = itertools.count()
        self._entries: dict[int, _Entry] = {}  # start order; only live tasks
        self._lock = threading.Lock()  # guards _entries against stats()/live() from other threads
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._tg: asyncio.TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._stuck: tuple[str, ...] = ()
        self._started = self._finished = self._failed = self._restarted = self._cancelled = 0

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
        self._launch(entry, self._run_loop(entry, fn, restart))

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

    def _admit(self, name: str, kind: TaskKind) -> _Entry:
        if self._state != "running" or self._tg is None:
            msg = f"supervisor {self.name!r} is {self._state}: cannot start {name!r}"
            raise SupervisorError(msg)
        if len(self._entries) >= self.max_tasks:
            raise TaskLimitError(name, self.max_tasks)
        entry = _Entry(next(self._ids), name, kind, self._clock())
        with self._lock:
            self._entries[entry.id] = entry
        self._started += 1
        return entry

    def _launch(self, entry: _Entry, wrapper: Coroutine[Any, Any, None]) -> None:
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
                self._cancelled += 1
            else:
                self._finished += 1
        self._changed.set()

    async def _run_once(self, entry: _Entry, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception:
            self._failed += 1
            logger.exception("supervised task %s failed", entry.name)

    async def _run_loop(self, entry: _Entry, fn: LoopFn, restart: bool) -> None:
        try:
            await self._loop_body(entry, fn, restart)
        finally:
            if entry.recovery is not None:
                entry.recovery.cancel()
                entry.recovery = None

    async def _loop_body(self, entry: _Entry, fn: LoopFn, restart: bool) -> None:
        handle = Readiness(entry, self._changed)
        while True:
            entry.run_started = started = self._clock()
            try:
                await fn(handle)
            except Exception as exc:
                self._failed += 1
                entry.run_started = None
                entry.streak = (
                    1 if self._clock() - started >= self.healthy_after_seconds else entry.streak + 1
                )
                if not restart:
                    logger.exception("supervised loop %s failed; it is not restarted", entry.name)
                    return
                delay = self.backoff_seconds(entry.streak)
                self._report_failure(entry, exc, delay)
            else:
                entry.run_started = None
                return
            await self._sleep(delay)  # outside the except block: the traceback is not kept alive
            self._restarted += 1
            self._watch_recovery(entry)

    def _report_failure(self, entry: _Entry, exc: Exception, delay: float) -> None:
        """One line when a loop starts failing, a throttled summary while it keeps failing."""
        if entry.recovery is not None:  # the restarted run failed before it counted as recovered
            entry.recovery.cancel()
            entry.recovery = None
        self._outages.failed(f"supervised loop {entry.name}", exc, retry_in_seconds=delay)
        if entry.streak == self.failing_after:  # once per outage: it is now listed as failing
            logger.error(
                "supervised loop %s is failing: %d consecutive failures, last %s; restart in %.2f s",
                entry.name, entry.streak, describe(exc), delay,
            )  # fmt: skip

    def _watch_recovery(self, entry: _Entry) -> None:
        """After a restart, a run that lasts ``recovered_after_seconds`` means the loop recovered."""
        cause = f"supervised loop {entry.name}"
        if self._outages.down_for(cause) is None:
            return
        restarted = self._clock()

        def recovered() -> None:
            entry.recovery = None
            self._outages.succeeded(cause, at=restarted)

        entry.recovery = asyncio.get_running_loop().call_later(self.recovered_after_seconds, recovered)

    def backoff_seconds(self, failures: int) -> float:
        """The wait before restart number ``failures`` (>= 1) of a loop, jitter included."""
        exponent = min(max(failures, 1) - 1, 256)  # beyond this the cap applies anyway
        base = min(self.backoff_max_seconds, self.backoff_initial_seconds * self.backoff_multiplier**exponent)
        return base * (1.0 - self.backoff_jitter * self._rng.random())

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

    def _is_failing(self, entry: _Entry, now: float) -> bool:
        if entry.streak < self.failing_after:
            return False
        return entry.run_started is None or now - entry.run_started < self.healthy_after_seconds

    def live(self) -> list[LiveTask]:
        """The live tasks in start order, with their age in seconds. Safe from any thread."""
        now = self._clock()
        with self._lock:
            entries = list(self._entries.values())
        return [
            LiveTask(e.name, e.kind, now - e.started, self._is_failing(e, now), e.streak) for e in entries
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
            started=self._started,
            finished=self._finished,
            failed=self._failed,
            restarted=self._restarted,
            cancelled=self._cancelled,
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
