"""Leak signals: a real leak is flagged within K censuses; warm-up, drift and start-up slopes are not."""

from __future__ import annotations

import logging
import random

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
    assert found[2] != []  # the first tooth has no earlier peak: a genuine 10 % climb is reported
    assert all(f == [] for f in found[3:])  # later teeth never rise above the first peak
    # three rises to a new high, above the old peak by more than the threshold: reported
    assert detector.observe(_result({"weakref.ReferenceType": 11_700})) == [
        ("weakref.ReferenceType", 687, 11_700)
    ]


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
