"""Configuration by environment, polly's settings mapped onto the same options, OTEL_SDK_DISABLED."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from polly.config import LeakDetectionSettings, MemoryProfilingSettings, MonitoringSettings
from tests.instrumentation.helpers import SCOPE, collect

LOGGER = "opentelemetry.instrumentation.polly"


def test_every_variable_is_read() -> None:
    env = {
        "OTEL_PYTHON_POLLY_CENSUS_INTERVAL": "15",
        "OTEL_PYTHON_POLLY_CENSUS_TOP_N": "7",
        "OTEL_PYTHON_POLLY_MAX_TYPE_NAMES": "300",
        "OTEL_PYTHON_POLLY_LEAK_CONSECUTIVE_CENSUSES": "5",
        "OTEL_PYTHON_POLLY_LEAK_MIN_GROWTH_PERCENT": "2.5",
        "OTEL_PYTHON_POLLY_LEAK_WARMUP": "90",
        "OTEL_PYTHON_POLLY_RSS_WINDOW": "600",
        "OTEL_PYTHON_POLLY_RSS_GROWTH_WARN_PERCENT_PER_HOUR": "0",
        "OTEL_PYTHON_POLLY_TASK_SAMPLE_INTERVAL": "0.5",
        "OTEL_PYTHON_POLLY_EXCLUDED_SIGNALS": "process.context_switches, polly.gc.*",
    }
    assert Options.from_env(env) == Options(
        interval_seconds=15,
        top_n_classes=7,
        max_type_names=300,
        consecutive_snapshots=5,
        leak_min_growth_percent=2.5,
        leak_warmup_seconds=90,
        rss_window_seconds=600,
        rss_growth_warn_percent_per_hour=0,
        task_sample_interval_seconds=0.5,
        excluded_signals=("process.context_switches", "polly.gc.*"),
    )


@pytest.mark.parametrize(
    ("variable", "raw", "allowed"),
    [
        ("OTEL_PYTHON_POLLY_CENSUS_INTERVAL", "soon", "seconds >= 1"),
        ("OTEL_PYTHON_POLLY_CENSUS_TOP_N", "0", "an integer >= 1"),
        ("OTEL_PYTHON_POLLY_MAX_TYPE_NAMES", "5000", "an integer 1..1998"),
        ("OTEL_PYTHON_POLLY_LEAK_CONSECUTIVE_CENSUSES", "1", "an integer >= 2"),
        ("OTEL_PYTHON_POLLY_LEAK_MIN_GROWTH_PERCENT", "0", "a percentage > 0"),
        ("OTEL_PYTHON_POLLY_TASK_SAMPLE_INTERVAL", "nan", "seconds >= 0.05"),
        ("OTEL_PYTHON_POLLY_EXCLUDED_SIGNALS", "process memory", "comma-separated metric names"),
    ],
)
def test_a_bad_value_is_one_line_and_the_default_stays(
    variable: str, raw: str, allowed: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Options.from_env({variable: raw}) == Options()
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert variable in line
    assert repr(raw) in line
    assert allowed in line
    assert "Traceback" not in caplog.text


def test_unknown_variable_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Options.from_env({"OTEL_PYTHON_POLLY_CENSUS_INTERVALL": "5"})
    assert "OTEL_PYTHON_POLLY_CENSUS_INTERVALL" in caplog.text
    assert "OTEL_PYTHON_POLLY_CENSUS_INTERVAL," in caplog.text  # the known ones are listed


def test_polly_settings_map_onto_the_same_options() -> None:
    monitoring = MonitoringSettings(
        memory_profiling=MemoryProfilingSettings(enabled=True, interval_seconds=30, top_n_classes=9),
        leak_detection=LeakDetectionSettings(
            consecutive_snapshots=4,
            max_type_names=150,
            rss_window_seconds=900,
            rss_growth_warn_percent_per_hour=5,
        ),
    )
    options = Options.from_monitoring(monitoring, environ={})
    assert (options.interval_seconds, options.top_n_classes, options.log_snapshots) == (30, 9, True)
    assert (options.consecutive_snapshots, options.max_type_names) == (4, 150)
    assert (options.rss_window_seconds, options.rss_growth_warn_percent_per_hour) == (900, 5)
    # the environment applies on top, as for any application
    on_top = Options.from_monitoring(monitoring, environ={"OTEL_PYTHON_POLLY_CENSUS_TOP_N": "3"})
    assert on_top.top_n_classes == 3
    assert on_top.interval_seconds == 30


def test_excluded_signals_are_not_emitted() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    options = Options(
        excluded_signals=("process.context_switches", "polly.gc.object.*"), leak_warmup_seconds=0
    )
    telemetry = Telemetry(provider.get_meter(SCOPE), options)
    try:
        telemetry.census.census_now()
        names = set(collect(reader))
        assert "process.context_switches" not in names
        assert "polly.gc.object.count" not in names
        assert "polly.gc.object.size" not in names
        assert {"process.memory.usage", "polly.gc.census.duration"} <= names  # the rest stays
    finally:
        telemetry.stop()
        provider.shutdown()


PROBE = """
import gc, os, sys, threading
before = len(gc.callbacks)
from opentelemetry.instrumentation.polly import PollyInstrumentor
instrumentor = PollyInstrumentor()
instrumentor.instrument()
threads = sorted(t.name for t in threading.enumerate() if t.name == "polly-census")
inactive = instrumentor.telemetry is None
from sqlalchemy.engine.base import Engine
wrapped = int(hasattr(Engine.__init__, "__wrapped__"))
noop = inactive and instrumentor.register_engine(object()) is None
print(wrapped, len(gc.callbacks) - before, len(threads), inactive, noop)
"""


@pytest.mark.parametrize(
    ("disabled", "expected"), [("true", "0 0 0 True True"), ("false", "1 1 1 False False")]
)
def test_sdk_disabled_starts_nothing(disabled: str, expected: str) -> None:
    env = {"OTEL_SDK_DISABLED": disabled, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == expected.split()  # the "false" run is the negative control
