"""The breaker's state machine and the fallback cache's bounds, with a ticking clock (no sleeps)."""

from __future__ import annotations

import pytest

from polly.config import RedisSettings, SecretUrl
from polly.redis import MAX_FALLBACK_VALUE_CHARS, RedisConnector
from polly.redis_breaker import CircuitBreaker, KeyPatternLog, key_pattern
from polly.stats import BreakerState


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 2.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened == 1
    assert not breaker.allow()


def test_one_trial_per_interval_then_close_or_reopen() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock)
    breaker.record_failure()
    clock.now += 1.99
    assert not breaker.allow()
    clock.now += 0.01
    assert breaker.allow()  # the trial
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one trial in flight
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened == 1  # reopening from a trial is not a new outage
    assert not breaker.allow()
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_a_trial_without_verdict_goes_back_to_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release_trial()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()


def test_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError, match="greater than 0"):
        CircuitBreaker(1, 0.0)


def test_key_patterns_hide_variable_segments() -> None:
    assert key_pattern("cache:user_prefs:1234") == "cache:user_prefs:*"
    assert key_pattern("cache:user_polls:99:all") == "cache:user_polls:*:all"
    assert key_pattern("screenshot_token:" + "a" * 30) == "screenshot_token:*"
    assert key_pattern("super_admin:dashboard_stats") == "super_admin:dashboard_stats"


def test_key_pattern_log_is_bounded() -> None:
    log = KeyPatternLog(max_patterns=3)
    assert log.report("a:1", "odd")
    assert not log.report("a:2", "odd")
    assert log.report("b:1", "odd")
    assert log.report("c:1", "odd")
    assert not log.report("d:1", "odd")
    assert not log.report("e:1", "odd")
    assert len(log) == 3
    assert log.suppressed == 2


def _connector(clock: Clock, **overrides: object) -> RedisConnector:
    settings = RedisSettings.model_validate(
        {"url": SecretUrl("redis://127.0.0.1:1/0"), **overrides}, strict=False
    )
    return RedisConnector(settings, clock=clock)


async def test_fallback_cache_is_bounded_and_expires() -> None:
    clock = Clock()
    connector = _connector(clock, fallback_cache_max_entries=100, fallback_cache_ttl_seconds=60.0)
    try:
        for i in range(1000):
            connector.remember(f"k{i}", "v")
        assert connector.stats().fallback_cache_size == 100
        assert connector.stats().fallback_cache_max == 100
        assert connector.recall("k999") == "v"
        assert connector.recall("k0") is None
        connector.remember("short", "v", ttl_seconds=5)
        clock.now += 5
        assert connector.recall("short") is None
        assert connector.recall("k999") == "v"
        clock.now += 55
        assert connector.recall("k999") is None
        connector.remember("big", "x" * (MAX_FALLBACK_VALUE_CHARS + 1))
        assert connector.recall("big") is None
        connector.remember("gone", "v")
        connector.forget("gone")
        assert connector.recall("gone") is None
    finally:
        await connector.aclose()
