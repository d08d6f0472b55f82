"""The one place a running polly is assembled from its settings.

``polly run`` (against Discord or the sandbox), the soak's replicas and ``polly web`` start with
:func:`open_app`, the ``polly poll`` commands with :func:`open_database`, so a process holds
exactly one of each resource:

* the :class:`~polly.db.engine.Database` (one sync and one async pool), prepared (a fresh database
  gets upstream's schema; an unusable one is refused, naming ``polly db upgrade``) and made the
  process's database (:mod:`polly.db.current`), so upstream-compatible callers
  (``polly.database.get_db_session()``) use the same pool instead of opening a second one;
* the Redis connector (:mod:`polly.redis`, one pool), when Redis is enabled; unreachable is fine
  (the breaker opens and the probe closes it), a wrong password or db number stops start-up;
* telemetry (the ``polly.telemetry`` entry points; polly never imports OpenTelemetry), whose
  loop-side work runs as a supervised loop, awaited at shutdown like every other.

:func:`open_app` opens them in that order and releases them in reverse, whichever step failed.
:meth:`App.supervise` starts the process's shared loops on a supervisor (the Redis probe, the slow
checkout watch, telemetry, and the dashboard when ``web.enabled``): the engine's own loops come
from :meth:`polly.engine.service.Engine.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from polly.config import Settings
from polly.db import current as current_database
from polly.db.engine import Database
from polly.db.schema import check_schema, create_schema
from polly.errors import SchemaError
from polly.redis import RedisConnector, close_redis, open_redis
from polly.supervisor import Supervisor, ready_at_once

logger = logging.getLogger("polly")
TELEMETRY_GROUP = "polly.telemetry"


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


@dataclass
class App:
    """A running polly's resources: see the module docstring."""

    settings: Settings
    database: Database
    redis: RedisConnector | None
    telemetry: list[Any] = field(default_factory=list)

    def supervise(self, supervisor: Supervisor, *, web: bool | None = None) -> None:
        """Start the process's shared loops on ``supervisor``; ``web`` overrides ``web.enabled``."""
        for i, handle in enumerate(self.telemetry):
            run = getattr(handle, "run", None)
            if callable(run):
                supervisor.start_loop("telemetry" if i == 0 else f"telemetry-{i}", ready_at_once(run))
        if self.redis is not None:
            supervisor.start_loop("redis-probe", ready_at_once(self.redis.probe_loop))
        supervisor.start_loop("db-slow-checkouts", ready_at_once(self.database.watch_slow_checkouts))
        settings = self.settings
        if web is not None and web != settings.web.enabled:
            settings = settings.model_copy(update={"web": settings.web.model_copy(update={"enabled": web})})
        from polly.web.serve import serve_web  # the dashboard's libraries load only when it is served

        serve_web(settings, self.database, self.redis, supervisor)


@contextlib.asynccontextmanager
async def open_app(
    settings: Settings, *, redis: bool = True, telemetry: bool = False, prepare: bool = True
) -> AsyncIterator[App]:
    """Open the process's resources (see the module docstring); release them on the way out.

    ``redis=False`` leaves Redis closed whatever the settings say (the poll commands); ``telemetry``
    starts the installed telemetry plugins when ``general.monitoring.enabled``.
    """
    database = current_database.configure_database(settings.database)
    handles: list[Any] = []
    try:
        if prepare:
            await asyncio.to_thread(prepare_database, database)
        database.open()
        connector = await open_redis(settings.redis) if redis and settings.redis.enabled else None
        if telemetry:
            handles = start_telemetry(settings)
        yield App(settings, database, connector, handles)
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.shutdown()
        await close_redis()
        await current_database.dispose_database()


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """The process's one database for a short synchronous command (``polly poll ...``): made the
    process's, never prepared (a command does not create a schema), disposed on the way out. In a
    process that already runs polly on the same database, the command uses that one and leaves it."""
    running = current_database.configured()
    if running is not None and running.settings == settings.database:
        yield running
        return
    database = current_database.configure_database(settings.database)
    try:
        yield database
    finally:
        current_database.dispose_database_sync()


def start_telemetry(settings: Settings, plugins: Callable[[], Any] | None = None) -> list[Any]:
    """Every installed ``polly.telemetry`` plugin, started with ``run_by_owner=True`` (the app awaits
    its ``run()`` on the supervisor); a failing plugin is logged, never fatal."""
    if not settings.general.monitoring.enabled:
        return []
    handles = []
    for ep in (plugins or (lambda: entry_points(group=TELEMETRY_GROUP)))():
        try:
            handles.append(ep.load()(settings, run_by_owner=True))
        except Exception:
            logger.exception("telemetry plugin %s failed to start; running without it", ep.name)
    return handles
