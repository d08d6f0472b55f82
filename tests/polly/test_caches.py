"""polly.caches: the bounded TTL cache, the failure tracker and the log throttle, driven by a fake clock."""

from __future__ import annotations

import logging
from datetime import UTC

import pytest

from polly.caches import BoundedTTLCache, FailureTracker, LogThrottle
from polly.config import CacheSettings
from polly.stats import CacheStats, StatsRegistry


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


# --- BoundedTTLCache -----------------------------------------------------------------------------


def test_cache_counts_hits_misses_expirations_and_evictions() -> None:
    clock = FakeClock()
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(name="c", maxsize=2, ttl=10, timer=clock)
    cache["a"] = 1
    assert cache["a"] == 1
    assert cache.get("a") == 1
    assert cache.get("missing") is None
    with pytest.raises(KeyError):
        cache["missing"]
    cache["b"] = 2
    cache["c"] = 3  # full: evicts the least recently used ("a")
    assert "a" not in cache
    clock.tick(10)  # ttl passed for b and c
    assert cache.get("b") is None
    cache["d"] = 4  # the write purges the expired entries
    assert cache.stats() == CacheStats(
        name="c", size=1, max_size=2, hits=2, misses=3, expirations=2, evictions=1
    )


def test_cache_entry_lives_ttl_seconds_from_its_last_write() -> None:
    clock = FakeClock()
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(name="c", maxsize=4, ttl=10, timer=clock)
    cache["k"] = 1
    clock.tick(9.9)
    assert cache.get("k") == 1  # a read does not extend it
    clock.tick(0.1)
    assert cache.get("k") is None


@pytest.mark.parametrize(
    ("maxsize", "ttl", "message"), [(0, 1.0, "maxsize must be >= 1"), (1, 0.0, "ttl must be > 0")]
)
def test_cache_rejects_unbounded_settings(maxsize: int, ttl: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoundedTTLCache(name="bad", maxsize=maxsize, ttl=ttl)


def test_cache_registers_its_stats_by_name() -> None:
    registry = StatsRegistry()
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(name="avatars", maxsize=3, ttl=5)
    unregister = cache.register(registry)
    cache["x"] = 1
    assert registry.collect("cache") == [cache.stats()]
    assert registry.collect("cache")[0] == CacheStats("avatars", 1, 3, 0, 0, 0, 0)
    unregister()
    assert registry.collect("cache") == []


# --- FailureTracker ------------------------------------------------------------------------------


def _tracker(clock: FakeClock, **kwargs: float) -> FailureTracker:
    options: dict[str, float] = {"max_entries": 100, "ttl_seconds": 3600.0, "retry_window_seconds": 1800.0}
    options.update(kwargs)
    return FailureTracker(
        max_entries=int(options["max_entries"]),
        ttl_seconds=options["ttl_seconds"],
        retry_window_seconds=options["retry_window_seconds"],
        max_retries=5,
        timer=clock,
        wall_clock=lambda: 1_700_000_000.0,
    )


def test_tracker_gives_up_after_max_retries_within_the_window() -> None:
    clock = FakeClock()
    tracker = _tracker(clock)
    for attempt in range(1, 5):
        record = tracker.record_failure(7, "fetch_message")
        assert record.count == attempt
        assert not tracker.should_give_up(7)
        clock.tick(5)
    record = tracker.record_failure(7, "history_search")
    assert record.count == 5
    assert record.first_failure == 1000.0
    assert record.last_attempt == 1020.0
    assert record.methods_tried == ("fetch_message", "history_search")
    assert tracker.should_give_up(7)


def test_tracker_count_restarts_once_the_retry_window_has_passed() -> None:
    clock = FakeClock()
    tracker = _tracker(clock)
    for _ in range(4):
        tracker.record_failure(1)
    clock.tick(1800)  # exactly the window: still inside (upstream resets only when strictly past)
    assert tracker.record_failure(1).count == 5
    assert tracker.should_give_up(1)
    clock.tick(0.5)  # now 1800.5 s after the first failure
    assert not tracker.should_give_up(1), "a stale record does not count"
    record = tracker.record_failure(1)
    assert record.count == 1
    assert record.first_failure == clock.now


def test_tracker_clears_on_success_and_when_the_poll_leaves_active() -> None:
    clock = FakeClock()
    tracker = _tracker(clock)
    tracker.record_failure(1)
    tracker.record_failure(2)
    assert tracker.clear(1)
    assert not tracker.clear(1)
    assert not tracker.status_changed(2, "active")
    assert 2 in tracker
    assert tracker.status_changed(2, "closed")
    assert tracker.get(2) is None
    assert len(tracker) == 0


def test_tracker_is_bounded_by_size_and_by_ttl() -> None:
    clock = FakeClock()
    tracker = _tracker(clock, max_entries=3, ttl_seconds=60)
    for key in range(10):
        tracker.record_failure(key)
    assert len(tracker) == 3
    assert set(tracker.keys()) == {7, 8, 9}  # least recently failed evicted first
    clock.tick(59)
    tracker.record_failure(9)  # refreshes 9's ttl only
    clock.tick(1)
    assert tracker.keys() == [9]
    stats = tracker.stats()
    assert (stats.name, stats.evictions, stats.expirations, stats.max_size) == (
        "message_fetch_failures",
        7,
        2,
        3,
    )


def test_tracker_times_are_aware_utc() -> None:
    clock = FakeClock(0.0)
    tracker = _tracker(clock)
    record = tracker.record_failure("k")
    moment = tracker.to_datetime(record.first_failure)
    assert moment.tzinfo is UTC
    assert moment.timestamp() == 1_700_000_000.0
    assert tracker.from_datetime(moment) == 0.0


def test_tracker_from_settings_uses_the_caches_section() -> None:
    settings = CacheSettings(failure_tracker_max_entries=2, max_fetch_retries=2, retry_window_minutes=1)
    tracker = FailureTracker.from_settings(settings, timer=FakeClock())
    assert tracker.max_retries == 2
    assert tracker.retry_window_seconds == 60.0
    tracker.record_failure("a")
    tracker.record_failure("a")
    assert tracker.should_give_up("a")
    for key in "bcd":
        tracker.record_failure(key)
    assert len(tracker) == 2


# --- LogThrottle ---------------------------------------------------------------------------------

LOGGER = "tests.throttle"


def _throttle(clock: FakeClock, max_categories: int = 10) -> LogThrottle:
    return LogThrottle(
        logging.getLogger(LOGGER), window_seconds=60, max_categories=max_categories, timer=clock
    )


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return lines


def test_throttle_escalates_at_upstream_thresholds_then_summarises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    throttle = _throttle(clock)
    levels = []
    for poll in range(10):
        levels.append(throttle.log("message_not_found", "message of poll %d not found", poll))
        clock.tick(1)
    # upstream: message_not_found warns after 3; one escalation line, then silence inside the window
    assert levels == [logging.INFO] * 3 + [logging.WARNING] + [None] * 6
    lines = _lines(caplog)
    assert [level for level, _ in lines] == [logging.INFO] * 3 + [logging.WARNING]
    assert lines[0][1] == "message of poll 0 not found (message_not_found 1/3 in 60 s)"
    assert lines[3][1] == "message of poll 3 not found (message_not_found: more than 3 in 60 s)"
    clock.now = 1003 + 60  # a window after the escalation line, the storm still going
    assert throttle.log("message_not_found", "message of poll %d not found", 99) == logging.WARNING
    assert _lines(caplog) == [(logging.WARNING, "7 more message_not_found events in the last 60 s")]
    assert throttle.count("message_not_found") == 11


def test_throttle_thresholds_differ_by_category(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    throttle = _throttle(clock)
    rate = [throttle.log("rate_limited", "429") for _ in range(7)]
    other = [throttle.log("something_else", "x") for _ in range(5)]
    assert rate == [logging.INFO] * 5 + [logging.WARNING, None]
    assert other == [logging.INFO] * 3 + [logging.WARNING, None]


def test_throttle_window_slides_and_pending_summary_is_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(6):
        throttle.log("permission_denied", "403")  # 3 INFO, 1 WARNING, 2 suppressed
    _lines(caplog)
    clock.tick(61)  # quiet for a window: the rate is back under the threshold
    assert throttle.log("permission_denied", "403 again") == logging.INFO
    assert _lines(caplog) == [
        (logging.WARNING, "2 more permission_denied events in the last 61 s"),
        (logging.INFO, "403 again (permission_denied 1/3 in 60 s)"),
    ]


def test_throttle_flush_writes_pending_summaries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(9):
        throttle.log("channel_not_found", "gone")
    _lines(caplog)
    clock.tick(5)
    assert throttle.flush() == 1
    assert _lines(caplog) == [(logging.WARNING, "5 more channel_not_found events in the last 5 s")]
    assert throttle.flush() == 0


def test_throttle_categories_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    throttle = _throttle(clock, max_categories=2)
    for _ in range(5):
        throttle.log("a", "a")  # 3 INFO, 1 WARNING, 1 pending
    throttle.log("b", "b")
    _lines(caplog)
    throttle.log("c", "c")  # evicts "a", the least recently used, writing its pending count first
    assert _lines(caplog)[0] == (logging.WARNING, "1 more a events in the last 0 s")
    assert sorted(throttle.categories()) == ["b", "c"]
    assert len(throttle) == 2
    assert throttle.count("a") == 0


def test_throttle_reset_restarts_the_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    throttle = _throttle(FakeClock())
    for _ in range(4):
        throttle.log("message_fix_failed", "x")
    throttle.set_count("message_fix_failed", 0)
    assert throttle.count("message_fix_failed") == 0
    assert throttle.log("message_fix_failed", "x") == logging.INFO


@pytest.mark.parametrize(
    ("window", "categories", "message"),
    [(0.0, 1, "window_seconds must be > 0"), (1.0, 0, "max_categories must be >= 1")],
)
def test_throttle_rejects_unbounded_settings(window: float, categories: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogThrottle(logging.getLogger(LOGGER), window_seconds=window, max_categories=categories)


def test_throttle_window_is_exactly_window_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = FakeClock(0.0)
    throttle = _throttle(clock)  # a 60 s window; message_not_found escalates after 3
    for t in (0.0, 1.0, 2.0):
        clock.now = t
        assert throttle.log("message_not_found", "missing") == logging.INFO
    clock.now = 59.9  # all three still inside the window: the fourth escalates
    assert throttle.log("message_not_found", "missing") == logging.WARNING
    throttle.set_count("message_not_found", 0)
    for t in (100.0, 101.0, 102.0):
        clock.now = t
        throttle.log("message_not_found", "missing")
    clock.now = 160.0  # the event at 100 s is exactly one window old: it no longer counts
    assert throttle.log("message_not_found", "missing") == logging.INFO
