"""The dashboard's HTTP server metrics, added through the ``polly.web_app_hooks`` entry point:
duration and count by route template, never by raw path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.polly import _web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.web.support import World, dashboard, sign_in, web_settings


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _web.use_meter_provider(provider)
    yield reader
    _web.use_meter_provider(None)
    provider.shutdown()


async def test_requests_are_measured_by_route_template(
    world: World, sqlite_url: str, tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    async with dashboard(web_settings(world.discord, sqlite_url, tmp_path)) as (_, client, _db):
        await sign_in(client, world.discord, world.manager)
        for poll_id in (101, 202, 303):
            assert (await client.get(f"/polls/{poll_id}")).status_code == 404
        await client.get("/no/such/page/4711")
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    durations = points["http.server.request.duration"]
    routes = {p.attributes.get("http.route") for p in durations}
    assert "/polls/{poll_id:int}" in routes
    assert "/auth/callback" in routes
    by_route = {p.attributes.get("http.route"): p.count for p in durations if p.attributes.get("http.route")}
    assert by_route["/polls/{poll_id:int}"] == 3  # three ids, one series
    every_value = " ".join(
        str(v) for ps in points.values() for p in ps for v in (p.attributes or {}).values()
    )
    for raw in ("101", "202", "4711", "testserver"):
        assert raw not in every_value
