"""What the supervisor keeps per task, and what a loop function is handed: its :class:`Readiness`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

TaskKind = Literal["loop", "task"]


class Readiness:
    """Handed to a loop function: call :meth:`ready` once the loop serves (idempotent)."""

    __slots__ = ("_changed", "_entry")

    def __init__(self, entry: Entry, changed: asyncio.Event) -> None:
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


@dataclass(slots=True)
class Counters:
    """Lifecycle counters since the supervisor was created (see :meth:`Supervisor.stats`)."""

    started: int = 0
    finished: int = 0
    failed: int = 0
    restarted: int = 0
    cancelled: int = 0


class Entry:
    """The bookkeeping of one live task; dropped by the task's done-callback."""

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
        self.streak = 0  # consecutive failures of a loop
        self.run_started: float | None = None  # monotonic start of a loop's current run
        self.recovery: asyncio.TimerHandle | None = None  # pending "recovered" check after a restart
