"""Build the MeterProvider from polly's settings: the ``polly.telemetry`` entry point ``otel``.

``polly run`` finds this without importing OpenTelemetry itself::

    [project.entry-points."polly.telemetry"]
    otel = "opentelemetry.instrumentation.polly.setup:start_telemetry"

``start_telemetry(settings, *, loop=None, run_by_owner=False) -> TelemetryHandle`` reads
``settings.general.monitoring``:

* ``otlp.endpoint`` set: a periodic OTLP exporter (``grpc`` or ``http/protobuf``; headers,
  ``timeout_seconds``, ``export_interval_seconds``, ``export_timeout_seconds``, ``insecure``); the
  standard ``OTEL_*`` variables were already folded into these settings. For ``http/protobuf`` an
  endpoint without a path gets ``/v1/metrics``. Outages are logged once and recoveries once.
  Unset: nothing is exported over the network (signals, leak warnings and the memory profiler log
  still work).
* ``prometheus.enabled``: a scrape endpoint on ``host:port`` (``127.0.0.1`` by default). If the
  address cannot be bound (port taken, no such address), only the endpoint fails: one WARNING
  names the address and the error, and everything else (OTLP export) keeps running.
* OTLP headers (often credentials, with any URL-special character) never appear in a log line, an
  error or a ``repr``: exporter failure reasons are scrubbed of every header value, raw and
  percent-encoded.
* resource: ``service.name``, ``service.version`` (polly's version), ``service.instance.id``
  (configured, else a random UUID per process), plus ``OTEL_RESOURCE_ATTRIBUTES``.
* ``enabled: false`` (or ``OTEL_SDK_DISABLED=true``): a handle that does nothing.
* ``settings`` is read by attribute only (polly's pydantic ``Settings``; nothing of polly is
  imported), and census and leak options map onto :class:`Options` (``OTEL_PYTHON_POLLY_*``
  variables apply on top).

The handle (:class:`TelemetryHandle`):

* ``run_by_owner=True`` (what polly passes): nothing is scheduled; the owner runs
  ``await handle.run()`` (in polly, a supervised loop, awaited at shutdown like every other). Else,
  with ``loop`` given (or a loop running in the calling thread), the census and loop-side samplers
  run on it as a task the handle owns (``polly-telemetry``), created thread-safely; its end is
  observed (an exception is logged once; the cancellation by ``asyncio.run`` at the end of the
  application is a normal end and logs nothing). With neither, until the owner awaits
  ``handle.run()`` no census is taken (other metrics work).
* ``handle.run()``: the loop-side work (census every ``memory_profiling.interval_seconds``, RSS and
  task sampling, gc pause draining), until cancelled. Never raises on its own.
* ``handle.register_engine(engine, name=None)`` / ``handle.register_redis_pool(pool, name=None)``.
* ``handle.census_now()``: one census right away on the calling thread (tools, tests).
* ``handle.meter_provider``: the SDK MeterProvider (``None`` when disabled).
* ``handle.shutdown(timeout_seconds=5.0)``: stop every signal, flush once (bounded by the timeout
  even with the collector down), stop the scrape server. Idempotent, from any thread.
* ``await handle.aclose(timeout_seconds=5.0)``: the same from a coroutine, the flush off the event
  loop. Idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from opentelemetry.instrumentation.polly._census import CensusResult
from opentelemetry.instrumentation.polly._config import Options, sdk_disabled
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.instrumentation.polly._export import OutageReportingExporter
from opentelemetry.instrumentation.polly._instrumentor import _running_loop, installed_sources, session_for
from opentelemetry.instrumentation.polly.seam import StatsSource
from opentelemetry.instrumentation.polly.version import __version__
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

logger = logging.getLogger("opentelemetry.instrumentation.polly")


class TelemetryHandle:
    """What :func:`start_telemetry` returns; see the module docstring."""

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        telemetry: Telemetry | None,
        exporter: OutageReportingExporter | None = None,
        server: Any = None,
    ) -> None:
        self.meter_provider = meter_provider
        self.telemetry = telemetry
        self.exporter = exporter
        self._server = server
        self._closed = False

    def __repr__(self) -> str:
        target = self.exporter.target if self.exporter is not None else None
        return f"<TelemetryHandle enabled={self.enabled} otlp={target!r}>"

    @property
    def enabled(self) -> bool:
        return self.telemetry is not None

    async def run(self) -> None:
        if self.telemetry is None:
            await asyncio.Event().wait()  # disabled: park until cancelled, like the enabled variant
            return
        await self.telemetry.run()

    def census_now(self) -> CensusResult | None:
        return None if self.telemetry is None else self.telemetry.census.census_now()

    def register_engine(self, engine: Any, name: str | None = None) -> str | None:
        return None if self.telemetry is None else self.telemetry.pools.add_engine(engine, name)

    def register_redis_pool(self, pool: Any, name: str | None = None) -> str | None:
        return None if self.telemetry is None else self.telemetry.pools.add_redis_pool(pool, name)

    async def aclose(self, timeout_seconds: float = 5.0) -> None:
        if self.telemetry is not None:
            await self.telemetry.aclose()
        if not self._closed:
            await asyncio.to_thread(self.shutdown, timeout_seconds)

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=timeout_seconds * 1000)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def redact_url(url: str) -> str:
    """``url`` without user name, password, query and fragment (for log lines)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _secret(value: Any) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter is not None else value)


def header_secrets(headers: dict[str, str]) -> list[str]:
    """Every form a header value may take in a message: raw and percent-encoded."""
    out: set[str] = set()
    for value in headers.values():
        if len(value) >= 3:
            out.update((value, quote(value, safe=""), quote(value)))
    return sorted(out, key=len, reverse=True)


def url_secrets(url: str) -> list[str]:
    """The credentials of ``url`` (``user:password`` and the password), raw and percent-encoded."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    out = {userinfo} if userinfo else set()
    if parts.password:
        out.update((parts.password, quote(parts.password, safe="")))
    return sorted((s for s in out if s), key=len, reverse=True)


def _otlp_exporter(monitoring: Any, headers: dict[str, str]) -> MetricExporter:
    otlp = monitoring.otlp
    assert otlp.endpoint is not None
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        insecure = otlp.insecure if otlp.insecure is not None else otlp.endpoint.startswith("http://")
        return Grpc(
            endpoint=otlp.endpoint, insecure=insecure, headers=headers or None, timeout=otlp.timeout_seconds
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(
        endpoint=http_metrics_url(otlp.endpoint), headers=headers or None, timeout=otlp.timeout_seconds
    )


def http_metrics_url(endpoint: str) -> str:
    """``endpoint`` with ``/v1/metrics`` appended when it has no path (as OTEL_EXPORTER_OTLP_ENDPOINT)."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/v1/metrics", parts.query, parts.fragment))
    return endpoint


def _prometheus(monitoring: Any) -> tuple[MetricReader, Any] | None:
    """The scrape reader and its HTTP server; None (one WARNING naming the address) if it cannot bind."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    host, port = monitoring.prometheus.host, monitoring.prometheus.port
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as err:
        logger.warning(
            "Prometheus endpoint %s:%d cannot listen (%s); no scrape endpoint, other export continues",
            host, port, err.strerror or type(err).__name__,
        )  # fmt: skip
        return None
    # Created only once the port is ours: the reader registers with prometheus_client's registry.
    reader = PrometheusMetricReader()
    logger.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return reader, server


def build_resource(monitoring: Any) -> Resource:
    return Resource.create(
        {
            "service.name": monitoring.service_name,
            "service.version": __version__,
            "service.instance.id": monitoring.service_instance_id or str(uuid.uuid4()),
        }
    )


def start_telemetry(
    settings: Any,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    sources: Sequence[StatsSource] | None = None,
    run_by_owner: bool = False,
) -> TelemetryHandle:
    """Build the MeterProvider and every signal from ``settings``; see the module docstring."""
    monitoring = settings.general.monitoring
    if not monitoring.enabled or sdk_disabled():
        logger.info("monitoring disabled: no metrics")
        return TelemetryHandle(None, None)
    readers: list[MetricReader] = []
    exporter: OutageReportingExporter | None = None
    server = None
    otlp = monitoring.otlp
    if otlp.endpoint:
        headers = {str(k): _secret(v) for k, v in otlp.headers.items()}
        exporter = OutageReportingExporter(
            _otlp_exporter(monitoring, headers),
            redact_url(otlp.endpoint),
            secrets=[*header_secrets(headers), *url_secrets(otlp.endpoint)],
        )
        readers.append(
            PeriodicExportingMetricReader(
                exporter,
                export_interval_millis=otlp.export_interval_seconds * 1000,
                export_timeout_millis=otlp.export_timeout_seconds * 1000,
            )
        )
    if monitoring.prometheus.enabled:
        scrape = _prometheus(monitoring)
        if scrape is not None:
            reader, server = scrape
            readers.append(reader)
    if not readers:
        logger.info("no OTLP endpoint and no Prometheus endpoint: metrics are not exported")
    provider = MeterProvider(
        metric_readers=readers, resource=build_resource(monitoring), shutdown_on_exit=False
    )
    from opentelemetry.instrumentation.polly._web import use_meter_provider

    use_meter_provider(provider)  # the dashboard's HTTP metrics go to the same provider
    telemetry = session_for(
        provider,
        Options.from_monitoring(monitoring),
        installed_sources() if sources is None else sources,
        None if run_by_owner else loop or _running_loop(),
        thread_fallback=False,
    )
    return TelemetryHandle(provider, telemetry, exporter, server)
