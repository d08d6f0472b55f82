"""Fault injection for the sandbox gateway: which call fails, how, and for how long.

Each REST call draws once from the injected RNG: with the configured probabilities it fails as
not found (404), forbidden (403), rate limited (429 with a retry-after), server error (5xx), or
deletes its message for good; independently it may be delayed (latency, slept with the injected
``sleep``). A 429 blocks its channel until the injected clock passes the retry-after; a call inside
that window fails again and is counted as a violation, so a soak proves the engine honours it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from polly.clock import Monotonic, Sleep
from polly.errors import ForbiddenError, NotFoundError, RateLimitedError, ServerError


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Per-call fault probabilities (each 0..1; the five failure kinds together at most 1).

    ``latency`` is the probability of a delay uniform in ``[0, latency_seconds]``; a 429 says
    retry after a value uniform in ``retry_after_seconds``.
    """

    not_found: float = 0.0
    forbidden: float = 0.0
    rate_limited: float = 0.0
    server_error: float = 0.0
    message_deleted: float = 0.0
    latency: float = 0.0
    latency_seconds: float = 0.05
    retry_after_seconds: tuple[float, float] = (0.1, 1.0)

    def __post_init__(self) -> None:
        kinds = (self.not_found, self.forbidden, self.rate_limited, self.server_error, self.message_deleted)
        if not all(0.0 <= p <= 1.0 for p in (*kinds, self.latency)):
            msg = f"fault rates must each be between 0 and 1, got {self}"
            raise ValueError(msg)
        if sum(kinds) > 1.0:
            msg = f"the five failure rates add up to {sum(kinds):g}; at most 1 allowed"
            raise ValueError(msg)
        low, high = self.retry_after_seconds
        if not 0 < low <= high or self.latency_seconds < 0:
            msg = f"need 0 < retry_after low <= high and latency_seconds >= 0, got {self}"
            raise ValueError(msg)


class FaultInjector:
    """Draws faults for the sandbox. ``injected`` counts them by kind; ``violations`` counts calls
    made inside a retry-after window. The window map holds at most one entry per channel."""

    def __init__(
        self,
        rates: FaultRates,
        *,
        rng: random.Random,
        clock: Monotonic,
        sleep: Sleep,
    ) -> None:
        self.rates = rates
        self._rng, self._clock, self._sleep = rng, clock, sleep
        self._blocked_until: dict[int, float] = {}  # channel -> clock() when its 429 ends
        self.injected: Counter[str] = Counter()
        self.violations = 0

    async def draw(self, what: str, channel_id: int, has_message: bool) -> bool:
        """Raise the drawn failure, or return ``True`` if the call's message must now be deleted
        (only when ``has_message``), else ``False``."""
        now, f, rng = self._clock(), self.rates, self._rng
        blocked = self._blocked_until.get(channel_id)
        if blocked is not None:
            if now < blocked:
                self.violations += 1
                msg = f"{what}: called again {blocked - now:.3f} s before the retry-after ended (sandbox)"
                raise RateLimitedError(msg, blocked - now)
            del self._blocked_until[channel_id]
        if f.latency and rng.random() < f.latency:
            await self._sleep(rng.uniform(0.0, f.latency_seconds))
        r = rng.random()
        for kind, rate in (
            ("not_found", f.not_found),
            ("forbidden", f.forbidden),
            ("rate_limited", f.rate_limited),
            ("server_error", f.server_error),
            ("message_deleted", f.message_deleted),
        ):
            if r < rate:
                return self._fail(kind, what, channel_id, now, has_message)
            r -= rate
        return False

    def _fail(self, kind: str, what: str, channel_id: int, now: float, has_message: bool) -> bool:
        if kind == "message_deleted":
            if has_message:
                self.injected[kind] += 1
            return has_message
        self.injected[kind] += 1
        if kind == "rate_limited":
            retry = self._rng.uniform(*self.rates.retry_after_seconds)
            self._blocked_until[channel_id] = now + retry
            msg = f"{what}: rate limited (429, injected); retry after {retry:.3f} s"
            raise RateLimitedError(msg, retry)
        errors: dict[str, type[NotFoundError | ForbiddenError | ServerError]] = {
            "not_found": NotFoundError,
            "forbidden": ForbiddenError,
            "server_error": ServerError,
        }
        msg = f"{what}: {kind.replace('_', ' ')} (injected)"
        raise errors[kind](msg)
