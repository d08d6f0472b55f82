"""Fixtures: a fresh MeterProvider with an in-memory reader and a private stats registry per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.stats import StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.helpers import SCOPE, new_provider


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    pair = new_provider()
    yield pair
    pair[0].shutdown()


@pytest.fixture
def stats_registry() -> StatsRegistry:
    return StatsRegistry()


@pytest.fixture
def telemetry(
    provider: tuple[MeterProvider, InMemoryMetricReader], stats_registry: StatsRegistry
) -> Iterator[Telemetry]:
    """A session that is not scheduled anywhere: tests drive the census and hooks themselves."""
    tel = Telemetry(
        provider[0].get_meter(SCOPE),
        Options(top_n_classes=5, max_type_names=20, leak_warmup_seconds=0),
        [PollyStatsSource(stats_registry)],
    )
    yield tel
    tel.stop()
