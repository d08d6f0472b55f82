"""Serving the dashboard with uvicorn inside polly's event loop, as one supervised loop.

:func:`serve_web` binds ``web.host:web.port`` at once (a port in use is a clear start-up error, not
a retry storm), then runs uvicorn on that socket under the :class:`~polly.supervisor.Supervisor`:
it is ready once uvicorn serves, restarted with backoff if it fails, and stopped gracefully when the
supervisor shuts down. uvicorn never installs signal handlers here (polly's own handle SIGINT and
SIGTERM) and writes no access log (query strings carry OAuth codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Generator
from typing import Any

from polly.config import Settings
from polly.db.engine import Database
from polly.errors import PollyError
from polly.supervisor import Readiness, Supervisor

logger = logging.getLogger("polly.web")


def _server(config: Any, ready: Readiness) -> Any:
    """uvicorn without its signal handlers, reporting readiness once it listens."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            ready.ready()

    return _Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or :class:`PollyError` naming the address and why."""
    try:
        sock = socket.create_server((host, port), reuse_port=False, backlog=128)
    except OSError as err:
        msg = (
            f"the dashboard cannot listen on {host}:{port} ({os.strerror(err.errno) if err.errno else err}); "
        )
        msg += "set web.port, or web.enabled false"
        raise PollyError(msg) from None
    sock.set_inheritable(True)
    return sock


UPSTREAM_PLACEHOLDER_KEY = "your-secret-key-change-this"


def missing_settings(settings: Settings) -> list[str]:
    """The variables sign-in needs that are unset (or upstream's placeholder key)."""
    web = settings.web
    missing = [
        name
        for name, value in (
            ("DISCORD_CLIENT_ID", web.client_id),
            ("DISCORD_CLIENT_SECRET", web.client_secret),
            ("SECRET_KEY", web.secret_key),
        )
        if value is None or not str(value if isinstance(value, str) else value.get_secret_value()).strip()
    ]
    if web.secret_key is not None and web.secret_key.get_secret_value() == UPSTREAM_PLACEHOLDER_KEY:
        missing.append("SECRET_KEY (upstream's placeholder value is public)")
    return missing


def serve_web(settings: Settings, database: Database, redis: Any, supervisor: Supervisor) -> bool:
    """Start the dashboard on ``supervisor`` when it is enabled and sign-in is configured.

    Returns whether it started; a dashboard that is enabled but lacks ``DISCORD_CLIENT_ID``,
    ``DISCORD_CLIENT_SECRET`` or ``SECRET_KEY`` is said once and left off.
    """
    web = settings.web
    if not web.enabled:
        return False
    missing = missing_settings(settings)
    if missing:
        logger.info("dashboard off: %s not set", ", ".join(missing))
        return False
    first = [bind(web.host, web.port)]

    # The dashboard's libraries load only when it is served (polly run without it starts lighter).
    import uvicorn

    from polly.web.app import create_app

    async def run(ready: Readiness) -> None:
        sock = first.pop() if first else bind(web.host, web.port)
        app = create_app(settings, database, redis)
        config = uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        server = _server(config, ready)
        try:
            logger.info("dashboard on http://%s:%d", web.host, sock.getsockname()[1])
            await server.serve(sockets=[sock])
        except asyncio.CancelledError:
            server.should_exit = True
            if server.started:
                await server.shutdown(sockets=[sock])
            raise
        finally:
            sock.close()
            await app.state.web.api.aclose()

    supervisor.start_loop("web", run)
    return True
