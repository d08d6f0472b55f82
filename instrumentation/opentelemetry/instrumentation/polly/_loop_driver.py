"""The loop-side work on an application's event loop, driven by loop callbacks instead of a task.

:class:`LoopDriver` is how :class:`~._core.Telemetry` runs on a loop no owner of the application
awaits it on (``instrument()`` inside a loop, ``register_loop()``, ``start_telemetry`` without
``run_by_owner``). Each census slice is one callback (``call_soon`` between slices, ``call_later``
between censuses), so at most one callback of the driver is scheduled at any time and no task
exists: nothing can be left pending at shutdown, destroyed unawaited or fail unobserved. A loop
that stops or closes simply never runs the next callback. :meth:`cancel` (any thread, idempotent)
cancels the scheduled callback and voids any later one; a census cut short is not published.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Generator

from opentelemetry.instrumentation.polly._census import CensusResult
from opentelemetry.instrumentation.polly._census_runner import CensusRunner

logger = logging.getLogger("opentelemetry.instrumentation.polly")


class LoopDriver:
    """Runs ``census`` (hooks, then a census in slices, every ``interval_seconds``) on one loop at a
    time; ``on_start(loop)`` is called on the loop first (the task sampler watches it)."""

    def __init__(self, census: CensusRunner, on_start: Callable[[asyncio.AbstractEventLoop], None]) -> None:
        self._census = census
        self._on_start = on_start
        self._lock = threading.Lock()
        self._generation = 0  # bumped by start and cancel: a callback of an earlier one does nothing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop being driven (None before :meth:`start` and after :meth:`cancel`)."""
        return self._loop

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drive ``loop`` (from its first callback on, soon if called from another thread); ends the
        driving of an earlier loop."""
        generation = self._end()
        with self._lock:
            self._loop = loop
        _call_on(loop, lambda: self._begin(generation, loop))

    def cancel(self) -> None:
        """Stop driving (thread-safe, idempotent): no callback of the driver runs its work again."""
        self._end()

    def _end(self) -> int:
        with self._lock:
            self._generation += 1
            generation, loop, handle = self._generation, self._loop, self._handle
            self._loop, self._handle = None, None
        if loop is not None and handle is not None:
            _call_on(loop, handle.cancel)
        return generation

    def _current(self, generation: int) -> bool:
        return generation == self._generation and self._census.active

    def _begin(self, generation: int, loop: asyncio.AbstractEventLoop) -> None:
        if self._current(generation):
            self._on_start(loop)
            self._cycle(generation, loop)

    def _cycle(self, generation: int, loop: asyncio.AbstractEventLoop) -> None:
        """One census cycle: the hooks, then the census's first slice."""
        if self._current(generation):
            self._census.run_hooks()
            self._slice(generation, loop, None)

    def _slice(
        self, generation: int, loop: asyncio.AbstractEventLoop,
        steps: Generator[CensusResult | None, None, None] | None,
    ) -> None:  # fmt: skip
        """Census steps up to the next slice boundary (a new census when ``steps`` is None); the next
        slice, or the next cycle, is the one callback scheduled."""
        if not self._current(generation):
            if steps is not None:
                steps.close()
            return
        try:
            steps = self._census.steps() if steps is None else steps
            for step in steps:
                if step is None:
                    self._handle = loop.call_soon(self._slice, generation, loop, steps)
                    return
                self._census.publish(step)
        except Exception:  # never into the application's loop
            logger.exception("gc class census failed")
        self._handle = loop.call_later(self._census.interval_seconds, self._cycle, generation, loop)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Call ``fn`` on ``loop``'s thread: now if this is it, else soon; nothing if it is closed."""
    if _running_loop() is loop:
        fn()
        return
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # closed (meanwhile)
        return
