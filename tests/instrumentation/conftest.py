"""Fixtures: a fresh MeterProvider with an in-memory reader and a private stats registry per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.polly._core import Options, Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.stats import StatsRegistry
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
    tel = Telemetry(provider[0].get_meter(SCOPE), Options(top_n_classes=5, max_type_names=20), stats_registry)
    yield tel
    tel.stop()
