"""``polly.database`` keeps upstream's import names, builds nothing at import, and uses the pooled engines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text

from polly.db import current


@pytest.fixture
def compat_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    current.dispose_database_sync()
    yield sqlite_url
    current.dispose_database_sync()


def test_upstream_names_exist() -> None:
    from polly import database

    for name in (
        "Poll", "Vote", "User", "UserPreference", "Guild", "Channel", "Base", "TypeSafeColumn",
        "get_db_session", "get_db", "get_async_db", "get_async_db_session", "POLL_EMOJIS",
        "get_poll_emoji", "init_database", "AsyncDatabaseNotConfiguredError",
    ):  # fmt: skip
        assert hasattr(database, name), name
    assert issubclass(database.AsyncDatabaseNotConfiguredError, Exception)
    assert database.POLL_EMOJIS[0] == "\N{REGIONAL INDICATOR SYMBOL LETTER A}"
    assert database.POLL_EMOJIS[-1] == "\N{REGIONAL INDICATOR SYMBOL LETTER J}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = database.nope


def test_import_builds_no_engine() -> None:
    code = (
        "import sys, polly.database, polly.db\n"
        "from polly.db import current\n"
        "assert current._current is None, 'configured at import'\n"
        "assert 'aiosqlite' not in sys.modules and 'psycopg' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_sessions_come_from_the_process_wide_pooled_database(compat_db: str) -> None:
    from polly import database

    database.init_database()
    session = database.get_db_session()
    try:
        session.add(database.User(id="42", username="ada"))
        session.commit()
    finally:
        session.close()
    assert database.engine is current.get_database().sync_engine
    assert database.SessionLocal is database.SessionLocal  # one factory, not one per access
    async with database.get_async_db_session() as async_session:
        names = (await async_session.execute(select(database.User.username))).scalars().all()
    assert names == ["ada"]
    assert database.async_engine is current.get_database().async_engine
    gen = database.get_db()
    s = next(gen)
    s.execute(text("SELECT 1"))
    gen.close()
    agen = database.get_async_db()
    a = await agen.__anext__()
    await a.execute(text("SELECT 1"))
    await agen.aclose()
    stats = current.get_database().engine_stats()
    assert all(snap.used == 0 for snap in stats), stats
    await current.dispose_database()


async def test_async_session_rolls_back_on_error(compat_db: str) -> None:
    from polly import database

    database.init_database()

    async def fail() -> None:
        async with database.get_async_db_session() as session:
            session.add(database.User(id="1", username="x"))
            await session.flush()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await fail()
    async with database.get_async_db_session() as session:
        assert (await session.execute(select(database.User))).scalars().all() == []
    await current.dispose_database()


def test_configure_twice_is_refused(compat_db: str) -> None:
    from polly.config import DatabaseSettings, SecretUrl

    current.configure_database(DatabaseSettings(url=SecretUrl(compat_db)))
    with pytest.raises(RuntimeError, match="already configured"):
        current.configure_database(DatabaseSettings(url=SecretUrl(compat_db)))
