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
    # SQLAlchemy's pool logs every dispose at INFO, and at ERROR with a traceback a reset cut short
    # (a rollback interrupted by a task cancelled at shutdown, or a connection garbage-collected
    # after its loop closed): the connection is discarded, nothing is lost. Keep warnings, drop the
    # expected cancellations, and say the rest in one line.
    # The pool's records come from per-class child loggers (sqlalchemy.pool.impl.QueuePool), which
    # a filter on the parent never sees: the filter sits on the handlers.
    for name in POOL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))
    for handler in logging.getLogger().handlers:
        if pool_record not in handler.filters:
            handler.addFilter(pool_record)


#: The loggers of SQLAlchemy's pool and of polly's pool class, and their children.
POOL_LOGGERS = ("sqlalchemy.pool", "polly.db.pool")


def pool_record(record: logging.LogRecord) -> bool:
    """The connection pool's records as polly logs them: a cancellation is dropped, any other
    exception becomes one warning line naming its type (a driver's message can quote a statement's
    parameters, so it is not repeated). Records of other loggers pass unchanged."""
    if not record.name.startswith(POOL_LOGGERS):
        return True
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError):
        return False
    if exc is not None:
        record.msg = (
            "a pooled connection failed while being reset or closed (%s) and was discarded; nothing is lost"
        )
        record.args = (type(exc).__name__,)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
    return True


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
