"""Time as a value polly is given: one :class:`Clock` (wall time, monotonic time, sleeping) and one
:class:`Backoff` (the wait before a retry).

Every loop that waits takes a clock (default :data:`SYSTEM_CLOCK`) and every retry schedule is a
:class:`Backoff`, so a test passes a :class:`FakeClock` and a seeded :class:`random.Random` and
never waits, and never has to reach into a component's private state to make time pass.

* :meth:`Clock.now` is **naive UTC**, the convention of polly's (and upstream's) database columns
  (:func:`utcnow_naive`).
* :meth:`Clock.monotonic` is seconds on a monotonic scale: ages, intervals, rate limits.
* :meth:`Clock.sleep` waits; a fake one advances its own time instead.

Deadlines that bound a shutdown or a readiness wait stay event-loop time (``asyncio.timeout``) on
purpose: a fake clock must never be able to keep a process from stopping.

:class:`Backoff` is ``initial * multiplier ** (failures - 1)`` capped at ``cap``, then shortened by
up to ``jitter`` of itself (``jitter=1`` is "full jitter": anywhere in ``(0, base]``), so many
clients retrying the same outage do not retry in step and no wait ever exceeds ``cap``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: An injectable sleep (``asyncio.sleep``'s shape), for code that only waits.
Sleep = Callable[[float], Awaitable[None]]
#: An injectable monotonic timer (``time.monotonic``'s shape).
Monotonic = Callable[[], float]

#: Exponents beyond this reach any cap anyway; bounding them keeps ``multiplier ** n`` finite.
_MAX_EXPONENT = 1024


def utcnow_naive() -> datetime:
    """Now as naive UTC, the time convention of polly's database columns and of upstream."""
    return datetime.now(UTC).replace(tzinfo=None)


class Clock(Protocol):
    """Where a component reads the time and waits."""

    def now(self) -> datetime:
        """Wall-clock time, naive UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        ...


class SystemClock:
    """The real clock: :func:`utcnow_naive`, :func:`time.monotonic`, :func:`asyncio.sleep`."""

    __slots__ = ()

    def now(self) -> datetime:
        return utcnow_naive()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()

#: Where :class:`FakeClock` starts unless told: a fixed, ordinary instant.
FAKE_EPOCH = datetime(2026, 1, 1, 12, 0, 0)  # noqa: DTZ001 - naive UTC by convention


class FakeClock:
    """A clock for tests: time moves only by :meth:`advance` or :meth:`sleep`.

    :meth:`sleep` records the requested wait in :attr:`sleeps` (the latest ``max_sleeps``), moves
    the clock forward by it and yields to the event loop once, so a loop that backs off runs its
    next attempt at once while its schedule can be asserted exactly.
    """

    def __init__(
        self, start: datetime = FAKE_EPOCH, *, monotonic_start: float = 0.0, max_sleeps: int = 1024
    ) -> None:
        if start.tzinfo is not None:
            msg = f"FakeClock start must be naive UTC (polly's convention), got {start.isoformat()}"
            raise ValueError(msg)
        self._start = start
        self._monotonic_start = monotonic_start
        self.elapsed = 0.0
        self.sleeps: deque[float] = deque(maxlen=max_sleeps)

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self._monotonic_start + self.elapsed

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) without sleeping."""
        if not seconds >= 0:
            msg = f"a clock only moves forward: advance({seconds!r}) must be >= 0"
            raise ValueError(msg)
        self.elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now().isoformat()}, monotonic={self.monotonic():g})"


class Jitter(Protocol):
    """What :meth:`Backoff.delay` draws from: :class:`random.Random` or anything with ``random()``."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """A retry schedule: the wait before retry number ``failures`` (see the module docstring).

    ``initial`` seconds (> 0) before the first retry, times ``multiplier`` (>= 1) per further
    failure, at most ``cap`` seconds (>= ``initial``), shortened by a random fraction of at most
    ``jitter`` (in [0, 1]). Invalid values raise :class:`ValueError` with one line per bad field.
    """

    initial: float
    multiplier: float = 2.0
    cap: float = 60.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        initial_ok = _finite(self.initial) and self.initial > 0
        multiplier_ok = _finite(self.multiplier) and self.multiplier >= 1
        rules = (
            ("initial", self.initial, "a finite number > 0", initial_ok),
            ("multiplier", self.multiplier, "a finite number >= 1", multiplier_ok),
            ("cap", self.cap, f"a finite number >= initial ({self.initial!r})",
             _finite(self.cap) and self.cap > 0 and (not initial_ok or self.cap >= self.initial)),
            ("jitter", self.jitter, "a fraction in [0, 1]", _finite(self.jitter) and 0 <= self.jitter <= 1),
        )  # fmt: skip
        problems = [f"backoff {field}={value!r} must be {rule}" for field, value, rule, ok in rules if not ok]
        if problems:
            raise ValueError("\n".join(problems))

    def base(self, failures: int) -> float:
        """The wait before retry ``failures`` (>= 1; less counts as 1) without jitter."""
        exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
        if self.multiplier == 1:
            return float(self.initial)
        # Past the cap the power is not needed (and could overflow a float).
        if exponent * math.log(self.multiplier) >= math.log(self.cap) - math.log(self.initial):
            return float(self.cap)
        return float(min(self.cap, self.initial * self.multiplier**exponent))

    def delay(self, failures: int, rng: Jitter | None = None) -> float:
        """The wait before retry ``failures``, jitter drawn from ``rng`` (default: :mod:`random`)."""
        base = self.base(failures)
        if self.jitter == 0:
            return base
        draw = (rng or _default_rng).random()
        return base * (1.0 - self.jitter * draw)


_default_rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
