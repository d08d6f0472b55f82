"""One corrupt-row rule: the engine's store, the tolerant bulk readers and the poll commands agree on
which rows are corrupt, and say why in the same words."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import insert, text

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.models import Poll, utcnow_naive
from polly.db.poll_rows import poll_view
from polly.db.queries import CorruptRow, iter_polls, iter_polls_sync
from polly.db.schema import create_schema
from polly.engine.store import PollStore
from polly.errors import CorruptPollError
from polly.polls import reports

#: Column values that make a row corrupt, and the reason every reader gives.
CORRUPTIONS = [
    ({"options_json": "[not json"}, "options_json is not valid JSON"),
    ({"options_json": "[]"}, "options_json has no options"),
    ({"options_json": '["a", 2]'}, "options_json is not a JSON list of strings"),
    ({"emojis_json": '["🇦"]'}, "emojis_json has 1 emojis for 2 options"),
    ({"server_id": "not-a-guild"}, "server_id 'not-a-guild' is not a Discord id"),
    ({"channel_id": ""}, "channel_id is empty"),
    ({"ping_role_id": "@everyone"}, "ping_role_id '@everyone' is not a Discord id"),
    ({"message_id": "12ab"}, "message_id '12ab' is not a Discord id"),
]


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    create_schema(sqlite_url)
    db = Database(DatabaseSettings(url=SecretUrl(sqlite_url)))
    try:
        yield db
    finally:
        db.dispose_sync()


def add_poll(db: Database, **values: object) -> int:
    now = utcnow_naive()
    row = {
        "name": "p",
        "question": "q?",
        "options_json": '["a", "b"]',
        "server_id": "111111111111111111",
        "channel_id": "222222222222222222",
        "creator_id": "0",
        "open_time": now - timedelta(hours=1),
        "close_time": now + timedelta(hours=1),
        "timezone": "UTC",
        "status": "active",
        "message_id": "333333333333333333",
    }
    with db.session_scope() as session:
        poll_id = session.scalar(insert(Poll).values(**(row | values)).returning(Poll.id))
    assert poll_id is not None
    return int(poll_id)


@pytest.mark.parametrize(("values", "reason"), CORRUPTIONS)
async def test_every_reader_applies_the_same_rule(
    database: Database, values: dict[str, object], reason: str
) -> None:
    good = add_poll(database)
    bad = add_poll(database, **values)
    # the poll commands
    listed = reports.list_polls(database)
    assert [p.id for p in listed.polls] == [good]
    [skipped] = listed.skipped
    assert skipped.row_id == bad
    assert skipped.reason.startswith(reason)
    with pytest.raises(CorruptPollError) as raised:
        reports.show_poll(database, bad)
    assert (raised.value.poll_id, raised.value.reason) == (bad, skipped.reason)
    # the bulk readers, sync and async
    seen: list[CorruptRow] = []
    with database.session_scope() as session:
        assert [p.id for p in iter_polls_sync(session, on_corrupt=seen.append)] == [good]
    async with database.async_session_scope() as session:
        assert [p.id async for p in iter_polls(session, on_corrupt=seen.append)] == [good]
    assert seen == [skipped] * 2
    # the engine
    store = PollStore(database.async_session_scope)
    assert [v.id async for v in store.views(Poll.status == "active", limit=10)] == [good]
    with pytest.raises(CorruptPollError, match=f"poll {bad}: "):
        await store.view(bad)
    view = await store.view(good)
    assert view is not None
    assert view.message_id == 333333333333333333


async def test_an_unreadable_row_is_corrupt_for_the_engine_too(database: Database) -> None:
    good = add_poll(database)
    bad = add_poll(database)
    with database.session_scope() as session:  # only SQLite can hold a text timestamp
        session.execute(text("UPDATE polls SET close_time = 'next tuesday' WHERE id = :id"), {"id": bad})
    store = PollStore(database.async_session_scope)
    assert [v.id async for v in store.views(Poll.status == "active", limit=10)] == [good]
    with pytest.raises(CorruptPollError, match=f"poll {bad}: row: cannot be read"):
        await store.view(bad)


def test_a_skipped_row_is_logged_only_when_nobody_takes_the_report(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    bad = add_poll(database, options_json="[not json")
    caplog.set_level(logging.WARNING, logger="polly.db.queries")
    with database.session_scope() as session:
        assert list(iter_polls_sync(session, on_corrupt=lambda _row: None)) == []
        assert caplog.records == []
        assert list(iter_polls_sync(session)) == []
    [record] = caplog.records
    assert f"id={bad}: options_json is not valid JSON" in record.getMessage()


def test_a_claim_is_not_a_message_id() -> None:
    class Row:
        id = 7
        name, question, options_json, emojis_json = "p", "q", '["a", "b"]', None
        server_id, channel_id, message_id = "1", "2", "claim:replica-1:1700000000"
        status, timezone, anonymous, multiple_choice, max_choices = "active", "UTC", False, False, None
        ping_role_enabled, ping_role_id, ping_role_on_close, image_message_text, image_path = (
            False, None, False, None, None,
        )  # fmt: skip
        open_time = close_time = utcnow_naive()

    view = poll_view(Row())
    assert (view.message_id, view.claim) == (None, "claim:replica-1:1700000000")
    assert view.emojis == ("🇦", "🇧")
    assert view.created_at is None
