"""A real Prometheus scrapes real metrics; every alert and dashboard query has data to work on.

The metrics come from a process serving them through the OpenTelemetry SDK's Prometheus exporter:

- ``synthetic``: ``tests/deploy/fake_exporter.py`` emits every metric of docs/metrics.md with its
  documented name, kind, unit and attributes;
- ``sandbox``: ``polly run --sandbox`` with its scrape endpoint on, Redis on (a claimed db of the
  test Redis) and 10-second censuses, i.e. what polly really emits.

Prometheus scrapes every second and loads deploy/'s rule file. The test then asserts that every
rule evaluates without error, that every vector selector of every alert returns series, and that
every dashboard panel query (with Grafana's variables expanded) returns data, so no panel is empty
by construction. The SDK's endpoint names unit-``1`` gauges without the collector's ``_ratio``; a
metric relabelling in the test's scrape config applies the collector's name, as the commented
direct-scrape job in deploy/prometheus/prometheus.yml describes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deployfiles import ROOT, RULES, alert_rules, dashboard_queries
from tests.deploy.promnames import MetricSpec, expand_grafana, sdk_renames, selectors
from tests.deploy.promserver import PrometheusServer, free_port
from tests.services import REDIS_URL, claim_redis_db, redis_db_url, release_redis_db

#: Seconds of scraping before the queries run: several samples for rate() and deriv(); for the
#: sandbox also two censuses 10 s apart, which the RSS growth rate needs before it reports.
WARM_UP_SECONDS = {"synthetic": 8.0, "sandbox": 30.0}

pytestmark = pytest.mark.slow


def name_fixes(specs: list[MetricSpec]) -> list[dict[str, Any]]:
    """metric_relabel_configs giving SDK-named series the collector's name (unit ``1`` gauges)."""
    return [
        {"source_labels": ["__name__"], "regex": sdk, "target_label": "__name__", "replacement": collector}
        for sdk, collector in sdk_renames(specs).items()
    ]


def _wait_http(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the metrics source exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing served metrics on 127.0.0.1:{port} within {timeout:.0f} s")


def _source_command(
    source: str, metrics_doc: Path, port: int, tmp_path: Path, redis_url: str | None = None
) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLY_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    if source == "synthetic":
        return [
            sys.executable,
            str(ROOT / "tests" / "deploy" / "fake_exporter.py"),
            str(metrics_doc),
            str(port),
        ], env
    env.update(
        {
            "POLLY_GENERAL__MONITORING__PROMETHEUS__ENABLED": "true",
            "POLLY_GENERAL__MONITORING__PROMETHEUS__PORT": str(port),
            "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__INTERVAL_SECONDS": "10",
            "POLLY_GENERAL__MONITORING__LEAK_DETECTION__RSS_WINDOW_SECONDS": "60",
            "OTEL_PYTHON_POLLY_LEAK_WARMUP": "0",  # the RSS growth rate right away
            "POLLY_DATABASE__URL": f"sqlite:///{tmp_path}/polly.db",
            # Redis on, so the breaker's series exist (the sandbox's default is no Redis).
            "POLLY_REDIS__ENABLED": "true",
            "REDIS_URL": redis_url or "",
        }
    )
    return [str(Path(sys.executable).with_name("polly")), "run", "--sandbox"], env


@pytest.fixture(scope="module", params=["synthetic", "sandbox"])
def scraped(
    request: pytest.FixtureRequest,
    prometheus_binary: str,
    metric_specs: list[MetricSpec],
    metrics_doc: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    """A Prometheus that has scraped the source for WARM_UP_SECONDS, with deploy/'s rules loaded."""
    source: str = request.param
    tmp_path = tmp_path_factory.mktemp(f"scrape-{source}")
    port = free_port()
    redis_db = claim_redis_db(REDIS_URL) if source == "sandbox" else None
    redis_url = None if redis_db is None else redis_db_url(REDIS_URL, redis_db)
    command, env = _source_command(source, metrics_doc, port, tmp_path, redis_url)
    log = (tmp_path / "source.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait_http(port, process, timeout=60)
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        with PrometheusServer(
            prometheus_binary,
            workdir,
            [f"127.0.0.1:{port}"],
            rule_files=[RULES],
            metric_relabel_configs=name_fixes(metric_specs),
        ) as server:
            server.wait_for('up{job="polly"} == 1')
            time.sleep(WARM_UP_SECONDS[source])
            yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if redis_db is not None:
            release_redis_db(REDIS_URL, redis_db)


def test_rules_evaluate_without_error(scraped: PrometheusServer) -> None:
    groups = scraped.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["name"] for r in rules} == {name for name, _ in alert_rules()}
    broken = {r["name"]: r.get("lastError") for r in rules if r.get("health") != "ok"}
    assert broken == {}


def test_every_alert_selector_has_series(scraped: PrometheusServer) -> None:
    empty: list[str] = []
    for name, expr in alert_rules():
        scraped.query(expr)  # the whole expression evaluates (it need not fire)
        empty.extend(f"{name}: {s.text}" for s in selectors(expr) if not scraped.query(s.text))
    assert empty == []


def test_every_dashboard_query_returns_data(scraped: PrometheusServer) -> None:
    empty: list[str] = [
        f"{where}: {expr}" for where, expr in dashboard_queries() if not scraped.query(expand_grafana(expr))
    ]
    assert empty == []
