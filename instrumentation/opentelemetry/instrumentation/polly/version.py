"""The instrumentation's version: the distribution's."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polly")
except PackageNotFoundError:  # pragma: no cover - source tree without metadata
    __version__ = "0+unknown"
