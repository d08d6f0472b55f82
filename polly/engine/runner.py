"""``polly run``: settings → database → gateway → engine on the supervisor, until a signal.

Start-up order: the database (a fresh one gets upstream's schema; an existing one must pass the
schema check, else ``polly db upgrade`` is named), telemetry (the ``polly.telemetry`` entry point,
when installed and enabled: polly itself never imports OpenTelemetry), the gateway (discord.py
with ``DISCORD_TOKEN``, or the sandbox), then the engine's loops. SIGINT and SIGTERM stop it
gracefully within ``engine.shutdown_timeout_seconds``, at any moment: during start-up (the
database, the first connection to Discord) they abandon it at once and exit 0. A final refusal by
Discord (a rejected ``DISCORD_TOKEN``, a disallowed intent) stops it the same way, and
:func:`run` raises it. An unreachable Discord is waited for (with backoff) however long it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from polly.config import Settings
from polly.db.engine import Database
from polly.db.models import Poll
from polly.db.schema import check_schema, create_schema
from polly.engine.cache_sync import PollCacheInvalidator
from polly.engine.discord_health import GatewayHealth
from polly.engine.gateway import Gateway
from polly.engine.sandbox import SandboxGateway
from polly.engine.sandbox_restore import continue_sandbox
from polly.engine.sandbox_voters import SandboxVoters
from polly.engine.service import Engine, set_current_engine, utcnow_naive
from polly.errors import ConfigError, PollyError, SchemaError
from polly.outages import OutageLog
from polly.redis import current_redis
from polly.redis_client import RedisClient
from polly.stats import registry as stats_registry
from polly.supervisor import Readiness, Supervisor, ready_at_once

logger = logging.getLogger("polly")
status_logger = logging.getLogger("polly.status")

DEMO_GUILD_ID = 900_000_000_000_000_001
DEMO_CHANNEL_ID = 900_000_000_000_000_002


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``polly run`` was asked for."""

    sandbox: bool = False
    duration_seconds: float | None = None
    seed_polls: int = 3
    voters: int = 40
    events_per_second: float = 4.0


def prepare_database(database: Database) -> None:
    """Create upstream's schema on a fresh database; refuse one that cannot be used as it is."""
    url = database.settings.url.get_secret_value()
    if url.startswith("sqlite") and ":memory:" not in url and "///" in url:
        Path(url.split("///", 1)[1].split("?", 1)[0]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    report = check_schema(database.sync_engine)
    if report.detected_version is None:
        create_schema(database.sync_engine)
        logger.info("created upstream's schema in %s", database.redacted_url)
        return
    if not report.usable:
        findings = "; ".join(report.lines()[2:])
        msg = f"the database {database.redacted_url} cannot be used as it is ({findings}); "
        msg += "run `polly db upgrade`"
        raise SchemaError(msg)
    if not report.up_to_date:
        logger.warning(
            "database %s lacks polly's indexes; `polly db upgrade` adds them", database.redacted_url
        )


async def seed_demo_polls(database: Database, count: int) -> int:
    """A few polls for the sandbox, written only when no poll is scheduled or active (an empty
    database, or one whose polls have all closed). Returns how many."""
    async with database.async_session_scope() as session:
        live = select(func.count()).select_from(Poll).where(Poll.status.in_(("scheduled", "active")))
        if (await session.scalar(live)) or count <= 0:
            return 0
        now = utcnow_naive()
        kinds: list[dict[str, Any]] = [
            {"name": "Lunch", "options": ["Pizza", "Tacos", "Salad"], "multiple_choice": False},
            {"name": "Team games", "options": ["Chess", "Go", "Bridge", "Poker"], "multiple_choice": True,
             "max_choices": 2},
            {"name": "Secret ballot", "options": ["Yes", "No"], "anonymous": True},
        ]  # fmt: skip
        for i in range(count):
            kind = kinds[i % len(kinds)]
            poll = Poll(
                question=f"Sandbox poll {i + 1}: what do you choose?",
                server_id=str(DEMO_GUILD_ID),
                channel_id=str(DEMO_CHANNEL_ID),
                creator_id="0",
                open_time=now,
                close_time=now + timedelta(minutes=10 + 5 * i),
                open_immediately=True,
                timezone="UTC",
                status="scheduled",
                **{k: v for k, v in kind.items() if k != "options"},
            )
            poll.options = kind["options"]
            session.add(poll)
    return count


def _start_telemetry(settings: Settings, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """Start every installed ``polly.telemetry`` plugin; a failing plugin is logged, never fatal.

    Given the loop, a plugin schedules its loop-side work (the gc census) on it with loop callbacks,
    not tasks; :meth:`shutdown` on the handle stops it.
    """
    if not settings.general.monitoring.enabled:
        return []
    handles = []
    for ep in entry_points(group="polly.telemetry"):
        try:
            handles.append(ep.load()(settings, loop=loop))
        except Exception:
            logger.exception("telemetry plugin %s failed to start; running without it", ep.name)
    return handles


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


def build_gateway(settings: Settings, options: RunOptions) -> Gateway:
    """The sandbox, or discord.py with ``DISCORD_TOKEN`` (a clear error without one)."""
    if options.sandbox:
        rng = random.Random()  # noqa: S311 - simulation, not cryptography
        return SandboxGateway(rng=rng, max_events=settings.engine.vote_queue_max)
    token = settings.discord.token
    if token is None or not token.get_secret_value().strip():
        msg = "DISCORD_TOKEN is not set: set it to run against Discord, or use `polly run --sandbox`"
        raise ConfigError([msg])  # a settings problem: `polly run` exits 2
    from polly.engine.discord_adapter import DiscordGateway

    return DiscordGateway(
        token,
        api_base=settings.discord.api_base,
        gateway_url=settings.discord.gateway_url,
        max_events=settings.engine.vote_queue_max,
    )


def _nothing() -> None:
    pass


def _report_sandbox_health() -> Callable[[], None]:
    """The sandbox's gateway in the stats registry (kind ``gateway``, name ``sandbox``): connected from
    the start, with no network round trip, so ``polly run --sandbox`` reports the same gateway
    metrics as a run against Discord. Returns the unregister function."""
    health = GatewayHealth("sandbox", latency=lambda: 0.0)
    health.connected(resumed=False)
    return stats_registry.register("gateway", "sandbox", health.snapshot)


async def run(settings: Settings, options: RunOptions, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set, a signal arrives, or ``options.duration_seconds`` pass.

    A missing token fails before anything is opened; whatever was opened is released on the way out,
    whichever step failed.
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
    gateway = build_gateway(settings, options)
    unregister_health = _report_sandbox_health() if isinstance(gateway, SandboxGateway) else _nothing
    if not options.sandbox:
        from polly.engine.discord_adapter import DiscordGateway

        if isinstance(gateway, DiscordGateway):
            gateway.on_fatal = stopper.refused
    database = Database(settings.database)
    redis: RedisClient | None = None
    telemetry: list[Any] = []
    engine: Engine | None = None
    try:
        await asyncio.to_thread(prepare_database, database)
        database.open()
        redis = await _open_redis(settings)
        telemetry = _start_telemetry(settings, loop)
        invalidate = PollCacheInvalidator(redis) if redis is not None else None
        engine = Engine(settings, database, gateway, on_poll_changed=invalidate)
        set_current_engine(engine)
        await _serve(engine, database, gateway, options, stopper)
    except asyncio.CancelledError:
        if not stopper.cancelled or main is None:
            raise
        main.uncancel()
        if stopper.fatal is None:
            logger.info("stopped during start-up")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        unregister_health()
        set_current_engine(None)
        if engine is not None:
            engine.close()
        for handle in telemetry:
            with contextlib.suppress(Exception):
                handle.shutdown()
        if redis is not None:
            await redis.disconnect()
        await database.dispose()
    if stopper.fatal is not None:
        raise stopper.fatal


async def _serve(
    engine: Engine, database: Database, gateway: Gateway, options: RunOptions, stopper: _Stopper
) -> None:
    """The supervised part of :func:`run`: every loop, until ``stop`` or the duration."""
    cfg = engine.settings.engine
    async with Supervisor(name="polly", shutdown_timeout_seconds=cfg.shutdown_timeout_seconds) as sup:
        if isinstance(gateway, SandboxGateway):
            adopted = await continue_sandbox(database, gateway)
            if adopted:
                logger.info("sandbox: continued %d poll message(s) of an earlier run", adopted)
            seeded = await seed_demo_polls(database, options.seed_polls)
            if seeded:
                logger.info("sandbox: seeded %d demo poll(s)", seeded)
        engine.start(sup)
        connector = current_redis()
        from polly.web.serve import serve_web  # the dashboard's libraries load only when it is served

        serve_web(engine.settings, database, connector, sup)
        if connector is not None:
            sup.start_loop("redis-probe", ready_at_once(connector.probe_loop))
        sup.start_loop("db-slow-checkouts", ready_at_once(database.watch_slow_checkouts))
        if isinstance(gateway, SandboxGateway) and options.voters > 0 and options.events_per_second > 0:
            voters = SandboxVoters(
                gateway,
                voters=options.voters,
                events_per_second=options.events_per_second,
                rng=random.Random(),  # noqa: S311 - simulation, not cryptography
            )
            sup.start_loop("sandbox-voters", ready_at_once(voters.run))
        sup.start_loop(
            "status", lambda ready: _status_loop(engine, database, cfg.status_interval_seconds, ready)
        )
        # Discord may be unreachable for a while: that is waited out (and said once by the
        # gateway); the rest of start-up is then bounded.
        await gateway.wait_until_ready()
        await sup.wait_ready(cfg.startup_timeout_seconds)
        stopper.starting = False
        if stopper.stop.is_set():
            logger.info("stopping")
            await sup.shutdown(cfg.shutdown_timeout_seconds)
            return
        logger.info("polly is running (replica %s); Ctrl-C stops it", engine.replica)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopper.stop.wait(), options.duration_seconds)
        logger.info("stopping")
        stuck = await sup.shutdown(cfg.shutdown_timeout_seconds)
        if stuck:
            logger.error("did not stop in time: %s", ", ".join(stuck))


async def _open_redis(settings: Settings) -> RedisClient | None:
    """The process's Redis client when Redis is enabled; unreachable is fine (the breaker opens and the
    probe closes it later), a wrong password or db number stops start-up."""
    if not settings.redis.enabled:
        return None
    client = RedisClient(settings.redis)
    if await client.connect():
        logger.info("redis: connected to %s", settings.redis.effective_url())
    else:
        logger.warning(
            "redis: %s unreachable; running on fallbacks until it answers", settings.redis.effective_url()
        )
    return client
