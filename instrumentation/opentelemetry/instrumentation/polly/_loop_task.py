"""The loop-side work as a task with an owner: kept, its end observed once, awaited when closed.

:class:`LoopTask` is how :class:`~._core.Telemetry` runs on an application's event loop when no
owner of the application awaits it (``instrument()`` inside a loop, ``register_loop()``,
``start_telemetry`` without ``run_by_owner``). The task is created on its loop's thread (from any
thread), referenced until it ends, and its end is observed by a done-callback: a cancellation
(:meth:`cancel`, or ``asyncio.run`` cancelling what remains when the application's ``main``
returns) is the normal end and logs nothing; an exception is logged once (never "Task exception was
never retrieved"). :meth:`cancel` is safe from any thread; :meth:`aclose` cancels and awaits the
task when called on its loop, and waits a bounded time for it elsewhere.

A loop closed while the task is still pending (``loop.close()`` after ``run_until_complete``, no
``asyncio.run``) ends it there: ``close`` of asyncio's and uvloop's loops is wrapped once the first
task is created, the coroutine is closed (its ``finally`` blocks run) and no "Task was destroyed
but it is pending" follows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("opentelemetry.instrumentation.polly")

#: Longest wait of :meth:`LoopTask.aclose` for a task on another thread's loop.
FOREIGN_WAIT_SECONDS = 5.0


class LoopTask:
    """At most one task named ``name`` on one loop at a time, owned from creation to its end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by every start and cancel: a creation scheduled earlier is void

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task while it has not ended (None before it is created and once it is done)."""
        task = self._task
        return None if task is None or task.done() else task

    def start(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as the task on ``loop`` (now on its thread, else soon); ends any earlier one."""
        generation = self._end()
        _hook_loop_close()
        _OWNERS.add(self)

        def create() -> None:
            with self._lock:
                if generation != self._generation or loop.is_closed():
                    return  # cancelled or started again meanwhile
                self._task = task = loop.create_task(work(), name=self.name)
            task.add_done_callback(self._done)

        _call_on(loop, create)

    def cancel(self) -> None:
        """End the task (thread-safe, idempotent); a creation not yet run will not happen."""
        self._end()

    async def aclose(self) -> None:
        """:meth:`cancel`, then await the task's end (on its loop; elsewhere a bounded wait)."""
        task = self._task
        self._end()
        if task is None or task.done() or task is asyncio.current_task():
            return
        loop = task.get_loop()
        if loop is _running_loop():
            await asyncio.wait([task])  # its end is observed by _done; nothing raises here
            return
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        def observe() -> None:  # on the task's loop: add_done_callback is not thread-safe
            task.add_done_callback(lambda _task: ended.set_result(None))

        _call_on(loop, observe)
        await asyncio.wait([asyncio.wrap_future(ended)], timeout=FOREIGN_WAIT_SECONDS)

    def loop_closing(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop`` is being closed: a task still pending on it will never run again; end it here."""
        with self._lock:
            task = self._task
            if task is None or task.get_loop() is not loop or task.done() or loop.is_running():
                return
            self._generation += 1
            self._task = None
        _abandon(task)

    def _end(self) -> int:
        with self._lock:
            self._generation += 1
            generation, task = self._generation, self._task
            pending = task is not None and not task.done()
            closed = pending and task is not None and task.get_loop().is_closed()
            if closed:
                self._task = None
        if task is not None and closed:
            _abandon(task)
        elif task is not None and pending:
            _call_on(task.get_loop(), task.cancel)
        return generation

    def _done(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            if self._task is task:
                self._task = None
        if task.cancelled():
            return  # stopped, or the loop's shutdown cancelled it: the normal end
        error = task.exception()  # retrieved here, once
        if error is not None:
            logger.error(
                "%s ended with an error; no more loop-side work on this loop", self.name, exc_info=error
            )


def _abandon(task: asyncio.Task[None]) -> None:
    """End a pending task whose loop is closed: close its coroutine, and have asyncio not log it."""
    coro = task.get_coro()
    try:
        if coro is not None:
            coro.close()
    except Exception:
        logger.exception("closing %s after its loop closed failed", task.get_name())
    # What asyncio's own run_until_complete does for a task it knows will not finish.
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # noqa: SLF001


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


# --- ending tasks at loop close -------------------------------------------------------------------

_OWNERS: weakref.WeakSet[LoopTask] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def _hook_loop_close() -> None:
    global _hooked  # noqa: PLW0603 - one process-wide wrapper
    with _hook_lock:
        if _hooked:
            return
        _hooked = True
    import wrapt

    wrapt.wrap_function_wrapper("asyncio.base_events", "BaseEventLoop.close", _close)
    wrapt.register_post_import_hook(_hook_uvloop, "uvloop")


def _hook_uvloop(_module: Any) -> None:
    import wrapt

    try:
        wrapt.wrap_function_wrapper("uvloop", "Loop.close", _close)
    except (AttributeError, ImportError):  # a uvloop without the Python-level Loop class
        logger.debug("uvloop.Loop.close not found; a task pending at its close is not ended there")


def _close(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    for owner in list(_OWNERS):
        try:
            owner.loop_closing(instance)
        except Exception:  # never into the application's close
            logger.exception("ending %s at loop close failed", owner.name)
    return wrapped(*args, **kwargs)
