"""Gateway metrics: a state set with one series per state, latency only while connected, counters as
reported, and nothing from sources without ``gateways()``."""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly._gateway import GatewaySignals
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.stats import GatewayState, GatewayStats, StatsRegistry
from tests.instrumentation.helpers import collect, new_provider


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    metric = collect(reader)[name]
    return [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]  # type: ignore[union-attr]


def test_state_set_has_one_series_per_state_and_follows_the_state(
    telemetry: Telemetry, provider: tuple[object, InMemoryMetricReader], stats_registry: StatsRegistry
) -> None:
    current: list[GatewayState] = ["connected"]
    stats_registry.register(
        "gateway",
        "discord",
        lambda: GatewayStats(
            "discord", current[0], 100.0, 0.05 if current[0] == "connected" else None, 2, 1, 1, 0
        ),
    )
    reader = provider[1]
    states = {a["polly.gateway.state"]: v for a, v in _points(reader, "polly.gateway.state")}
    assert states == {"connecting": 0, "connected": 1, "resuming": 0, "down": 0}
    assert _points(reader, "polly.gateway.latency") == [({"polly.gateway.name": "discord"}, 0.05)]
    assert _points(reader, "polly.gateway.identifies") == [({"polly.gateway.name": "discord"}, 2)]
    assert _points(reader, "polly.gateway.resumes") == [({"polly.gateway.name": "discord"}, 1)]
    assert _points(reader, "polly.gateway.reconnects") == [({"polly.gateway.name": "discord"}, 1)]
    assert _points(reader, "polly.gateway.state.since") == [({"polly.gateway.name": "discord"}, 100.0)]

    current[0] = "down"
    states = {a["polly.gateway.state"]: v for a, v in _points(reader, "polly.gateway.state")}
    assert states == {"connecting": 0, "connected": 0, "resuming": 0, "down": 1}


class _RecordingMeter:
    """Keeps each instrument's callbacks, so a test can call them as the SDK would."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}

    def _create(self, name: str, callbacks: list[Any], **_kwargs: Any) -> None:
        self.callbacks[name] = callbacks[0]

    create_observable_gauge = create_observable_counter = create_observable_up_down_counter = _create


class _Source:
    def __init__(self) -> None:
        self.snapshot = GatewayStats("discord", "resuming", 5.0, None, 1, 0, 0, 0)

    def gateways(self) -> list[GatewayStats]:
        return [self.snapshot]


def test_latency_is_reported_only_while_known() -> None:
    meter, source = _RecordingMeter(), _Source()
    GatewaySignals(meter, [source])  # type: ignore[arg-type]
    assert list(meter.callbacks["polly.gateway.latency"](None)) == []
    source.snapshot = GatewayStats("discord", "connected", 6.0, 0.03, 1, 0, 1, 0)
    [point] = list(meter.callbacks["polly.gateway.latency"](None))
    assert point.value == 0.03
    assert point.attributes == {"polly.gateway.name": "discord"}


def test_sources_without_gateways_report_no_gateway_series() -> None:
    class Bare:
        pass

    meter_provider, reader = new_provider()
    try:
        signals = GatewaySignals(meter_provider.get_meter("t"), [Bare()])
        assert signals._gateways() == []
        assert not [n for n in collect(reader) if n.startswith("polly.gateway")]
    finally:
        meter_provider.shutdown()
