"""polly: a hardened, drop-in engine for the Polly Discord poll bot."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polly")
except PackageNotFoundError:  # pragma: no cover - source tree without metadata
    __version__ = "0+unknown"

__all__ = ["__version__"]
