"""A healthy ``polly run --sandbox`` for 5 minutes: censuses every 10 s and not one leak warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

DURATION_SECONDS = 300


def test_five_healthy_minutes_raise_no_leak_warning(tmp_path: Path, redis_url: str) -> None:
    # On the sandbox's default SQLite file: CPython's sqlite3 keeps up to 200 dead cursor weak
    # references per connection between its clean-ups, a bounded sawtooth the detector must not
    # take for a leak.
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POLLY_", "OTEL_", "REDIS_", "DATABASE_"))
        },
        "REDIS_URL": redis_url,
        "POLLY_REDIS__ENABLED": "true",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__ENABLED": "true",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__INTERVAL_SECONDS": "10",
        "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__TOP_N_CLASSES": "5",
        # short windows, so that the detectors have many chances to be wrong in 5 minutes
        "POLLY_GENERAL__MONITORING__LEAK_DETECTION__RSS_WINDOW_SECONDS": "120",
        "OTEL_PYTHON_POLLY_LEAK_WARMUP": "60",
    }
    command = [sys.executable, "-m", "polly.cli", "run", "--sandbox", "--duration", str(DURATION_SECONDS)]
    result = subprocess.run(
        [*command, "--events-per-second", "20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DURATION_SECONDS + 90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert (tmp_path / "db" / "polly.db").is_file(), "the sandbox did not run on its SQLite file"
    censuses = log.count("Memory Snapshot")
    assert censuses >= DURATION_SECONDS // 10 - 3, f"only {censuses} censuses"
    assert "leak suspects" not in log, [line for line in log.splitlines() if "leak suspects" in line]
    assert "RSS is growing" not in log, [line for line in log.splitlines() if "RSS is growing" in line]
