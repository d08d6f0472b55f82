"""Callers of the compatibility modules see what upstream's callers saw (facts copied below).

Upstream facts (pacnpal/polly ``polly/database.py``): ``UserPreference.user = relationship("User")``;
``Channel.guild = relationship("Guild")``; ``Base`` mixes in ``AsyncAttrs``; ``DATABASE_URL`` and
``ASYNC_DATABASE_URL`` are module strings; ``polly.background_tasks`` imports ``get_db_session``
from ``polly.database`` and closes polls through it; ``reaction_safeguard_task`` exists. Upstream's
SQLite migrations declare ``DEFAULT CURRENT_TIMESTAMP`` on these columns:
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.orm import sessionmaker

from polly import background_tasks, database
from polly.db import current
from polly.db.models import Channel, Guild, Poll, User, UserPreference, utcnow_naive
from polly.db.schema import create_schema

UPSTREAM_TIMESTAMP_DEFAULTS = {
    "polls": ["created_at"],
    "votes": ["voted_at"],
    "users": ["created_at", "updated_at"],
    "user_preferences": ["updated_at"],
    "guilds": ["updated_at"],
    "channels": ["updated_at"],
    "schema_migrations": ["applied_at"],
}
IDS = ("123456789012345678", "987654321098765432")


@pytest.fixture
def compat_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    current.dispose_database_sync()
    create_schema(sqlite_url)
    yield sqlite_url
    current.dispose_database_sync()


def test_relationships_of_preferences_and_channels(compat_db: str) -> None:
    session = database.get_db_session()
    try:
        session.add_all([User(id="1", username="ann"), Guild(id="2", name="g", owner_id="1")])
        session.flush()
        session.add_all([
            UserPreference(user_id="1", last_server_id="2"),
            Channel(id="3", guild_id="2", name="general", type="text"),
        ])  # fmt: skip
        session.commit()
        pref = session.scalars(select(UserPreference)).one()
        channel = session.scalars(select(Channel)).one()
        assert pref.user.username == "ann"
        assert channel.guild.name == "g"
    finally:
        session.close()


async def test_models_have_async_attrs(compat_db: str) -> None:
    session = database.get_db_session()
    poll = Poll(name="n", question="q", server_id=IDS[0], channel_id=IDS[1], creator_id="0",
                open_time=utcnow_naive(), close_time=utcnow_naive() + timedelta(hours=1))  # fmt: skip
    poll.options = ["a", "b"]
    session.add(poll)
    session.commit()
    session.close()
    async with database.get_async_db_session() as async_session:
        loaded = (await async_session.scalars(select(Poll))).one()
        assert await loaded.awaitable_attrs.votes == []


def test_database_url_names(compat_db: str) -> None:
    assert compat_db == database.DATABASE_URL
    assert compat_db.replace("sqlite://", "sqlite+aiosqlite://", 1) == database.ASYNC_DATABASE_URL


def test_async_url_for_postgres_names_polly_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db.example/polly")
    current.dispose_database_sync()
    try:
        assert database.DATABASE_URL == "postgresql://u:pw@db.example/polly"
        assert database.ASYNC_DATABASE_URL == "postgresql+psycopg://u:pw@db.example/polly"
    finally:
        current.dispose_database_sync()


def test_close_poll_honours_a_replaced_session_factory(
    compat_db: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"sqlite:///{tmp_path_factory.mktemp('other')}/other.db"
    create_schema(other)
    engine = create_engine(other)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO polls (id, name, question, options_json, server_id, channel_id, creator_id, "
                "open_time, close_time, status) VALUES (7, 'n', 'q', '[\"a\",\"b\"]', '1', '2', '0', "
                "'2026-01-01 00:00:00', '2026-01-02 00:00:00', 'active')"
            )
        )
    assert background_tasks.get_db_session is not None
    monkeypatch.setattr(database, "SessionLocal", sessionmaker(bind=engine), raising=False)
    import asyncio

    result = asyncio.run(background_tasks.close_poll(7))
    assert result["success"] is True, result
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM polls WHERE id = 7")).scalar_one() == "closed"
    assert asyncio.run(background_tasks.close_poll(7))["message"] == "poll 7 was not open"
    assert asyncio.run(background_tasks.close_poll(8)) == {"success": False, "error": "poll 8 not found"}
    engine.dispose()


def test_engine_only_apis_fail_loudly_outside_polly_run() -> None:
    with pytest.raises(background_tasks.EngineNotRunningError, match="polly run"):
        background_tasks.get_scheduler()
    with pytest.raises(background_tasks.EngineNotRunningError):
        _ = background_tasks.scheduler
    import asyncio

    with pytest.raises(background_tasks.EngineNotRunningError, match="reaction_safeguard_task"):
        asyncio.run(background_tasks.reaction_safeguard_task())
    assert isinstance(background_tasks.EngineNotRunningError("x"), RuntimeError)


def test_schema_polly_creates_has_upstreams_timestamp_defaults(db_url: str) -> None:
    create_schema(db_url)
    from polly.db.urls import driver_url

    engine = create_engine(driver_url(db_url, "sync"))
    try:
        insp = inspect(engine)
        for table, columns in UPSTREAM_TIMESTAMP_DEFAULTS.items():
            defaults = {c["name"]: c.get("default") for c in insp.get_columns(table)}
            for column in columns:
                assert defaults[column], f"{table}.{column} has no server default"
        with engine.begin() as conn:  # a raw insert omitting the column gets "now" in UTC
            conn.execute(text("INSERT INTO users (id, username) VALUES ('u1', 'ann')"))
            conn.execute(
                text(
                    "INSERT INTO polls (name, question, options_json, server_id, channel_id, creator_id, "
                    "open_time, close_time) VALUES ('n', 'q', '[]', '1', '2', '0', "
                    "'2026-01-01 00:00:00', '2026-01-02 00:00:00')"
                )
            )
            created = conn.execute(text("SELECT created_at FROM polls")).scalar_one()
            updated = conn.execute(text("SELECT updated_at FROM users")).scalar_one()
        for value in (created, updated):
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            assert abs(stamp - utcnow_naive()) < timedelta(minutes=5), stamp
    finally:
        engine.dispose()
