"""Leak signals: a real leak is flagged within K censuses; warm-up, drift and start-up slopes are not."""

from __future__ import annotations

import logging
import random
from itertools import pairwise

import pytest
from opentelemetry.instrumentation.polly._census import CensusResult
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly._leaks import LeakDetector, RssGrowth

LOGGER = "opentelemetry.instrumentation.polly"


class SyntheticLeak:
    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


class SteadyState:
    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


def _result(counts: dict[str, int]) -> CensusResult:
    return CensusResult((), sum(counts.values()), 0, 0.0, 0.0, 0.0, top_counts=counts)


@pytest.mark.timeout(120)
def test_a_class_growing_one_percent_per_census_is_flagged_within_k(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    leaked: list[SyntheticLeak] = [SyntheticLeak(i) for i in range(20_000)]
    steady: list[SteadyState] = [SteadyState(i) for i in range(20_000)]
    rng = random.Random(7)
    k = telemetry.census.leaks.consecutive
    flagged_at = None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for census in range(1, 2 * k + 1):
            telemetry.census.census_now()
            if flagged_at is None and "SyntheticLeak" in caplog.text:
                flagged_at = census
            leaked.extend(SyntheticLeak(i) for i in range(len(leaked) // 100))  # +1 % per census
            # the healthy class wobbles by up to 0.5 %, up and down
            delta = rng.randint(-100, 100)
            if delta > 0:
                steady.extend(SteadyState(i) for i in range(delta))
            elif delta < 0:
                del steady[:-delta]
    assert flagged_at is not None, caplog.text
    assert flagged_at <= k
    assert "SteadyState" not in caplog.text


def test_growth_below_the_relative_threshold_is_not_a_leak() -> None:
    detector = LeakDetector(3, min_growth_percent=1.0)
    for count in (1_000_000, 1_000_300, 1_000_600, 1_000_900):  # +300 per census: 0.06 %
        assert detector.observe(_result({"builtins.dict": count})) == []
    # the same absolute growth is a leak for a small class
    small = LeakDetector(3, min_growth_percent=1.0)
    found = [small.observe(_result({"app.Session": 2_000 + 300 * i})) for i in range(3)]
    assert found[-1] == [("app.Session", 600, 2_600)]


def test_a_sawtooth_below_its_old_peak_is_not_a_leak() -> None:
    """Weak references pile up between periodic clean-ups and fall back (seen in the sandbox)."""
    detector = LeakDetector(3, min_growth_percent=1.0)
    teeth = [10_260, 10_969, 11_297, 10_601, 10_936, 11_275, 10_694, 11_061, 11_250, 10_706, 11_013, 11_290]
    found = [detector.observe(_result({"weakref.ReferenceType": n})) for n in teeth]
    assert found[2] != []  # the first tooth has no earlier range: a genuine 10 % climb is reported
    assert all(f == [] for f in found[3:])  # later teeth never rise above the first peak


def _rises_past_old_peak(counts: list[int], k: int, percent: float) -> int:
    """Censuses ending K rises whose last count passes the 3 x K before by ``percent`` % and 100."""
    hits = 0
    for end in range(k, len(counts) + 1):
        window, before = counts[end - k : end], counts[max(0, end - 4 * k) : end - k]
        above = window[-1] - max(before, default=window[0])
        if all(a < b for a, b in pairwise(window)) and above >= max(100, percent / 100 * window[0]):
            hits += 1
    return hits


@pytest.mark.parametrize("seed", range(8))
def test_a_bounded_sawtooth_of_dead_cursor_references_is_not_a_leak(seed: int) -> None:
    """CPython's sqlite3 keeps up to 200 dead cursor weak references per connection between its
    clean-ups: with a pool of connections, each on its own phase, the census sees the sum of their
    sawtooths, a bounded series whose teeth now and then climb above every earlier one."""
    rng = random.Random(seed)
    now = [0.0]
    detector = LeakDetector(3, min_growth_percent=1.0, warmup_seconds=60, clock=lambda: now[0])
    phases = [rng.randrange(200) for _ in range(5)]
    rates = [rng.randint(20, 90) for _ in range(5)]  # cursors per census on each connection
    counts: list[int] = []
    flagged: list[tuple[str, int, int]] = []
    for census in range(300):
        now[0] = census * 10.0
        counts.append(11_000 + sum((p + r * census) % 200 for p, r in zip(phases, rates, strict=True)))
        flagged += detector.observe(_result({"weakref.ReferenceType": counts[-1]}))
    assert max(counts) - min(counts) > 0.02 * min(counts)  # a series with teeth, not a flat one
    # what a detector reading only the last K censuses and the old peak would call a leak happens
    assert _rises_past_old_peak(counts[6:], 3, 1.0) > 0
    assert flagged == []


def test_the_sandbox_sqlite_weak_reference_series_is_not_a_leak() -> None:
    """``weakref.ReferenceType`` of ``polly run --sandbox`` on SQLite, a census every 5 s."""
    counts = [
        10433, 11120, 10987, 11437, 10913, 11375, 10821, 11291, 11357, 11140, 11411, 11013, 11488, 10984,
        11441, 10879, 11352, 10796, 11273, 11149, 11200, 11469, 11130, 11411, 11116, 11374, 11041, 11515,
        10956, 11427, 10891, 11355, 11030, 11255, 11154, 11197, 11271, 11145, 11407, 11070, 11359, 11029,
        11482, 10905, 11322, 11197, 11268,
    ]  # fmt: skip
    detector = LeakDetector(3, min_growth_percent=1.0)
    assert [f for n in counts if (f := detector.observe(_result({"weakref.ReferenceType": n})))] == []


def test_teeth_climbing_above_the_old_top_by_less_than_the_range_are_not_a_leak() -> None:
    detector = LeakDetector(3, min_growth_percent=1.0)
    teeth = [10_260, 10_969, 11_297, 10_601, 10_936, 11_275, 10_694, 11_061, 11_250, 10_706, 11_013, 11_290]
    for n in teeth:
        detector.observe(_result({"weakref.ReferenceType": n}))
    # from here the 12 censuses held start at 10,601: the old top is 11,275 and the largest fall
    # 581 (11,275 -> 10,694). The run of highs starts at 11,290; four more highs, 2.8 % above the
    # old top, rise by 510: inside the range's height, so not reported
    for n in (11_400, 11_500, 11_600, 11_800):
        assert detector.observe(_result({"weakref.ReferenceType": n})) == [], n
    # a climb that goes on past the range's own height is reported, over its whole run
    assert detector.observe(_result({"weakref.ReferenceType": 11_950})) == [
        ("weakref.ReferenceType", 660, 11_950)
    ]


def test_a_leak_after_a_noisy_flat_period_is_flagged_at_its_kth_census() -> None:
    rng = random.Random(3)
    detector = LeakDetector(3, min_growth_percent=1.0)
    level = 50_000
    for _ in range(12):  # flat, wobbling by up to 0.3 %
        assert detector.observe(_result({"app.Session": level + rng.randint(-150, 150)})) == []
    found = []
    for _ in range(3):  # then +1 % per census
        level += level // 100
        found.append(detector.observe(_result({"app.Session": level})))
    assert found[:2] == [[], []]
    assert found[2] != []
    # and it stays named census after census
    level += level // 100
    assert detector.observe(_result({"app.Session": level})) != []


def test_one_fall_inside_the_window_ends_the_run() -> None:
    detector = LeakDetector(3, min_growth_percent=1.0)
    found = [detector.observe(_result({"app.Session": n})) for n in (1_000, 2_000, 1_999, 3_000, 4_000)]
    assert found[1:4] == [[], [], []]
    assert found[4] == []  # 1,999 -> 3,000 -> 4,000 is a run of 3, but 1,999 is not a new high
    assert detector.observe(_result({"app.Session": 5_000})) == [("app.Session", 2_000, 5_000)]


def test_nothing_is_flagged_during_the_warm_up(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    detector = LeakDetector(3, warmup_seconds=120, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(10):  # start-up: caches fill, imports, pools
            now[0] = i * 10.0
            assert detector.observe(_result({"weakref.ReferenceType": 1_000 + 4_000 * i})) == []
        now[0] = 130.0
        flat = [detector.observe(_result({"weakref.ReferenceType": 41_000})) for _ in range(5)]
        # a sawtooth whose first post-warm-up tooth rises: the warm-up's peak is known already
        teeth = [detector.observe(_result({"weakref.ReferenceType": n})) for n in (39_000, 40_000, 40_900)]
    assert flat == [[]] * 5
    assert teeth == [[]] * 3
    assert caplog.text == ""


def test_rss_start_up_slope_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rss = RssGrowth(600, 10.0, lambda: now[0], warmup_seconds=60)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for t in range(0, 60, 10):  # 30 MB -> 300 MB while starting
            now[0] = float(t)
            rss.add(30_000_000 + t * 4_500_000)
        for t in range(60, 600, 10):  # then flat
            now[0] = float(t)
            rss.add(300_000_000)
    assert caplog.text == ""
    assert rss.rate == 0


def test_rss_noise_extrapolated_from_minutes_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rss = RssGrowth(120, 10.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i, t in enumerate(range(0, 300, 10)):  # 85 MB, an arena of 0.3 MB now and then
            now[0] = float(t)
            rss.add(85_000_000 + (300_000 if i % 4 == 3 else 0) + (i // 10) * 100_000)
    assert caplog.text == ""


def test_rss_growth_is_measured_over_the_time_held(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rss = RssGrowth(3600, 10.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        now[0] = 0.0
        rss.add(100_000_000)
        now[0] = 400.0  # a tenth of the window: a rate, but too little history for a warning
        rss.add(110_000_000)
        assert rss.rate == pytest.approx(25_000)
        assert caplog.text == ""
        now[0] = 1000.0  # a quarter of the window: 20 % in 1000 s is 72 %/hour
        rss.add(120_000_000)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "72.0%/hour" in line
    assert "over the last 1000 s" in line
