"""Runs tests/polly/memray_bounds.py under ``pytest --memray`` and proves its limits can fail.

pytest-memray's ``limit_memory``/``limit_leaks`` markers do nothing without ``--memray``, so the
bounded-memory tests live in a file a plain run does not collect and are run here in subprocesses:

* the failure tracker's peak for 1 000 000 distinct failing keys stays under the file's
  ``FAILURE_MEMORY_LIMIT`` (default allocator: memray sees pymalloc arenas, which keeps it fast);
* 100 000 supervised short tasks leak no more than ``LEAK_LIMIT_PER_LOCATION`` anywhere and leave no
  ``asyncio.Task`` alive (``PYTHONMALLOC=malloc``, so every object allocation is seen);
* with ``POLLY_MEMRAY_NEGATIVE=1`` (upstream's unbounded dict; finished tasks kept) both limits fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMRAY_FILE = Path(__file__).with_name("memray_bounds.py")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def run_memray(selection: str, *, malloc: bool, negative: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "POLLY_MEMRAY_NEGATIVE")}
    if malloc:
        env["PYTHONMALLOC"] = "malloc"
    if negative:
        env["POLLY_MEMRAY_NEGATIVE"] = "1"
    command = [sys.executable, "-m", "pytest", "--memray", "-p", "no:cacheprovider", "-q", "-k", selection]
    return subprocess.run(
        [*command, str(MEMRAY_FILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )


def test_a_million_failing_keys_stay_under_the_memory_limit() -> None:
    result = run_memray("million", malloc=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_hundred_thousand_supervised_tasks_leak_nothing() -> None:
    result = run_memray("thousand", malloc=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_memory_limit_catches_an_unbounded_failure_dict() -> None:
    result = run_memray("million", malloc=False, negative=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Test was limited to 8.0MiB but allocated" in result.stdout


def test_the_leak_limit_catches_kept_tasks() -> None:
    result = run_memray("thousand", malloc=True, negative=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "per location but at least one location leaked more" in result.stdout
