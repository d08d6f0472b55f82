"""``polly run --sandbox`` with an OTLP endpoint exports every documented metric and logs censuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.instrumentation.receivers import GrpcReceiver, Received, free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([a-z0-9_.]+)` \|", text, flags=re.MULTILINE))


def test_sandbox_exports_every_documented_metric_over_otlp(tmp_path: Path, redis_url: str) -> None:
    received = Received()
    receiver = GrpcReceiver(free_port(), received)
    receiver.start()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POLLY_", "OTEL_", "REDIS_", "DATABASE_"))
        },
        "DATABASE_URL": f"sqlite:///{tmp_path}/polly.db",
        "REDIS_URL": redis_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "2000",
        "OTEL_SERVICE_NAME": "polly-e2e",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__ENABLED": "true",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__INTERVAL_SECONDS": "10",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__TOP_N_CLASSES": "5",
        "POLLY_ENGINE__EMBED_UPDATE_INTERVAL_SECONDS": "1",
        "POLLY_GENERAL__MONITORING__LEAK_DETECTION__RSS_WINDOW_SECONDS": "60",
        "OTEL_PYTHON_POLLY_LEAK_WARMUP": "0",
    }
    try:
        command = [sys.executable, "-m", "polly.cli", "run", "--sandbox", "--duration", "28"]
        result = subprocess.run(
            [*command, "--events-per-second", "20"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    names: set[str] = set()
    services: set[str] = set()
    for request in received.requests:
        for rm in request.resource_metrics:
            services.update(a.value.string_value for a in rm.resource.attributes if a.key == "service.name")
            for sm in rm.scope_metrics:
                names.update(m.name for m in sm.metrics)
    assert services == {"polly-e2e"}
    missing = documented_metrics() - names
    assert missing == set(), f"documented but not exported: {sorted(missing)}"
    assert "Memory Snapshot" in result.stderr
    assert re.search(r"Top 5 by object count:\n.*\d", result.stderr)
    assert "Top 5 by memory usage:" in result.stderr
    assert re.search(r"\d+\.\d MB", result.stderr)
