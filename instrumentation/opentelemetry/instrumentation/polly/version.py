"""The instrumentation's version: its distribution's (``opentelemetry-instrumentation-polly``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opentelemetry-instrumentation-polly")
except PackageNotFoundError:  # pragma: no cover - source tree without metadata
    __version__ = "0+unknown"
