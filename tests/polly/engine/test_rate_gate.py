"""The retry-after gate: no call into a known window, the window ends on time, the map is bounded."""

from __future__ import annotations

import random

import pytest

from polly.engine.rate_gate import DM_BUCKET, RateLimitGate
from polly.errors import RateLimitedError
from polly.sandbox.gateway import FaultRates, SandboxGateway


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _no_sleep(_s: float) -> None:
    return None


async def test_calls_into_a_known_window_are_answered_locally() -> None:
    clock = Clock()
    sandbox = SandboxGateway(rng=random.Random(1), clock=clock, sleep=_no_sleep)
    gate = RateLimitGate(sandbox, monotonic=clock)
    message = await gate.send_message(5, content="hi")
    sandbox.set_faults(FaultRates(rate_limited=1.0, retry_after_seconds=(2.0, 2.0)))
    with pytest.raises(RateLimitedError):
        await gate.add_reaction(5, message, "🇦")
    sandbox.set_faults(FaultRates())
    calls = sandbox.counters().calls
    for _ in range(3):
        with pytest.raises(RateLimitedError) as err:
            await gate.remove_reaction(5, message, "🇦", 7)
        assert 0 < err.value.retry_after_seconds <= 2.0
    assert sandbox.counters().calls == calls  # not one call reached Discord
    await gate.send_message(6, content="another channel is open")
    clock.t += 2.01
    await gate.add_reaction(5, message, "🇦")
    assert (gate.held, gate.rate_limited, sandbox.counters().rate_limit_violations) == (3, 1, 0)


async def test_the_window_map_is_bounded() -> None:
    clock = Clock()
    sandbox = SandboxGateway(rng=random.Random(1), clock=clock, sleep=_no_sleep)
    gate = RateLimitGate(sandbox, monotonic=clock, max_buckets=4)
    for channel in range(10):
        gate._block(channel, clock.t + 100 + channel)
    gate._block(DM_BUCKET, clock.t + 50)
    assert len(gate._until) == 4
    assert gate.blocked_for(DM_BUCKET) == pytest.approx(50)
