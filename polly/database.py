"""Upstream Polly's ``polly.database`` names, backed by polly's pooled engines.

Code written against upstream keeps working: the models, ``TypeSafeColumn``, ``POLL_EMOJIS``,
``get_poll_emoji``, ``get_db_session()`` (a plain session the caller must close, as upstream), the
FastAPI dependencies ``get_db`` / ``get_async_db``, the async context manager
``get_async_db_session()``, ``init_database()``, and the module attributes ``engine``,
``SessionLocal``, ``async_engine``, ``AsyncSessionLocal``, ``DATABASE_URL`` and
``ASYNC_DATABASE_URL`` (the latter names polly's async driver: ``postgresql+psycopg://`` where
upstream left a PostgreSQL URL unchanged). Those attributes are resolved on first
access (module ``__getattr__``), so importing this module builds no engine; they come from the
process-wide :func:`polly.db.get_database`, so upstream callers share polly's bounded pools.

New code should use :meth:`polly.db.Database.session_scope` / ``async_session_scope`` instead: a
session from ``get_db_session()`` holds a pooled connection until it is closed (a checkout held past
``slow_checkout_seconds`` is logged with the stack that took it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from polly.db.current import get_database
from polly.db.models import (
    POLL_EMOJIS,
    Base,
    Channel,
    Guild,
    Poll,
    TypeSafeColumn,
    User,
    UserPreference,
    Vote,
    get_poll_emoji,
)
from polly.db.schema import create_schema
from polly.db.urls import to_async_url as _to_async_url
from polly.errors import AsyncDatabaseNotConfiguredError

__all__ = [
    "POLL_EMOJIS",
    "AsyncDatabaseNotConfiguredError",
    "Base",
    "Channel",
    "Guild",
    "Poll",
    "TypeSafeColumn",
    "User",
    "UserPreference",
    "Vote",
    "_to_async_url",
    "get_async_db",
    "get_async_db_session",
    "get_db",
    "get_db_session",
    "get_poll_emoji",
    "init_database",
]

#: (id of the Database the factories are bound to, sync factory, async factory or None); at most one.
_cache: list[Any] = [None, None, None]


def _session_local() -> sessionmaker[Session]:
    database = get_database()
    if _cache[0] != id(database) or _cache[1] is None:
        # upstream's sessionmaker arguments: explicit flushes, objects expire on commit
        _cache[:] = [id(database), sessionmaker(bind=database.sync_engine, autoflush=False), None]
    factory: sessionmaker[Session] = _cache[1]
    return factory


def _async_session_local() -> async_sessionmaker[AsyncSession]:
    database = get_database()
    if _cache[0] != id(database) or _cache[2] is None:
        sync = _cache[1] if _cache[0] == id(database) else None
        made = async_sessionmaker(database.async_engine, autoflush=False, expire_on_commit=False)
        _cache[:] = [id(database), sync, made]
    factory: async_sessionmaker[AsyncSession] = _cache[2]
    return factory


def get_db_session() -> Session:
    """A new session on the pooled sync engine. The caller must close it (upstream's contract).

    A ``SessionLocal`` assigned to this module (``polly.database.SessionLocal = sessionmaker(...)``,
    as upstream's tests do) is used instead.
    """
    replaced = globals().get("SessionLocal")
    factory = replaced if replaced is not None else _session_local()
    session: Session = factory()
    return session


def get_db() -> Generator[Session, None, None]:
    """FastAPI dependency: a session closed when the request ends."""
    session = get_db_session()
    try:
        yield session
    finally:
        session.close()


async def get_async_db() -> AsyncGenerator[AsyncSession, None]:
    """FastAPI dependency: an async session, rolled back on error and always closed."""
    async with get_async_db_session() as session:
        yield session


@asynccontextmanager
async def get_async_db_session() -> AsyncIterator[AsyncSession]:
    """An async session: rolled back on error, always closed; commits are the caller's (as upstream).

    Cancellation is handled like :meth:`polly.db.Database.async_session_scope`: the connection is
    invalidated, never returned mid-query.
    """
    database = get_database()
    database.async_engine  # noqa: B018 - fail here, not on first use, if no async engine can be built
    session = _async_session_local()()
    try:
        yield session
    except Exception:
        await session.rollback()
        raise
    except BaseException:
        await session.invalidate()
        raise
    finally:
        await session.close()


def init_database() -> None:
    """Create the tables (and polly's indexes, and the migration ledger) if missing; never drops."""
    create_schema(get_database())


def __getattr__(name: str) -> Any:
    if name == "engine":
        return get_database().sync_engine
    if name == "SessionLocal":
        return _session_local()
    if name == "async_engine":
        return get_database().async_engine
    if name == "AsyncSessionLocal":
        return _async_session_local()
    if name == "DATABASE_URL":  # upstream: the configured URL string, password included (not for logs)
        return get_database().settings.url.get_secret_value()
    if name == "ASYNC_DATABASE_URL":
        # polly's async URL: ASYNC_DATABASE_URL as given, else the configured URL with polly's async
        # driver (aiosqlite, psycopg, aiomysql); upstream left non-SQLite URLs unchanged.
        settings = get_database().settings
        chosen = settings.async_url if settings.async_url is not None else settings.url
        return _to_async_url(chosen.get_secret_value())
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
