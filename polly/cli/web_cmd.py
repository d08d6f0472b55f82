"""``polly web``: the dashboard alone, for setups that run the engine elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click

from polly.cli.main import config_option, settings_or_exit
from polly.errors import PollyError


async def _serve(settings: object) -> None:
    from polly.app import open_app
    from polly.config import Settings
    from polly.supervisor import Supervisor
    from polly.web.serve import missing_settings

    assert isinstance(settings, Settings)
    missing = missing_settings(settings)
    if missing:
        msg = f"the dashboard needs {', '.join(missing)}: set them (see docs/dashboard.md)"
        raise PollyError(msg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # the process's one database and Redis pool (the dashboard's sessions live there), and telemetry
    async with open_app(settings, telemetry=True) as app:
        timeout = settings.engine.shutdown_timeout_seconds
        async with Supervisor(name="polly-web", shutdown_timeout_seconds=timeout) as sup:
            app.supervise(sup, web=True)
            await sup.wait_ready(settings.engine.startup_timeout_seconds)
            await stop.wait()
            await sup.shutdown(timeout)


@click.command()
@config_option
def web(*, config_path: Path | None) -> None:
    """Serve the dashboard alone (web.host:web.port, default 0.0.0.0:8000) until SIGINT or SIGTERM."""
    from polly.cli.run_cmd import configure_logging

    settings = settings_or_exit(config_path)
    configure_logging(settings.general.log_level)
    try:
        asyncio.run(_serve(settings))
    except PollyError as err:
        click.echo(f"polly: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
