"""The census: bounded type names for life, leak suspects, RSS warning, the memory profiler log."""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest
from opentelemetry.instrumentation.polly import _census
from opentelemetry.instrumentation.polly._census import OTHER, CensusResult, TypeNameBudget, TypeRow
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly._leaks import LeakDetector, RssGrowth, format_snapshot
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.instrumentation.helpers import collect, points

Provider = tuple[object, InMemoryMetricReader]


class FakeGc:
    """A heap the test controls: ``get_objects(2)`` returns ``objects``."""

    def __init__(self) -> None:
        self.objects: list[object] = []

    def get_objects(self, generation: int | None = None) -> list[object]:
        return list(self.objects) if generation == 2 else []

    def isenabled(self) -> bool:
        return False


def test_type_names_stay_bounded_across_10000_censuses_of_a_churning_heap(
    telemetry: Telemetry, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeGc()
    monkeypatch.setattr(_census, "gc", fake)
    budget = telemetry.census.budget  # max 20 names, top 5
    seen: set[str] = set()
    for i in range(10_000):
        # every census: 6 brand-new classes with 3..8 instances each, plus a steady one
        fresh = [type(f"Churn{i}_{j}", (), {}) for j in range(6)]
        fake.objects = [cls() for j, cls in enumerate(fresh) for _ in range(3 + j)] + [
            Steady() for _ in range(2)
        ]
        telemetry.census.census_now()
        if i % 500 == 0 or i == 9_999:
            for metric in collect(provider[1]).values():
                for key in points(metric):
                    assert ("otel.metric.overflow", True) not in key
            counts = points(collect(provider[1])["polly.gc.object.count"])
            seen |= {dict(k)["polly.gc.object.type"] for k in counts}
            assert sum(counts.values()) == len(fake.objects)
    assert len(budget) == 20
    assert budget.refused > 0
    assert len(seen) <= 21
    assert OTHER in seen


class Steady:
    pass


def test_budget_keeps_admitted_names() -> None:
    budget = TypeNameBudget(2)
    assert budget.admit("a")
    assert budget.admit("b")
    assert not budget.admit("c")
    assert budget.admit("a")
    assert budget.names() == {"a", "b"}
    with pytest.raises(ValueError, match="at least 1"):
        TypeNameBudget(0)


def test_budget_is_capped_below_the_sdk_limit() -> None:
    assert TypeNameBudget(10_000).max_names == 1998


def _result(counts: dict[str, int]) -> CensusResult:
    return CensusResult((), sum(counts.values()), 0, 0.0, 0.0, 0.0, top_counts=counts)


def test_leak_suspects_grew_in_each_of_the_last_k(caplog: pytest.LogCaptureFixture) -> None:
    detector = LeakDetector(3, min_growth=10)
    assert detector.observe(_result({"a.Leak": 10, "b.Flat": 5, "c.Wobbly": 5})) == []
    assert detector.observe(_result({"a.Leak": 20, "b.Flat": 5, "c.Wobbly": 7})) == []
    with caplog.at_level(logging.WARNING, logger="opentelemetry.instrumentation.polly"):
        suspects = detector.observe(_result({"a.Leak": 35, "b.Flat": 5, "c.Wobbly": 6}))
    assert suspects == [("a.Leak", 25, 35)]
    assert "a.Leak +25 (+250.0%, now 35)" in caplog.text
    assert "b.Flat" not in caplog.text


def test_a_class_growing_by_a_handful_is_no_suspect() -> None:
    detector = LeakDetector(3)  # default: at least 100 objects over the window
    for count in (4_800, 4_802, 4_804, 4_806):
        suspects = detector.observe(
            _result({"builtins.tuple": count, "a.Leak": (count - 4_800) * 100 + 1_000})
        )
    assert [name for name, _, _ in suspects] == ["a.Leak"]


def test_rss_growth_warns_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rss = RssGrowth(3600, 10.0, lambda: now[0])
    caplog.set_level(logging.INFO, logger="opentelemetry.instrumentation.polly")
    assert rss.add(1_000_000_000) is None
    for step in range(1, 7):
        now[0] = step * 600.0
        rss.add(1_000_000_000 + step * 50_000_000)  # 30 %/hour
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "above the 10.0%/hour threshold" in warnings[0].getMessage()
    assert rss.rate == pytest.approx(50_000_000 / 600)


def test_no_rss_warning_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rss = RssGrowth(3600, 0.0, lambda: now[0])
    rss.add(100)
    now[0] = 3600.0
    rss.add(10_000)
    assert not caplog.records


def test_memory_profiler_log_format(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    result = CensusResult(
        (),
        1_234_567,
        99_000_000,
        0.0481,
        0.01,
        0.0,
        by_count=(TypeRow("builtins.dict", 120_345, 30_100_000), TypeRow("app.Vote", 2_000, 150_000)),
        by_size=(TypeRow("builtins.dict", 120_345, 30_100_000), TypeRow("app.Vote", 2_000, 150_000)),
    )
    text = format_snapshot(result, 2)
    assert text.splitlines() == [
        "Memory Snapshot: 1,234,567 tracked objects, ~99.0 MB estimated shallow size, census 48.1 ms",
        "Top 2 by object count:",
        "  builtins.dict: 120,345",
        "  app.Vote: 2,000",
        "Top 2 by memory usage:",
        "  builtins.dict: 30.1 MB",
        "  app.Vote: 0.1 MB",
    ]
    telemetry.census.log_snapshots = True
    with caplog.at_level(logging.INFO, logger="memory_profiler"):
        telemetry.census.census_now()
    records = [r for r in caplog.records if r.name == "memory_profiler"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    lines = records[0].getMessage().splitlines()
    assert lines[0].startswith("Memory Snapshot: ")
    assert lines[1] == "Top 5 by object count:"
    assert lines[7] == "Top 5 by memory usage:"
    assert all(line.endswith(" MB") for line in lines[8:])


def test_census_defers_collections_and_restores_the_collector(telemetry: Telemetry) -> None:
    import gc

    assert gc.isenabled()
    steps = telemetry.census.steps()
    next(iter(steps))
    assert not gc.isenabled()  # deferred while the listing is alive
    steps.close()  # abandoned mid-way: restored all the same
    assert gc.isenabled()
    gc.disable()
    try:
        telemetry.census.census_now()
        assert not gc.isenabled()  # an application that disabled gc keeps it disabled
    finally:
        gc.enable()


def test_census_never_forces_a_collection(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    calls: list[Any] = []

    def fake_collect(*a: Any) -> int:
        calls.append(a)
        return 0

    monkeypatch.setattr(gc, "collect", fake_collect)
    telemetry.census.census_now()
    telemetry.process.sample_rss()
    assert calls == []


def test_odd_classes_get_stable_names() -> None:
    weird = types.new_class("Weird")
    weird.__module__ = None  # type: ignore[assignment]
    assert _census.type_name(weird) == "Weird"
    assert _census.type_name(dict) == "builtins.dict"
