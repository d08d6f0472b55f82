"""``polly run``: the poll engine."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from polly.cli.main import config_option, settings_or_exit
from polly.errors import ConfigError, PollyError
from polly.outages import install_throttles


def configure_logging(level: str) -> None:
    """One stream handler on the root logger, with times in UTC."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("discord").setLevel(max(logging.INFO, getattr(logging, level)))
    # SQLAlchemy's pool logs every dispose at INFO, and at ERROR a rollback cut short by a task
    # cancelled at shutdown (the connection is invalidated, nothing is lost): keep warnings only,
    # without the expected cancellations.
    for name in ("sqlalchemy.pool", "polly.db.pool"):
        pool_logger = logging.getLogger(name)
        pool_logger.setLevel(max(logging.WARNING, getattr(logging, level)))
        pool_logger.addFilter(_not_a_cancellation)


def _not_a_cancellation(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


@click.command()
@config_option
@click.option("--sandbox", is_flag=True, help="Use the in-process Discord stand-in instead of Discord.")
@click.option("--duration", type=click.FloatRange(min=1), default=None, help="Stop after this many seconds.")
@click.option("--seed-polls", type=click.IntRange(min=0), default=3, show_default=True,
              help="Sandbox: demo polls to create in an empty database.")  # fmt: skip
@click.option(
    "--voters", type=click.IntRange(min=0), default=40, show_default=True, help="Sandbox: simulated voters."
)
@click.option("--events-per-second", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Sandbox: reaction events per second from the simulated voters.")  # fmt: skip
def run(
    *,
    config_path: Path | None,
    sandbox: bool,
    duration: float | None,
    seed_polls: int,
    voters: int,
    events_per_second: float,
) -> None:
    """Run the poll engine until SIGINT or SIGTERM.

    With --sandbox it runs on embedded defaults: the configured database (SQLite ./db/polly.db
    unless set), no Redis unless REDIS_URL is set, and a simulated Discord seeded with a few polls
    and voters.
    """
    from polly.engine.runner import RunOptions
    from polly.engine.runner import run as run_engine

    settings = settings_or_exit(config_path)
    if sandbox and settings.redis.url is None:
        # Embedded defaults: no Redis unless a REDIS_URL (or redis.url) asks for one.
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"enabled": False})})
    configure_logging(settings.general.log_level)
    options = RunOptions(
        sandbox=sandbox,
        duration_seconds=duration,
        seed_polls=seed_polls,
        voters=voters,
        events_per_second=events_per_second,
    )
    # per-event warnings repeat during an outage, per-row ones every tick: one line per cause per window
    remove_throttles = install_throttles()
    try:
        asyncio.run(run_engine(settings, options))
    except ConfigError as err:  # e.g. no DISCORD_TOKEN: a settings problem, like every other
        click.echo(f"polly: {err}", err=True)
        sys.exit(2)
    except PollyError as err:
        click.echo(f"polly: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        sys.exit(130)
    finally:
        remove_throttles()
