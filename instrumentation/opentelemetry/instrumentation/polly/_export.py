"""An exporter wrapper that reports a collector outage once, and its recovery once.

The OTLP exporters log every failed export (and every retry). Behind
:class:`OutageReportingExporter` those records are held back while an export runs (they are
remembered as the reason), and the wrapper logs instead one WARNING when exports start failing
and one INFO when one succeeds again. Nothing is buffered: a failed batch is dropped, cumulative
series catch up on the next success, so memory does not grow during an outage. Retries and
timeouts are the inner exporter's, bounded by its ``timeout``, and happen on the SDK's exporter
thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

logger = logging.getLogger("opentelemetry.instrumentation.polly")

_QUIET_PREFIXES = ("opentelemetry.exporter", "opentelemetry.sdk.metrics._internal.export")


class _HoldBack(logging.Filter):
    """Drops exporter log records emitted on a thread that is inside a wrapped export."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.local, "inside", False):
            self.local.reason = record.getMessage().splitlines()[0][:300]
            return False
        return True


_HOLD_BACK = _HoldBack()


def _quiet_exporter_loggers() -> None:
    # Filters act only on the logger a record is created on, so each exporter module's logger gets it.
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith(_QUIET_PREFIXES)]
    for name in names:
        log = logging.getLogger(name)
        if _HOLD_BACK not in log.filters:
            log.addFilter(_HOLD_BACK)


class OutageReportingExporter(MetricExporter):
    """Wraps ``inner``; ``target`` (an endpoint without credentials) names it in the log.

    ``secrets`` (the OTLP header values, in every encoding) are replaced by ``***`` in every
    failure reason before it is logged.
    """

    def __init__(self, inner: MetricExporter, target: str, secrets: Sequence[str] = ()) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # noqa: SLF001 - the reader reads these
            preferred_aggregation=inner._preferred_aggregation,  # noqa: SLF001
        )
        self._inner = inner
        self.target = target
        self._secrets = tuple(secrets)
        self.failing = False
        self.failed_exports = 0
        self.outages = 0
        _quiet_exporter_loggers()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        _quiet_exporter_loggers()  # exporter modules imported since (their loggers are module-level)
        local = _HOLD_BACK.local
        local.inside = True
        local.reason = None
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as err:  # noqa: BLE001 - an exporter bug must not kill the reader thread's cycle
            result = MetricExportResult.FAILURE
            local.reason = f"{type(err).__name__}: {err}"
        finally:
            local.inside = False
        if result is MetricExportResult.SUCCESS:
            if self.failing:
                self.failing = False
                logger.info(
                    "metric export to %s recovered after %d failed export(s)",
                    self.target,
                    self.failed_exports,
                )
                self.failed_exports = 0
        else:
            self.failed_exports += 1
            if not self.failing:
                self.failing = True
                self.outages += 1
                logger.warning(
                    "metric export to %s failed (%s); metrics are dropped until it recovers, "
                    "which will be logged once",
                    self.target,
                    self._scrub(local.reason or "no detail"),
                )
        return result

    def __repr__(self) -> str:
        return f"<OutageReportingExporter target={self.target!r} failing={self.failing}>"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        local = _HOLD_BACK.local
        local.inside = True
        try:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
        finally:
            local.inside = False
