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
  function taking a :class:`Readiness`; when it raises it is started again after
  ``backoff.delay(n)`` seconds (a :class:`~polly.clock.Backoff`, by default
  :data:`RESTART_BACKOFF`: 1 s doubling to 60 s, shortened by up to 10 %; ``n`` the number of
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

Time is injected: ``clock`` (a :class:`~polly.clock.Clock`) measures ages and healthy runs and
sleeps the backoff, ``rng`` draws the jitter; tests pass a :class:`~polly.clock.FakeClock` and never
wait. The shutdown and readiness deadlines, and the "recovered" check, are event-loop time.
:mod:`polly.supervisor.supervisor` is the only module in polly that creates tasks; the loops'
restart policy is :mod:`polly.supervisor.restarts`, the per-task records :mod:`polly.supervisor.tasks`.
"""

from polly.clock import Clock, Sleep
from polly.supervisor.restarts import RESTART_BACKOFF
from polly.supervisor.supervisor import Supervisor
from polly.supervisor.tasks import LiveTask, LoopFn, Readiness, TaskKind, ready_at_once

__all__ = [
    "RESTART_BACKOFF",
    "Clock",
    "LiveTask",
    "LoopFn",
    "Readiness",
    "Sleep",
    "Supervisor",
    "TaskKind",
    "ready_at_once",
]
