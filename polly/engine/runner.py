"""``polly run``: settings → database → gateway → engine on the supervisor, until a signal.

Start-up order: the gateway's parts (discord.py with ``DISCORD_TOKEN``, or the sandbox; a missing
token fails before anything opens), the process's resources from :func:`polly.app.open_app` (the
database, checked or created, Redis, telemetry), then the engine's loops and the app's shared ones
(Redis probe, slow checkouts, telemetry, the dashboard) on one supervisor. SIGINT and SIGTERM stop it
gracefully within ``engine.shutdown_timeout_seconds``, at any moment: during start-up (the
database, the first connection to Discord) they abandon it at once and exit 0. A final refusal by
Discord (a rejected ``DISCORD_TOKEN``, a disallowed intent) stops it the same way, and
:func:`run` raises it. An unreachable Discord is waited for (with backoff) however long it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from polly.app import App, open_app
from polly.config import Settings
from polly.db.engine import Database
from polly.db.models import Poll
from polly.engine.cache_sync import PollCacheInvalidator
from polly.engine.discord_health import GatewayHealth
from polly.engine.gateway import Gateway, GatewayParts
from polly.engine.service import Engine, set_current_engine
from polly.errors import ConfigError, PollyError
from polly.outages import OutageLog
from polly.supervisor import Readiness, Supervisor

logger = logging.getLogger("polly")
status_logger = logging.getLogger("polly.status")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``polly run`` was asked for."""

    sandbox: bool = False
    duration_seconds: float | None = None
    seed_polls: int = 3
    voters: int = 40
    events_per_second: float = 4.0


class _Stopper:
    """Stops :func:`run` from a signal or a final gateway failure.

    Nothing in start-up waits for ``stop``, so while ``starting`` a request cancels the main task
    (the ``finally`` blocks release what was opened); once running it sets ``stop``.
    """

    def __init__(self, stop: asyncio.Event, main: asyncio.Task[Any] | None) -> None:
        self.stop = stop
        self.starting = True
        self.cancelled = False
        self.fatal: PollyError | None = None
        self._main = main

    def request(self) -> None:
        self.stop.set()
        if self.starting and self._main is not None and not self.cancelled:
            self.cancelled = True
            self._main.cancel()

    def refused(self, err: PollyError) -> None:
        if self.fatal is None:
            self.fatal = err
        self.request()


def _gateway_status(gateway: Gateway) -> str:
    health = getattr(gateway, "health", None)
    return health.status() if isinstance(health, GatewayHealth) else "gateway sandbox"


def _status_line(
    engine: Engine, database: Database, counts: dict[str, int], rate: float, db_down_for: float | None = None
) -> str:
    pools = database.engine_stats()
    used = sum(p.used for p in pools)
    limit = sum(p.max_connections for p in pools)
    s = engine.stats()
    rss = psutil.Process().memory_info().rss / 1_048_576
    states = " ".join(f"{k}={counts.get(k, 0)}" for k in ("scheduled", "active", "closed"))
    if db_down_for is not None:  # the counts are the last ones read
        states += f" (database unavailable for {db_down_for:.0f} s)"
    return (
        f"polls {states} | votes recorded={s.votes_recorded} | events/s={rate:.1f} "
        f"(queued {s.event_queue_depth}, dropped {s.events_dropped}) | rss={rss:.1f} MB "
        f"| db pool used={used}/{limit} | {_gateway_status(engine.gateway)}"
    )


async def _status_loop(engine: Engine, database: Database, interval: float, ready: Readiness) -> None:
    ready.ready()
    last_events, last_time = engine.votes.stats.events, time.monotonic()
    outages, counts = OutageLog(status_logger), dict[str, int]()
    while True:
        await asyncio.sleep(interval)
        counts = await _status_counts(database, outages) or counts
        now, events = time.monotonic(), engine.votes.stats.events
        rate = (events - last_events) / max(now - last_time, 1e-9)
        last_events, last_time = events, now
        down = outages.down_for(STATUS_DB_CAUSE)
        status_logger.info("%s", _status_line(engine, database, counts, rate, down))


STATUS_DB_CAUSE = "database (status line)"


async def _status_counts(database: Database, outages: OutageLog) -> dict[str, int] | None:
    """Polls per status, or ``None`` while the database cannot answer: the status line goes on during
    an outage, whose start, summary and end ``outages`` reports."""
    try:
        async with database.async_session_scope() as session:
            rows = await session.execute(select(Poll.status, func.count()).group_by(Poll.status))
            counts = {str(status): int(n) for status, n in rows}
    except (PollyError, SQLAlchemyError, OSError) as err:
        outages.failed(STATUS_DB_CAUSE, err)
        return None
    outages.succeeded(STATUS_DB_CAUSE)
    return counts


def build_gateway(
    settings: Settings, options: RunOptions, on_fatal: Callable[[PollyError], None] | None = None
) -> GatewayParts:
    """The sandbox (with its demo polls and voters), or discord.py with ``DISCORD_TOKEN`` (a clear
    error without one); ``on_fatal`` hears Discord's final refusals."""
    if options.sandbox:
        from polly.sandbox.run import sandbox_parts

        return sandbox_parts(
            settings,
            seed_polls=options.seed_polls,
            voters=options.voters,
            events_per_second=options.events_per_second,
        )
    token = settings.discord.token
    if token is None or not token.get_secret_value().strip():
        msg = "DISCORD_TOKEN is not set: set it to run against Discord, or use `polly run --sandbox`"
        raise ConfigError([msg])  # a settings problem: `polly run` exits 2
    from polly.engine.discord_adapter import DiscordGateway

    gateway = DiscordGateway(
        token,
        api_base=settings.discord.api_base,
        gateway_url=settings.discord.gateway_url,
        max_events=settings.engine.vote_queue_max,
    )
    if on_fatal is not None:
        gateway.on_fatal = on_fatal
    return GatewayParts(gateway)


async def run(settings: Settings, options: RunOptions, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set, a signal arrives, or ``options.duration_seconds`` pass.

    A missing token fails before anything is opened; whatever was opened is released on the way out
    (:func:`polly.app.open_app`), whichever step failed.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    main = asyncio.current_task()
    stopper = _Stopper(stop, main)
    signals: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopper.request)
            signals.append(sig)
    parts = build_gateway(settings, options, stopper.refused)
    engine: Engine | None = None
    try:
        async with open_app(settings, telemetry=True) as app:
            invalidate = PollCacheInvalidator(app.redis) if app.redis is not None else None
            engine = Engine(settings, app.database, parts.gateway, on_poll_changed=invalidate)
            set_current_engine(engine)
            try:
                await _serve(app, engine, parts, options, stopper)
            finally:
                set_current_engine(None)
                engine.close()
    except asyncio.CancelledError:
        if not stopper.cancelled or main is None:
            raise
        main.uncancel()
        if stopper.fatal is None:
            logger.info("stopped during start-up")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        parts.close()
    if stopper.fatal is not None:
        raise stopper.fatal


async def _serve(
    app: App, engine: Engine, parts: GatewayParts, options: RunOptions, stopper: _Stopper
) -> None:
    """The supervised part of :func:`run`: every loop, until ``stop`` or the duration."""
    cfg = engine.settings.engine
    async with Supervisor(name="polly", shutdown_timeout_seconds=cfg.shutdown_timeout_seconds) as sup:
        await parts.prepare(app.database)
        engine.start(sup)
        app.supervise(sup)
        for name, fn in parts.loops:
            sup.start_loop(name, fn)
        sup.start_loop(
            "status", lambda ready: _status_loop(engine, app.database, cfg.status_interval_seconds, ready)
        )
        # Discord may be unreachable for a while: that is waited out (and said once by the
        # gateway); the rest of start-up is then bounded.
        await parts.gateway.wait_until_ready()
        await sup.wait_ready(cfg.startup_timeout_seconds)
        stopper.starting = False
        if stopper.stop.is_set():
            logger.info("stopping")
            await sup.shutdown(cfg.shutdown_timeout_seconds)
            return
        logger.info("polly is running (replica %s); Ctrl-C stops it", engine.replica)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.duration_seconds):
                await stopper.stop.wait()
        logger.info("stopping")
        stuck = await sup.shutdown(cfg.shutdown_timeout_seconds)
        if stuck:
            logger.error("did not stop in time: %s", ", ".join(stuck))
