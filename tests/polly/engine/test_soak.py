"""``polly soak``: a short run proves the harness and the audit end to end."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from polly.cli import main
from polly.clock import FakeClock
from polly.engine.gateway import Embed
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.soak import LoadMark, Voters, offered_rate

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
    burst = report["load"]["burst"]
    assert burst["target_events_per_second"] == 240
    assert 180 <= burst["offered_events_per_second"] <= 250, burst  # a stall of over 1 s is not made up
    assert burst["events_offered"] + burst["events_not_offered"] >= 0.9 * 240 * 4
    assert report["events_shed"] == sum(p["events_shed"] for p in report["load"].values())
    assert report["memory_bound_bytes"] == 1024 * 1024 * 1024
    assert report["rss_within_bound"] is True
    assert (
        0
        < report["rss_before_burst_bytes"]
        <= report["rss_peak_from_burst_bytes"]
        <= report["rss_peak_bytes"]
    )
    assert report["lost_votes_without_reaction"] == 0
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
    # the refusal closed its connection: none is left for the gc to find (a ResourceWarning, an error)
    gc.collect()


@pytest.mark.slow
@pytest.mark.timeout(240)
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


class _Run(FakeClock):
    """A fake clock that stalls once (``stall``: at, for how long) and turns the driver off at ``stop_at``."""

    def __init__(self, stop_at: float, stall: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.stop_at, self.stall = stop_at, stall
        self.voters: Voters | None = None

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.stall is not None and self.monotonic() >= self.stall[0]:
            self.advance(self.stall[1])
            self.stall = None
        if self.voters is not None and self.monotonic() >= self.stop_at:
            self.voters.running = False


async def _drive(rate: float, clock: _Run, messages: int = 20) -> tuple[SandboxGateway, Voters]:
    sandbox = SandboxGateway(
        rng=random.Random(1), clock=clock.monotonic, sleep=clock.sleep, max_events=1_000_000,
        wall_clock=clock.now,
    )  # fmt: skip
    sandbox.ensure_channel(1, 1)
    for _ in range(messages):
        await sandbox.post_poll_message(1, embed=Embed(title="Q?"), emojis=("🇦", "🇧", "🇨"))
    clock.voters = Voters(sandbox, 5, rate, random.Random(2), clock=clock)
    start = clock.voters.mark()
    await clock.voters.run()
    assert start == LoadMark(0.0, 0, 0)
    return sandbox, clock.voters


async def test_the_voter_driver_offers_the_burst_rate_in_bulk() -> None:
    clock = _Run(stop_at=2.0)  # each 20 ms tick makes its 300 acts at once
    sandbox, voters = await _drive(15_000.0, clock)
    assert 14_800 <= offered_rate(LoadMark(0.0, 0, 0), voters.mark()) <= 15_000  # the last tick not made
    counters = sandbox.counters()
    assert counters.user_adds + counters.user_removes == voters.acts
    assert voters.missed == 0


async def test_the_voter_driver_makes_up_one_second_of_a_stall_and_counts_the_rest() -> None:
    clock = _Run(stop_at=4.5, stall=(1.0, 3.0))
    _, voters = await _drive(15_000.0, clock)
    assert 29_900 <= voters.missed <= 30_400  # 3 s due after the stall, 1 s of it made up
    assert 37_000 <= voters.acts <= 37_600  # 1 s + 1 s made up + 0.5 s


async def test_the_voter_driver_counts_acts_due_while_nothing_is_votable() -> None:
    _, voters = await _drive(1000.0, _Run(stop_at=1.0), messages=0)
    assert voters.acts == 0
    assert 960 <= voters.missed <= 1000  # 20 per 20 ms tick
