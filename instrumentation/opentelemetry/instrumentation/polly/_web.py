"""HTTP server metrics of polly's dashboard: the ``polly.web_app_hooks`` entry point ``otel``.

polly calls :func:`instrument_web_app` with the dashboard's Starlette application once it is built
(polly never imports OpenTelemetry). It adds OpenTelemetry's Starlette instrumentation, so every
request records ``http.server.request.duration`` (seconds) by ``http.request.method``,
``http.route`` (the route template, e.g. ``/polls/{poll_id:int}``: never the raw path),
``http.response.status_code``, ``url.scheme``, ``network.protocol.version`` and ``error.type``, and
``http.server.active_requests``. Unmatched paths carry no ``http.route``.

The stable HTTP conventions are chosen (``OTEL_SEMCONV_STABILITY_OPT_IN=http`` unless the variable is
set): the older ones carry the client's ``Host`` header, a value set without bound. The meter
provider is polly's own (:func:`use_meter_provider`, called by ``start_telemetry``), else the global.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.instrumentation._semconv import (
    OTEL_SEMCONV_STABILITY_OPT_IN,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _StabilityMode,
)
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.metrics import MeterProvider, get_meter_provider

logger = logging.getLogger("opentelemetry.instrumentation.polly")
_provider: list[MeterProvider] = []  # at most one: the provider polly's telemetry built


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Record the provider dashboard metrics go to (``None``: back to the global one)."""
    _provider.clear()
    if provider is not None:
        _provider.append(provider)


def instrument_web_app(app: Any) -> None:
    """Add HTTP server metrics to the dashboard ``app`` (before it serves its first request)."""
    os.environ.setdefault(OTEL_SEMCONV_STABILITY_OPT_IN, "http")
    # The instrumentation's own (underscored) switch is the only way to read the mode it will use.
    _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]  # noqa: SLF001
    mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(  # noqa: SLF001
        _OpenTelemetryStabilitySignalType.HTTP
    )
    if mode is _StabilityMode.DEFAULT:
        logger.warning(
            "dashboard HTTP metrics use the old HTTP conventions (no http.route, the Host header as an "
            "attribute): set OTEL_SEMCONV_STABILITY_OPT_IN=http"
        )
    provider = _provider[0] if _provider else get_meter_provider()
    StarletteInstrumentor.instrument_app(app, meter_provider=provider)
