"""Pooled engines and the only two ways to get a session: :meth:`Database.session_scope` and
:meth:`Database.async_session_scope`.

A :class:`Database` is built from :class:`~polly.config.DatabaseSettings` and holds at most one async
engine (the engine's loops) and one sync engine (compatibility callers), each created on first use
with explicit limits: ``pool_size``, ``max_overflow``, ``pool_timeout_seconds``,
``pool_recycle_seconds``, ``pool_pre_ping``. Per dialect:

* **SQLite**: a bounded queue pool over the file (WAL lets readers run beside the one writer, so a
  few connections help; ``busy_timeout`` makes a writer wait for the lock instead of failing), and
  ``PRAGMA journal_mode=WAL``, ``busy_timeout``, ``foreign_keys=ON`` on every new connection. An
  in-memory database uses one shared connection (``StaticPool``) per engine.
* **PostgreSQL**: psycopg 3 for both engines.
* **MySQL / MariaDB**: pymysql (sync) and aiomysql (async), ``charset=utf8mb4`` unless the URL sets one
  (the option emojis need four bytes).

Pool exhaustion raises :class:`~polly.errors.PoolExhaustedError`; an unreachable database at start-up
raises :class:`~polly.errors.DatabaseUnavailableError` naming the redacted URL (see
:meth:`Database.check_connection`). Failures later are handled by ``pool_pre_ping`` (a dead pooled
connection is replaced at checkout) plus :func:`polly.db.retry.retry_with_backoff` for reads that can
simply be repeated (:meth:`Database.read_with_retry`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from polly import stats
from polly.config import DatabaseSettings
from polly.config_urls import mask, redact_url
from polly.db.pool import MonitoredAsyncQueuePool, MonitoredQueuePool, PoolMonitor
from polly.db.retry import retry_with_backoff
from polly.db.urls import Role, backend_of, driver_url, is_sqlite_memory, parse_url, pool_name
from polly.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a driver may take to open one TCP connection (PostgreSQL, MySQL); bounded well under
#: the pool timeout so one unreachable server does not hold a checkout for long.
CONNECT_TIMEOUT_SECONDS = 10


def describe_connect_error(err: BaseException, password: str | None) -> str:
    """The first line of a driver error with the password (if any) masked."""
    root = getattr(err, "orig", None) or err
    line = (str(root).strip().splitlines() or [""])[0]
    return f"{type(root).__name__}: {mask(line, [password])}"


class Database:
    """One database: a lazily built sync and async engine, scoped sessions and pool snapshots.

    Thread-safe to share. ``open()`` registers the pools with :data:`polly.stats.registry` (kind
    ``db_pool``); it runs implicitly when the first engine is built; :meth:`dispose` unregisters.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        registry: stats.StatsRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        raw_url = settings.url.get_secret_value()
        self._url = parse_url(raw_url)
        self._async_source = (
            parse_url(settings.async_url.get_secret_value()) if settings.async_url else self._url
        )
        self.backend = backend_of(self._url)
        backend_of(self._async_source)
        self.redacted_url = redact_url(raw_url)
        self._registry = registry if registry is not None else stats.registry
        self._clock = clock
        self._lock = threading.Lock()
        self._sync_engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._session_factory: sessionmaker[Session] | None = None
        self._async_session_factory: async_sessionmaker[AsyncSession] | None = None
        self._monitors: dict[Role, tuple[PoolMonitor, Engine]] = {}
        self._unregister: Callable[[], None] | None = None
        self._provider_name = f"polly.db:{pool_name(self._url, 'sync').split(':', 1)[1]}#{id(self):x}"

    def __repr__(self) -> str:
        return f"<Database {self.redacted_url}>"

    # --- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Register this database's pools with the stats registry (idempotent)."""
        with self._lock:
            if self._unregister is None:
                self._unregister = self._registry.register("db_pool", self._provider_name, self.engine_stats)

    async def dispose(self) -> None:
        """Close every pooled connection of both engines and unregister the stats provider."""
        with self._lock:
            async_engine, self._async_engine, self._async_session_factory = self._async_engine, None, None
        if async_engine is not None:
            await async_engine.dispose()
        self.dispose_sync()

    def dispose_sync(self) -> None:
        """Like :meth:`dispose` for the sync engine only (for callers without an event loop).

        An async engine that exists is left to :meth:`dispose`, and the provider stays registered.
        """
        with self._lock:
            engine, self._sync_engine, self._session_factory = self._sync_engine, None, None
            self._monitors.pop("sync", None)
            unregister = None
            if self._async_engine is None:
                self._monitors.clear()
                unregister, self._unregister = self._unregister, None
        if engine is not None:
            engine.dispose()
        if unregister is not None:
            unregister()

    # --- engines -----------------------------------------------------------------------------
    @property
    def sync_engine(self) -> Engine:
        """The sync engine, built on first use."""
        engine = self._sync_engine
        if engine is None:
            self.open()
            with self._lock:
                if self._sync_engine is None:
                    self._sync_engine = self._build("sync")
                    self._session_factory = sessionmaker(self._sync_engine, expire_on_commit=False)
                engine = self._sync_engine
        return engine

    @property
    def async_engine(self) -> AsyncEngine:
        """The async engine, built on first use."""
        engine = self._async_engine
        if engine is None:
            self.open()
            with self._lock:
                if self._async_engine is None:
                    built = create_async_engine(
                        driver_url(self._async_source, "async"), **self._engine_kwargs("async")
                    )
                    self._instrument(built.sync_engine, "async", self._async_source)
                    self._async_engine = built
                    self._async_session_factory = async_sessionmaker(built, expire_on_commit=False)
                engine = self._async_engine
        return engine

    def _build(self, role: Role) -> Engine:
        engine = create_engine(driver_url(self._url, role), **self._engine_kwargs(role))
        self._instrument(engine, role, self._url)
        return engine

    def _engine_kwargs(self, role: Role) -> dict[str, Any]:
        s = self.settings
        url = self._url if role == "sync" else self._async_source
        kwargs: dict[str, Any] = {"echo": s.echo, "pool_pre_ping": s.pool_pre_ping}
        connect_args: dict[str, Any] = {}
        if self.backend == "sqlite":
            connect_args["timeout"] = s.sqlite_busy_timeout_ms / 1000
            if role == "sync":
                connect_args["check_same_thread"] = (
                    False  # the pool hands a connection to one thread at a time
                )
            if is_sqlite_memory(url):
                kwargs["poolclass"] = StaticPool
                kwargs["connect_args"] = connect_args
                return kwargs
        else:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
            if self.backend in ("mysql", "mariadb") and "charset" not in url.query:
                connect_args["charset"] = "utf8mb4"
        kwargs.update(
            poolclass=MonitoredQueuePool if role == "sync" else MonitoredAsyncQueuePool,
            pool_size=s.pool_size,
            max_overflow=s.max_overflow,
            pool_timeout=s.pool_timeout_seconds,
            pool_recycle=s.pool_recycle_seconds,
            connect_args=connect_args,
        )
        return kwargs

    def _instrument(self, engine: Engine, role: Role, url: URL) -> None:
        monitor = PoolMonitor(
            name=pool_name(url, role),
            system=self.backend,
            slow_checkout_seconds=self.settings.slow_checkout_seconds,
            registry=self._registry,
            clock=self._clock,
        )
        monitor.attach(engine)
        if self.backend == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas(self.settings.sqlite_busy_timeout_ms))
        elif self.backend in ("mysql", "mariadb"):

            def _system(_conn: Any, _rec: Any) -> None:
                monitor.system = "mariadb" if engine.dialect.is_mariadb else "mysql"  # type: ignore[attr-defined]

            event.listen(engine.pool, "connect", _system)
        self._monitors[role] = (monitor, engine)

    # --- sessions ----------------------------------------------------------------------------
    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A sync session: commit on success, roll back on any error, always return the connection."""
        self.sync_engine  # noqa: B018 - builds the engine and the factory
        assert self._session_factory is not None
        session = self._session_factory()
        try:
            yield session
            session.commit()
        except BaseException:
            _quietly(session.rollback, "rollback")
            raise
        finally:
            _quietly(session.close, "close")

    @asynccontextmanager
    async def async_session_scope(self) -> AsyncIterator[AsyncSession]:
        """An async session: commit on success, roll back on error, return the connection always.

        On cancellation (or any other ``BaseException``) the connection is invalidated rather than
        reused, since a query may have been interrupted mid-protocol; its pool slot is freed either
        way. Clean-up runs shielded, so a second cancellation cannot interrupt it.
        """
        self.async_engine  # noqa: B018 - builds the engine and the factory
        assert self._async_session_factory is not None
        session = self._async_session_factory()
        try:
            yield session
            await session.commit()
        except Exception:
            await _shielded(_rollback_and_close(session))
            raise
        except BaseException:
            await _shielded(_invalidate(session))
            raise
        else:
            await _shielded(session.close())

    # --- checks ------------------------------------------------------------------------------
    async def check_connection(self) -> None:
        """Run ``SELECT 1`` through the async engine; unreachable raises :class:`DatabaseUnavailableError`."""
        try:
            async with self.async_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as err:
            raise self._unavailable(err) from err

    def check_connection_sync(self) -> None:
        """:meth:`check_connection` through the sync engine."""
        try:
            with self.sync_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as err:
            raise self._unavailable(err) from err

    def _unavailable(self, err: BaseException) -> DatabaseUnavailableError:
        detail = describe_connect_error(err, self._url.password)
        return DatabaseUnavailableError(f"cannot connect to the database at {self.redacted_url}: {detail}")

    async def read_with_retry(
        self,
        read: Callable[[AsyncSession], Awaitable[T]],
        *,
        what: str = "database read",
        max_attempts: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run ``read`` in its own scope, retrying connection failures with capped exponential backoff.

        For idempotent reads only (the scheduler's due-poll queries): a write might have committed
        before the connection dropped. Backoff doubles from 0.5 s up to ``connect_retry_max_seconds``
        with full jitter; after ``max_attempts`` it raises :class:`DatabaseUnavailableError`.
        """

        async def attempt() -> T:
            async with self.async_session_scope() as session:
                return await read(session)

        return await retry_with_backoff(
            attempt,
            what=f"{what} on {self.redacted_url}",
            max_attempts=max_attempts,
            max_delay_seconds=self.settings.connect_retry_max_seconds,
            sleep=sleep,
        )

    # --- stats -------------------------------------------------------------------------------
    def engine_stats(self) -> list[stats.PoolStats]:
        """One frozen :class:`~polly.stats.PoolStats` per built engine, read from the pools themselves."""
        with self._lock:
            monitors = list(self._monitors.values())
        return [monitor.snapshot(engine.pool) for monitor, engine in monitors]

    def check_slow_checkouts(self) -> int:
        """Log checkouts held over ``slow_checkout_seconds`` now (also done on pool activity)."""
        with self._lock:
            monitors = [m for m, _ in self._monitors.values()]
        return sum(m.check_slow_checkouts() for m in monitors)

    async def watch_slow_checkouts(self, interval_seconds: float = 5.0) -> None:
        """Run forever, scanning for slow holders every ``interval_seconds`` (the owner cancels it)."""
        while True:
            self.check_slow_checkouts()
            await asyncio.sleep(interval_seconds)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return on_connect


def _quietly(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except Exception:
        logger.warning("session %s failed; the connection is discarded", what, exc_info=True)


async def _rollback_and_close(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception:
        logger.warning("session rollback failed; invalidating the connection", exc_info=True)
        await _invalidate(session)
        return
    await session.close()


async def _invalidate(session: AsyncSession) -> None:
    try:
        await session.invalidate()
    except Exception:
        logger.warning("session invalidate failed", exc_info=True)
        await session.close()


async def _shielded(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to completion even if the caller is cancelled again meanwhile."""
    await asyncio.shield(cleanup)
