"""Fixtures for the deploy/ tests: the documented metrics and the Prometheus tools.

The metric list is ``docs/metrics.md`` (``POLLY_TEST_METRICS_DOC`` names another copy). promtool
and prometheus come from PATH (Debian's ``prometheus`` package; ``.ci/prepare`` installs it) or
``POLLY_TEST_PROMTOOL`` / ``POLLY_TEST_PROMETHEUS``; when missing, their tests skip with the reason,
or fail under ``POLLY_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.deployfiles import METRICS_DOC_ENV, ROOT
from tests.deploy.promnames import MetricSpec, parse_metrics_doc
from tests.deploy.promserver import find_binary
from tests.services import unavailable


def _missing_tool(name: str) -> None:
    unavailable(name, FileNotFoundError("not on PATH (apt-get install prometheus, or bash .ci/prepare)"))


@pytest.fixture(scope="session")
def metrics_doc() -> Path:
    """The metric list deploy/ must agree with."""
    path = Path(os.environ.get(METRICS_DOC_ENV) or ROOT / "docs" / "metrics.md")
    if not path.is_file():
        pytest.fail(f"{path} is missing: deploy/ is checked against the metrics it documents", pytrace=False)
    return path


@pytest.fixture(scope="session")
def metric_specs(metrics_doc: Path) -> list[MetricSpec]:
    specs = parse_metrics_doc(metrics_doc.read_text(encoding="utf-8"))
    assert len(specs) >= 10, f"{metrics_doc}: found only {len(specs)} metrics in its tables"
    return specs


@pytest.fixture(scope="session")
def promtool() -> str:
    binary = find_binary("promtool", "POLLY_TEST_PROMTOOL")
    if binary is None:
        _missing_tool("promtool")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    binary = find_binary("prometheus", "POLLY_TEST_PROMETHEUS")
    if binary is None:
        _missing_tool("prometheus")
    assert binary is not None
    return binary
