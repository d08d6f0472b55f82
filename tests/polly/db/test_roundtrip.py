"""Rows upstream wrote read back identically; rows polly writes follow upstream's conventions; corrupt
rows are skipped and reported while the rest are read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.models import POLL_EMOJIS, Poll, TypeSafeColumn, Vote, get_poll_emoji
from polly.db.queries import CorruptRow, iter_polls, iter_polls_sync
from polly.db.schema import upgrade_schema
from polly.stats import StatsRegistry
from tests.polly.db.upstream import RawDB, create_upstream_schema, kind_of, naive_utc

POLL_COLUMNS = (
    "name, question, options_json, emojis_json, server_id, channel_id, creator_id, message_id, "
    "open_time, close_time, status, anonymous, multiple_choice, timezone"
)


def insert_poll(raw: RawDB, name: str, **overrides: object) -> int:
    values: dict[str, object] = {
        "name": name,
        "question": "Lunch?",
        "options_json": json.dumps(["Pizza", "Sushi", "Tacos"]),
        "emojis_json": json.dumps(POLL_EMOJIS[:3]),
        "server_id": "111",
        "channel_id": "222",
        "creator_id": "333",
        "message_id": "444",
        "open_time": "2025-09-10 12:00:00",
        "close_time": "2025-09-11 12:30:15",
        "status": "active",
        "anonymous": False,
        "multiple_choice": True,
        "timezone": "US/Eastern",
    }
    values.update(overrides)
    marks = ", ".join("?" for _ in values)
    raw.execute(f"INSERT INTO polls ({', '.join(values)}) VALUES ({marks})", tuple(values.values()))
    return int(raw.execute("SELECT max(id) FROM polls")[0][0])


@pytest.fixture(params=["sqlite-v11", "sqlite-v4", "postgres", "mariadb"])
async def upgraded(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Database]]:
    """An upstream database (v4 SQLite too), upgraded, with a polly Database on it."""
    fixture = "sqlite_url" if request.param.startswith("sqlite") else f"{request.param}_url"
    url = request.getfixturevalue(fixture)
    assert isinstance(url, str)
    create_upstream_schema(url, "sqlite-v4" if request.param == "sqlite-v4" else "sqlite")
    upgrade_schema(url)
    db = Database(DatabaseSettings(url=SecretUrl(url)), registry=StatsRegistry())
    try:
        yield url, db
    finally:
        await db.dispose()


async def test_upstream_rows_read_back_identically(upgraded: tuple[str, Database]) -> None:
    url, db = upgraded
    with RawDB(url) as raw:
        poll_id = insert_poll(raw, "lunch")
        for user, option in (("u1", 0), ("u1", 2), ("u2", 2), ("u3", 1)):
            raw.execute(
                "INSERT INTO votes (poll_id, user_id, option_index, voted_at) VALUES (?, ?, ?, ?)",
                (poll_id, user, option, "2025-09-10 13:00:00"),
            )
    async with db.async_session_scope() as session:
        polls = [p async for p in iter_polls(session, with_votes=True)]
    assert [p.id for p in polls] == [poll_id]
    for poll in polls:
        assert poll.options == ["Pizza", "Sushi", "Tacos"]
        assert poll.emojis == POLL_EMOJIS[:3]
        assert poll.open_time == naive_utc(2025, 9, 10, 12, 0, 0)  # naive UTC, as stored
        assert poll.close_time_aware == datetime(2025, 9, 11, 12, 30, 15, tzinfo=UTC)
        assert poll.get_results() == {0: 1, 1: 1, 2: 2}
        assert poll.get_total_votes() == 3  # distinct voters: multiple choice
        assert poll.get_total_vote_count() == 4
        assert poll.get_winner() == [2]
        assert poll.should_show_results()
        assert TypeSafeColumn.get_bool(poll, "multiple_choice") is True
        assert TypeSafeColumn.get_bool(poll, "open_immediately") is False  # v9 default for old rows
        assert poll.timezone == "US/Eastern"


async def test_polly_rows_follow_upstream_conventions(upgraded: tuple[str, Database]) -> None:
    url, db = upgraded
    async with db.async_session_scope() as session:
        poll = Poll(
            name="polly",
            question="Q",
            server_id="1",
            channel_id="2",
            creator_id="3",
            open_time=naive_utc(2026, 1, 2, 3, 4, 5),
            close_time=naive_utc(2026, 1, 3, 3, 4, 5),
        )
        poll.options = ["Yes", "No"]
        poll.emojis = [get_poll_emoji(0), get_poll_emoji(1)]
        session.add(poll)
        await session.flush()
        session.add(Vote(poll_id=poll.id, user_id="9", option_index=1))
    with RawDB(url) as raw:
        row = raw.execute(
            "SELECT options_json, emojis_json, status, open_time, anonymous, multiple_choice, created_at "
            "FROM polls WHERE name = 'polly'"
        )[0]
        vote = raw.execute("SELECT option_index, voted_at FROM votes")[0]
    assert json.loads(row[0]) == ["Yes", "No"]
    assert json.loads(row[1]) == POLL_EMOJIS[:2]
    assert row[2] == "scheduled"
    opened = row[3] if isinstance(row[3], datetime) else datetime.fromisoformat(str(row[3]))
    assert opened == naive_utc(2026, 1, 2, 3, 4, 5)
    assert opened.tzinfo is None
    assert not row[4]
    assert not row[5]
    assert row[6] is not None
    assert vote[0] == 1
    voted = vote[1] if isinstance(vote[1], datetime) else datetime.fromisoformat(str(vote[1]))
    assert abs((voted - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 120, "naive UTC"


async def test_corrupt_rows_are_skipped_and_reported(upgraded: tuple[str, Database]) -> None:
    url, db = upgraded
    with RawDB(url) as raw:
        good1 = insert_poll(raw, "good1")
        bad_json = insert_poll(raw, "bad-json", options_json="[not json")
        bad_emojis = insert_poll(raw, "bad-emojis", emojis_json='{"a": 1}')
        bad_time = None
        if kind_of(url) == "sqlite":  # only SQLite can hold a text timestamp
            bad_time = insert_poll(raw, "bad-time", close_time="next tuesday")
        good2 = insert_poll(raw, "good2")
    reported: list[CorruptRow] = []
    async with db.async_session_scope() as session:
        seen = [p.id async for p in iter_polls(session, batch_size=2, on_corrupt=reported.append)]
    assert seen == [good1, good2]
    expected = {bad_json: "options_json", bad_emojis: "emojis_json"}
    if bad_time is not None:
        expected[bad_time] = "unreadable"
    assert {r.row_id for r in reported} == set(expected)
    for row in reported:
        assert expected[row.row_id] in row.reason
        assert row.table == "polls"
    # the sync reader too, filtered by status
    sync_reported: list[CorruptRow] = []
    with db.session_scope() as sync_session:
        ids = [
            p.id for p in iter_polls_sync(sync_session, statuses={"active"}, on_corrupt=sync_reported.append)
        ]
    assert ids == [good1, good2]
    assert {r.row_id for r in sync_reported} == set(expected)


async def test_statuses_filter_and_batches(upgraded: tuple[str, Database]) -> None:
    url, db = upgraded
    with RawDB(url) as raw:
        ids = [insert_poll(raw, f"p{i}", status=("active", "closed", "scheduled")[i % 3]) for i in range(7)]
    async with db.async_session_scope() as session:
        closed = [p.id async for p in iter_polls(session, statuses={"closed"}, batch_size=1)]
        everything = [p.id async for p in iter_polls(session, batch_size=3)]
    assert closed == [ids[1], ids[4]]
    assert everything == ids
    async with db.async_session_scope() as session:
        assert (
            await session.execute(select(Poll.status).where(Poll.id == ids[2]))
        ).scalar_one() == "scheduled"
