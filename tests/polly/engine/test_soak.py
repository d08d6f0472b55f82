"""``polly soak``: a short run proves the harness and the audit end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from polly.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_short_soak_on_postgres_reports_no_lost_vote(postgres_url: str, tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    args = [
        "soak", "--duration", "12", "--warmup", "4", "--polls", "40", "--events-per-second", "60",
        "--fault-rate", "0.2", "--replicas", "2", "--sample-interval", "2", "--database-url", postgres_url,
        "--report-dir", str(report_dir), "--burst-factor", "4", "--burst-seconds", "4",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert report["options"]["burst_seconds"] == 4
    assert 0 <= report["converged_after_seconds"] < 120
    assert report["lost_votes"] == 0
    assert report["phantom_votes"] == 0
    assert report["double_transitions"] == 0
    assert report["deleted_polls"] == 0
    assert report["calls_inside_retry_after"] == 0
    assert report["sandbox"]["faults"]["rate_limited"] > 0  # there were windows to respect
    assert report["expected_votes_checked"] > 20
    assert report["polls_in_database"] == 40
    assert report["transitions"]["scheduled->active"] >= 30  # a few open later than the run lasts
    assert sum(report["sandbox"]["faults"].values()) > 0
    assert len(report["samples"]) >= 3
    assert (report_dir / "report.png").stat().st_size > 10_000
    assert "postgres@" in report["database"]


def test_the_soak_refuses_a_database_with_polls(postgres_url: str, tmp_path: Path) -> None:
    base = ["soak", "--duration", "10", "--polls", "3", "--database-url", postgres_url]
    first = CliRunner().invoke(main, [*base, "--report-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output[-2000:]
    second = CliRunner().invoke(main, [*base, "--report-dir", str(tmp_path / "b")])
    assert second.exit_code == 1
    assert "needs an empty database" in second.output


@pytest.mark.slow
@pytest.mark.timeout(240)
# The in-process harness (the audit's database handle) drops one psycopg AsyncConnection unclosed at
# the end of the run (a known harness defect, not the replicas': they are separate processes); its
# ResourceWarning must not hide what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_crash_mode_kills_replica_processes_and_loses_no_vote(postgres_url: str, tmp_path: Path) -> None:
    report_dir = tmp_path / "crash"
    args = [
        "soak", "--duration", "16", "--warmup", "4", "--polls", "30", "--events-per-second", "60",
        "--fault-rate", "0.2", "--replicas", "2", "--crash-cycles", "2", "--database-url", postgres_url,
        "--report-dir", str(report_dir),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert result.exit_code == 0, (result.output[-3000:], (report_dir / "replicas.log").read_text()[-3000:])
    assert report["kills"] == 2
    assert report["sandbox_connections"] == 4  # two replicas, each killed replica came back once
    assert (report["lost_votes"], report["phantom_votes"], report["over_max_choices"]) == (0, 0, 0)
    assert (report["double_transitions"], report["deleted_polls"], report["calls_inside_retry_after"]) == (
        0,
        0,
        0,
    )
    assert report["expected_votes_checked"] > 10
