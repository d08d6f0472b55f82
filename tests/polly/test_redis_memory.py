"""100 000 calls while Redis is down leave memory bounded (pytest-memray, run in a subprocess).

The memray markers only act under ``pytest --memray``, so this test runs
``tests/polly/memray_redis_outage.py`` that way and checks every outcome: the bounded test passes and
its canary (the same calls with an unbounded structure added) fails on the same bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_outage_memory_is_bounded_and_the_bound_can_fail(tmp_path: Path) -> None:
    report = tmp_path / "memray.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--memray",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            "tests/polly/memray_redis_outage.py",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.attrib["name"]] = "failed" if failed else "passed"
    assert outcomes == {
        "test_outage_calls_peak_memory_is_bounded": "passed",
        "test_canary_unbounded_outage_state_exceeds_the_peak_bound": "failed",
    }, proc.stdout[-4000:]
    assert "Test was limited to 1.0MiB but allocated" in proc.stdout
