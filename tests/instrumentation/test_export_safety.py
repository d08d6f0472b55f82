"""A taken Prometheus port fails only the scrape endpoint; OTLP header values never leak."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from opentelemetry.instrumentation.polly._export import OutageReportingExporter
from opentelemetry.instrumentation.polly.setup import header_secrets, start_telemetry
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from pydantic import SecretStr

from polly.config import GeneralSettings, MonitoringSettings, OtlpSettings, PrometheusSettings, Settings
from polly.stats import StatsRegistry
from polly.telemetry_source import PollyStatsSource
from tests.instrumentation.receivers import GrpcReceiver, Received, free_port

LOGGER = "opentelemetry.instrumentation.polly"
#: Header values with every URL-special character (what OTEL_EXPORTER_OTLP_HEADERS may carry).
SECRETS = {"authorization": "Bearer s3cr%3Dt&x=y/z#frag?q@host:1+2 ;,", "x-api-key": "k3y%20with spaces!*'()"}


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_taken_prometheus_port_fails_only_the_endpoint(
    taken_port: int, stats_registry: StatsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    received = Received()
    receiver = GrpcReceiver(free_port(), received)
    receiver.start()
    otlp = OtlpSettings(endpoint=receiver.endpoint, export_interval_seconds=1.0, timeout_seconds=1.0)
    monitoring = MonitoringSettings(otlp=otlp, prometheus=PrometheusSettings(enabled=True, port=taken_port))
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            handle = start_telemetry(
                Settings(general=GeneralSettings(monitoring=monitoring)),
                sources=[PollyStatsSource(stats_registry)],
            )
        try:
            assert handle.enabled
            lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
            assert len(lines) == 1, lines
            assert f"127.0.0.1:{taken_port}" in lines[0]
            assert "Traceback" not in caplog.text
            assert received.wait(1, timeout=20), "OTLP export stopped with the scrape endpoint"
        finally:
            handle.shutdown()
    finally:
        receiver.stop()


#: Module-level, as exporter libraries create their loggers.
_LIBRARY_LOG = logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter")


class _Leaky(MetricExporter):
    """An inner exporter whose failures quote the headers, as a careless library might."""

    def __init__(self) -> None:
        super().__init__()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        secret = SECRETS["authorization"]
        _LIBRARY_LOG.error("rejected request with headers authorization=%s", quote(secret, safe=""))
        raise RuntimeError(f"bad credentials {secret}")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _leaks(text: str) -> list[str]:
    forms = {f for value in SECRETS.values() for f in (value, quote(value, safe=""), quote(value))}
    return [f for f in forms if f in text]


def test_failure_reasons_are_scrubbed_of_header_values(caplog: pytest.LogCaptureFixture) -> None:
    exporter = OutageReportingExporter(_Leaky(), "https://collector.example:4318", header_secrets(SECRETS))
    with caplog.at_level(logging.DEBUG):
        assert exporter.export(None) is MetricExportResult.FAILURE  # type: ignore[arg-type]
    assert "metric export to https://collector.example:4318 failed" in caplog.text
    assert "***" in caplog.text
    assert _leaks(caplog.text) == []
    assert _leaks(repr(exporter)) == []
    # negative control: without the secrets the reason would have carried them
    plain = OutageReportingExporter(_Leaky(), "https://collector.example:4318")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plain.export(None)  # type: ignore[arg-type]
    assert _leaks(caplog.text) != []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_headers_never_appear_in_logs_or_repr(
    protocol: str, stats_registry: StatsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    otlp = OtlpSettings(
        endpoint=f"http://user:pw@127.0.0.1:{free_port()}",  # nothing listens: every export fails
        protocol=protocol,  # type: ignore[arg-type]
        headers={k: SecretStr(v) for k, v in SECRETS.items()},
        export_interval_seconds=1.0,
        timeout_seconds=0.5,
        export_timeout_seconds=2.0,
    )
    settings = Settings(general=GeneralSettings(monitoring=MonitoringSettings(otlp=otlp)))
    with caplog.at_level(logging.DEBUG):
        handle = start_telemetry(settings, sources=[PollyStatsSource(stats_registry)])
        try:
            assert handle.meter_provider is not None
            handle.meter_provider.force_flush(timeout_millis=3000)
            texts = [caplog.text, repr(handle), repr(handle.exporter), repr(settings), str(settings)]
        finally:
            handle.shutdown(timeout_seconds=2)
    assert "failed" in caplog.text  # the outage was reported
    assert "pw@" not in caplog.text
    for text in texts:
        assert _leaks(text) == []
