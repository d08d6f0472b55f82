"""Task metrics: ``polly.task.count`` by ``polly.task.name``, ``polly.task.failures`` and ``.restarts``.

With a :class:`~.seam.StatsSource` that reports tasks (polly's supervisor), its live tasks by name
and its cumulative failure/restart counts are used. Otherwise the asyncio tasks of every event loop
the instrumentation knows are counted by coroutine ``__qualname__`` (``Task-N`` names are
unbounded, coroutine names are not); failures and restarts are then not known and not emitted.

Counting happens on each loop's own thread (``asyncio.all_tasks`` is not thread-safe), every
``sample_interval_seconds`` (1 s by default), with a ``call_later`` chain rather than a task, so the
sampler is not itself counted. Each sample replaces the previous one: a request task alive at the
sample appears, a finished one is gone by the next sample. A loop that stopped or closed is dropped.
Loops are known from ``register_loop()``, from the loop running at ``instrument()``, and (zero-code)
from every loop's ``run_forever``: asyncio's (``asyncio.run``, aiohttp, uvicorn's asyncio loop) and
uvloop's (``uvloop.run``, ``asyncio.run`` under uvloop's policy or ``loop_factory``, uvicorn's
``--loop uvloop``), wrapped when ``uvloop`` is imported; another loop implementation can be passed
to ``register_loop()``.

Task names ever reported are capped (``MAX_TASK_NAMES``); later ones count as ``other``. At most
``MAX_LOOPS`` loops are sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.instrumentation.polly._census import OTHER, TypeNameBudget
from opentelemetry.instrumentation.polly.seam import StatsSource, TaskReading
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

NAME = "polly.task.name"
MAX_TASK_NAMES = 100
MAX_LOOPS = 16


def _coro_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


class TaskSignals:
    def __init__(
        self, meter: Meter, sources: Sequence[StatsSource], sample_interval_seconds: float = 1.0
    ) -> None:
        self.active = True
        self._sources = tuple(sources)
        self._budget = TypeNameBudget(MAX_TASK_NAMES)
        self.sample_interval_seconds = sample_interval_seconds
        self._lock = threading.Lock()
        self._samples: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple[str, int], ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        # each watched loop's next sample (at most MAX_LOOPS): cancelled by close()
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}
        meter.create_observable_up_down_counter(
            "polly.task.count", [self._observe_count], unit="{task}", description="Live tasks by name"
        )
        meter.create_observable_counter(
            "polly.task.failures", [self._counter("failed")], unit="{failure}",
            description="Supervised tasks that ended with an exception",
        )  # fmt: skip
        meter.create_observable_counter(
            "polly.task.restarts", [self._counter("restarted")], unit="{restart}",
            description="Supervised tasks restarted after a failure",
        )  # fmt: skip

    # --- loops ------------------------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sample ``loop``'s tasks on its own thread from now on (idempotent, thread-safe)."""
        with self._lock:
            if loop in self._loops or len(self._loops) >= MAX_LOOPS or loop.is_closed():
                return
            self._loops.add(loop)
        try:
            loop.call_soon_threadsafe(self._tick, loop)
        except RuntimeError:  # closed meanwhile
            self._forget(loop)

    @property
    def loops(self) -> list[asyncio.AbstractEventLoop]:
        with self._lock:
            return list(self._loops)

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loops.discard(loop)
            self._samples.pop(loop, None)
            self._timers.pop(loop, None)

    def close(self) -> None:
        """Cancel every loop's next sample (any thread); :meth:`watch` starts sampling again."""
        with self._lock:
            timers, self._timers = self._timers, {}
            self._loops = weakref.WeakSet()
        for loop, timer in timers.items():
            with contextlib.suppress(RuntimeError):  # closed: the timer never runs anyway
                loop.call_soon_threadsafe(timer.cancel)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.active:
            self._forget(loop)
            return
        self.sample(loop)
        with self._lock:
            if loop in self._loops:
                self._timers[loop] = loop.call_later(self.sample_interval_seconds, self._tick, loop)

    def sample(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count ``loop``'s tasks by coroutine name now (call on ``loop``'s thread)."""
        counts = Counter(_coro_name(t) for t in asyncio.all_tasks(loop))
        with self._lock:
            self._samples[loop] = tuple(counts.items())

    # --- reading ----------------------------------------------------------------------------------

    def _stats(self) -> TaskReading | None:
        for source in self._sources:
            try:
                stats = source.tasks()
            except Exception:
                logger.exception("stats source %r failed", source)
                continue
            if stats is not None:
                return stats
        return None

    def _bounded(self, pairs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        merged: Counter[str] = Counter()
        for name, count in pairs:
            merged[name if self._budget.admit(name) else OTHER] += count
        return list(merged.items())

    def _sampled(self) -> list[tuple[str, int]] | None:
        with self._lock:
            items = list(self._samples.items())
        alive = [(loop, pairs) for loop, pairs in items if loop.is_running()]
        for loop, _ in items:
            if not loop.is_running():
                with self._lock:
                    self._samples.pop(loop, None)
        if not alive:
            return None
        return [pair for _, pairs in alive for pair in pairs]

    def _observe_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return ()
        stats = self._stats()
        pairs = list(stats.live_by_name) if stats is not None else self._sampled()
        if pairs is None:
            return ()
        return [Observation(count, {NAME: name}) for name, count in self._bounded(pairs)]

    def _counter(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            stats = self._stats() if self.active else None
            return () if stats is None else [Observation(getattr(stats, field))]

        return callback


# --- zero-code loop discovery ---------------------------------------------------------------------

_watchers: tuple[weakref.ref[TaskSignals], ...] = ()
_watch_lock = threading.Lock()
_wrapped = False


def watch_all_loops(signals: TaskSignals) -> None:
    """Have every asyncio loop that starts ``run_forever`` from now on sampled by ``signals``."""
    global _watchers, _wrapped  # noqa: PLW0603 - one process-wide wrapper
    with _watch_lock:
        _watchers = (*(w for w in _watchers if w() not in (None, signals)), weakref.ref(signals))
        if _wrapped:
            return
        _wrapped = True
    import wrapt

    wrapt.wrap_function_wrapper("asyncio.base_events", "BaseEventLoop.run_forever", _run_forever)
    # uvloop's Loop is not a BaseEventLoop; its Python class is wrapped once uvloop is imported (now,
    # if it is already). Its run_until_complete calls run_forever through the class, as asyncio's does.
    wrapt.register_post_import_hook(_hook_uvloop, "uvloop")


def _hook_uvloop(_module: Any) -> None:
    import wrapt

    try:
        wrapt.wrap_function_wrapper("uvloop", "Loop.run_forever", _run_forever)
    except (AttributeError, ImportError):  # a uvloop without the Python-level Loop class
        logger.info("uvloop.Loop.run_forever not found; pass uvloop's loop to register_loop()")


def unwatch_all_loops(signals: TaskSignals) -> None:
    global _watchers  # noqa: PLW0603
    with _watch_lock:
        _watchers = tuple(w for w in _watchers if w() not in (None, signals))


def _run_forever(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    for ref in _watchers:
        signals = ref()
        if signals is not None and signals.active:
            instance.call_soon(signals.watch, instance)
    return wrapped(*args, **kwargs)
