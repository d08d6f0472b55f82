"""``polly soak``: run the sandbox engine under load and write a report."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from polly.cli.main import config_option, settings_or_exit
from polly.cli.run_cmd import configure_logging
from polly.errors import PollyError


@click.command()
@config_option
@click.option(
    "--duration", type=click.FloatRange(min=10), default=600.0, show_default=True, help="Seconds of load."
)
@click.option("--warmup", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds before RSS growth is measured.")  # fmt: skip
@click.option("--polls", type=click.IntRange(min=1, max=100_000), default=2000, show_default=True)
@click.option(
    "--voters", type=click.IntRange(min=1), default=5, show_default=True, help="Simulated users per poll."
)
@click.option("--events-per-second", type=click.FloatRange(min=0.1), default=200.0, show_default=True)
@click.option("--fault-rate", type=click.FloatRange(min=0, max=1), default=0.2, show_default=True,
              help="Share of Discord calls that fail (5xx, 429, 404, 403, deletions, latency).")  # fmt: skip
@click.option("--replicas", type=click.IntRange(min=1, max=8), default=2, show_default=True)
@click.option(
    "--database-url", default=None, help="Database to soak (default: the configured one). Must be empty."
)
@click.option("--sample-interval", type=click.FloatRange(min=1), default=10.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed of the simulation.")
@click.option("--report-dir", type=click.Path(path_type=Path), default=Path("soak-report"), show_default=True)
@click.option("--burst-factor", type=click.FloatRange(min=1), default=1.0, show_default=True,
              help="During the burst, voters act at this multiple of --events-per-second.")  # fmt: skip
@click.option("--burst-seconds", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Length of the burst at the end of the run (0: no burst).")  # fmt: skip
@click.option("--crash-cycles", type=click.IntRange(min=0, max=1000), default=0, show_default=True,
              help="Replicas as processes; SIGKILL and restart one N times (0: in-process).")  # fmt: skip
@click.option("--memory-bound-mb", type=click.FloatRange(min=1), default=1024.0, show_default=True,
              help="Highest RSS of the soak process allowed (the systemd unit's MemoryMax=1G).")  # fmt: skip
def soak(
    *,
    config_path: Path | None,
    duration: float,
    warmup: float,
    polls: int,
    voters: int,
    events_per_second: float,
    fault_rate: float,
    replicas: int,
    database_url: str | None,
    sample_interval: float,
    seed: int,
    report_dir: Path,
    burst_factor: float,
    burst_seconds: float,
    crash_cycles: int,
    memory_bound_mb: float,
) -> None:
    """Run replicas of the engine against the sandbox under load and faults; write report.json and
    report.png; exit 1 if a vote was lost or invented, a cap exceeded, a transition happened twice, a
    poll was deleted, a replica called Discord inside a retry-after window it had been given or the
    soak's RSS went past --memory-bound-mb."""
    from polly.sandbox.soak import SoakOptions, run_soak, soak_settings

    settings = soak_settings(settings_or_exit(config_path), database_url)
    configure_logging(settings.general.log_level)
    options = SoakOptions(
        duration_seconds=duration, warmup_seconds=warmup, polls=polls, voters=voters,
        events_per_second=events_per_second, fault_rate=fault_rate, replicas=replicas,
        sample_interval_seconds=sample_interval, seed=seed, report_dir=report_dir,
        burst_factor=burst_factor, burst_seconds=burst_seconds, crash_cycles=crash_cycles,
        memory_bound_mb=memory_bound_mb,
    )  # fmt: skip
    try:
        report = asyncio.run(run_soak(settings, options))
    except PollyError as err:
        click.echo(f"polly: {err}", err=True)
        sys.exit(1)
    summary = {k: v for k, v in report.items() if k not in ("samples", "engines", "sandbox", "options")}
    click.echo(json.dumps(summary, indent=2))
    failed = (
        report["lost_votes"]
        or report["double_transitions"]
        or report["deleted_polls"]
        or report["phantom_votes"]
        or report["over_max_choices"]
        or report["calls_inside_retry_after"]
        or not report.get("rss_within_bound", True)
    )
    sys.exit(1 if failed else 0)
