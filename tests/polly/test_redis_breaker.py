"""The breaker's state machine and the fallback cache's bounds, with a ticking clock (no sleeps)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import ResponseError

from polly.config import RedisSettings, SecretUrl
from polly.redis import ERROR_LOG_WINDOW_SECONDS, MAX_FALLBACK_VALUE_CHARS, RedisConnector
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


def test_key_pattern_log_writes_once_per_pattern_and_once_when_full(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "polly.redis_breaker")
    clock = Clock()
    log = KeyPatternLog(max_patterns=2, timer=clock)
    for n in range(1000):  # a pattern seen for ever is still one line: the window is infinite
        log.report(f"cache:user_prefs:{n}", "a value is not JSON")
        clock.now += 3600
    for key in ("x:1", "y:1", "z:1", "x:2"):
        log.report(key, "odd")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages == [
        "Redis key pattern cache:user_prefs:* failed: a value is not JSON",
        "Redis key pattern x:* failed: odd",
        "more than 2 distinct causes failing: further new ones are counted, not logged",
    ]
    assert log.suppressed == 2  # y:* and z:*


class _Failing:
    """A Redis client stand-in whose every command answers with an error reply quoting a password."""

    async def get(self, _key: str) -> Any:
        raise ResponseError("WRONGTYPE hunter2 Operation against a key holding the wrong kind of value")


async def test_error_replies_are_logged_once_per_window_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "polly.redis")
    clock = Clock()
    connector = _connector(clock, url=SecretUrl("redis://:hunter2@127.0.0.1:1/0"))
    failing = _Failing()
    try:

        async def get(n: int) -> Any:
            return await connector.run(lambda _client: failing.get(f"k{n}"), "fallback", "GET")

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "polly.redis" and r.levelno >= 30]

        assert await get(0) == "fallback"
        for n in range(1, 60):  # one error a second, until just before the window ends
            clock.now += 1
            await get(n)
        assert clock.now - 1000.0 == ERROR_LOG_WINDOW_SECONDS - 1
        assert len(warnings()) == 1  # the start line only
        clock.now += 1  # the window has passed: one summary with the count
        await get(60)
        start, summary = warnings()
        assert start.startswith("Redis GET (ResponseError) failed: ResponseError: WRONGTYPE *** Operation")
        assert start.endswith("(answered with the fallback)")
        assert summary.startswith("Redis GET (ResponseError) still failing: 61 failures in 60 s, last ")
        assert all("hunter2" not in r.getMessage() and r.exc_info is None for r in caplog.records)
        assert connector.breaker.state is BreakerState.CLOSED  # an error reply is Redis answering
    finally:
        await connector.aclose()


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
