"""Options of one session, from defaults, polly's ``general.monitoring`` settings and the environment.

Environment variables (the contrib ``OTEL_PYTHON_<INSTRUMENTATION>_*`` style; each applies on top of
the defaults or of polly's settings):

======================================================  =========  =======================================
variable                                                default    meaning
======================================================  =========  =======================================
``OTEL_PYTHON_POLLY_CENSUS_INTERVAL``                   ``60``     seconds between gc class censuses (>= 1)
``OTEL_PYTHON_POLLY_CENSUS_TOP_N``                      ``50``     classes named per census (>= 1)
``OTEL_PYTHON_POLLY_MAX_TYPE_NAMES``                    ``200``    class names ever reported (1..1998)
``OTEL_PYTHON_POLLY_LEAK_CONSECUTIVE_CENSUSES``         ``3``      K: new highs in a row a suspect set (>= 2)
``OTEL_PYTHON_POLLY_LEAK_MIN_GROWTH_PERCENT``           ``1.0``    rise over that run, % of the class's own
                                                                   count (> 0)
``OTEL_PYTHON_POLLY_LEAK_WARMUP``                       ``300``    seconds after start with no leak signal
``OTEL_PYTHON_POLLY_RSS_WINDOW``                        ``3600``   seconds of RSS history (>= 60)
``OTEL_PYTHON_POLLY_RSS_GROWTH_WARN_PERCENT_PER_HOUR``  ``10``     RSS warning threshold, 0 disables
``OTEL_PYTHON_POLLY_TASK_SAMPLE_INTERVAL``              ``1``      seconds between asyncio task counts
``OTEL_PYTHON_POLLY_EXCLUDED_SIGNALS``                  empty      comma-separated metric names (or
                                                                   ``prefix.*``) not to emit
======================================================  =========  =======================================

A value that does not parse or is out of range is reported in one line naming the variable, the
value and what is allowed, and the default is kept. ``OTEL_SDK_DISABLED=true`` starts nothing.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

logger = logging.getLogger("opentelemetry.instrumentation.polly")

PREFIX = "OTEL_PYTHON_POLLY_"
DEFAULT_MIN_GROWTH_PERCENT = 1.0
DEFAULT_WARMUP_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Options:
    """Tuning of one session. Seconds are floats; see the module docstring for the ranges."""

    interval_seconds: float = 60.0
    top_n_classes: int = 50
    max_type_names: int = 200
    consecutive_snapshots: int = 3
    leak_min_growth_percent: float = DEFAULT_MIN_GROWTH_PERCENT
    leak_warmup_seconds: float = DEFAULT_WARMUP_SECONDS
    rss_window_seconds: float = 3600.0
    rss_growth_warn_percent_per_hour: float = 10.0
    task_sample_interval_seconds: float = 1.0
    excluded_signals: tuple[str, ...] = ()
    log_snapshots: bool = False

    @classmethod
    def from_monitoring(cls, monitoring: Any, environ: Mapping[str, str] | None = None) -> Options:
        """From polly's ``general.monitoring`` settings (read by attribute), then the environment."""
        profiling = monitoring.memory_profiling
        leaks = monitoring.leak_detection
        base = cls(
            interval_seconds=float(profiling.interval_seconds),
            top_n_classes=int(profiling.top_n_classes),
            max_type_names=int(leaks.max_type_names),
            consecutive_snapshots=int(leaks.consecutive_snapshots),
            leak_min_growth_percent=float(getattr(leaks, "min_growth_percent", DEFAULT_MIN_GROWTH_PERCENT)),
            leak_warmup_seconds=float(getattr(leaks, "warmup_seconds", DEFAULT_WARMUP_SECONDS)),
            rss_window_seconds=float(leaks.rss_window_seconds),
            rss_growth_warn_percent_per_hour=float(leaks.rss_growth_warn_percent_per_hour),
            log_snapshots=bool(profiling.enabled),
        )
        return base.with_env(environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Options:
        return cls().with_env(environ)

    def with_env(self, environ: Mapping[str, str] | None = None) -> Options:
        """These options with every valid ``OTEL_PYTHON_POLLY_*`` variable applied."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for var, (field_name, parse, allowed) in _VARIABLES.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                changes[field_name] = parse(raw.strip())
            except ValueError:
                logger.warning(
                    "%s=%r is not valid (allowed: %s); keeping %s",
                    var,
                    raw,
                    allowed,
                    getattr(self, field_name),
                )
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in _VARIABLES)
        if unknown:
            logger.warning("unknown variable(s) %s; known: %s", ", ".join(unknown), ", ".join(_VARIABLES))
        return replace(self, **changes) if changes else self

    def excludes(self, metric: str) -> bool:
        """Whether ``metric`` is in ``excluded_signals`` (exact name or ``prefix.*`` pattern)."""
        return any(fnmatch.fnmatchcase(metric, pattern) for pattern in self.excluded_signals)


def _number(
    kind: Callable[[str], float], low: float, high: float | None = None, *, open_low: bool = False
) -> Any:
    def parse(raw: str) -> float:
        value = kind(raw)
        if (
            math.isnan(value)
            or (value <= low if open_low else value < low)
            or (high is not None and value > high)
        ):
            raise ValueError(raw)
        return value

    return parse


def _signals(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if any(not all(c.isalnum() or c in "._*" for c in n) for n in names):
        raise ValueError(raw)
    return names


_VARIABLES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    f"{PREFIX}CENSUS_INTERVAL": ("interval_seconds", _number(float, 1), "seconds >= 1"),
    f"{PREFIX}CENSUS_TOP_N": ("top_n_classes", _number(int, 1), "an integer >= 1"),
    f"{PREFIX}MAX_TYPE_NAMES": ("max_type_names", _number(int, 1, 1998), "an integer 1..1998"),
    f"{PREFIX}LEAK_CONSECUTIVE_CENSUSES": ("consecutive_snapshots", _number(int, 2), "an integer >= 2"),
    f"{PREFIX}LEAK_MIN_GROWTH_PERCENT": (
        "leak_min_growth_percent",
        _number(float, 0, open_low=True),
        "a percentage > 0",
    ),
    f"{PREFIX}LEAK_WARMUP": ("leak_warmup_seconds", _number(float, 0), "seconds >= 0"),
    f"{PREFIX}RSS_WINDOW": ("rss_window_seconds", _number(float, 60), "seconds >= 60"),
    f"{PREFIX}RSS_GROWTH_WARN_PERCENT_PER_HOUR": (
        "rss_growth_warn_percent_per_hour",
        _number(float, 0),
        "a percentage >= 0 (0 disables)",
    ),
    f"{PREFIX}TASK_SAMPLE_INTERVAL": (
        "task_sample_interval_seconds",
        _number(float, 0.05),
        "seconds >= 0.05",
    ),
    f"{PREFIX}EXCLUDED_SIGNALS": (
        "excluded_signals",
        _signals,
        "comma-separated metric names, `prefix.*` patterns allowed",
    ),
}

assert {f for f, _, _ in _VARIABLES.values()} <= {f.name for f in fields(Options)}


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """``OTEL_SDK_DISABLED`` is ``true`` (case-insensitive), as the SDK reads it."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
