"""The one poll state machine on SQLite, PostgreSQL and MariaDB: the engine's store and the poll
commands make the same moves, close means the same for both, and claims survive neither a close
nor a time zone."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from polly.db import transitions
from polly.db.engine import Database
from polly.db.models import Poll, utcnow_naive
from polly.engine.store import PollStore
from polly.polls import service
from tests.polly.polls.test_service import create

TOKEN = "claim:replica-1:1700000000"


def row(db: Database, poll_id: int) -> tuple[str, str | None]:
    with db.session_scope() as session:
        status, message_id = session.execute(
            select(Poll.status, Poll.message_id).where(Poll.id == poll_id)
        ).one()
        return str(status), message_id


def set_row(db: Database, poll_id: int, **values: object) -> None:
    with db.session_scope() as session:
        session.execute(update(Poll).where(Poll.id == poll_id).values(**values))


def test_statements_are_built_once() -> None:
    assert transitions.close(1).statement is transitions.close(2, ("scheduled",)).statement
    assert transitions.claim_open(1, "a").statement is transitions.claim_open(2, "b").statement
    posted = transitions.reopen(1, posted=True, close_time=datetime(2030, 1, 1))
    assert posted.statement is transitions.reopen(2, posted=True, close_time=datetime(2031, 1, 1)).statement
    assert (
        posted.statement is not transitions.reopen(1, posted=False, close_time=datetime(2030, 1, 1)).statement
    )


@pytest.mark.parametrize("bad", [(), ("closed",), ("active", "paused")])
def test_close_only_moves_from_scheduled_or_active(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="close moves a poll from scheduled or active"):
        transitions.close(1, bad)


@pytest.mark.parametrize("closer", ["engine", "command"])
async def test_close_releases_the_claim_and_a_post_in_flight_still_lands(
    database: Database, closer: str
) -> None:
    store = PollStore(database.async_session_scope)
    poll_id = create(database)
    assert await store.claim_open(poll_id, TOKEN)
    assert not await store.claim_open(poll_id, TOKEN)  # a second replica loses the race
    assert row(database, poll_id) == ("active", TOKEN)
    if closer == "engine":
        assert await store.close(poll_id)
        assert not await store.close(poll_id)  # done once
    else:
        assert service.close_poll(database, poll_id) == "active"
        assert service.close_poll(database, poll_id) is None
    assert row(database, poll_id) == ("closed", None)  # a closed poll never carries a claim
    # The replica that was posting stores its message id, so the engine finalizes it.
    assert await store.finish_open(poll_id, TOKEN, 123456789012345678)
    assert row(database, poll_id) == ("closed", "123456789012345678")
    assert not await store.finish_open(poll_id, "claim:replica-2:1700000001", 223456789012345678)


async def test_a_post_stores_only_over_its_own_claim(database: Database) -> None:
    store = PollStore(database.async_session_scope)
    poll_id = create(database)
    assert await store.claim_open(poll_id, TOKEN)
    assert await store.reclaim(poll_id, TOKEN, "claim:replica-2:1700000200")
    assert not await store.reclaim(poll_id, TOKEN, "claim:replica-3:1700000300")
    assert not await store.finish_open(poll_id, TOKEN, 123456789012345678)  # taken over: too late
    assert await store.finish_open(poll_id, "claim:replica-2:1700000200", 223456789012345678)
    assert row(database, poll_id) == ("active", "223456789012345678")
    assert await store.close(poll_id)
    assert row(database, poll_id) == ("closed", "223456789012345678")  # a real message id stays


async def test_the_engine_closes_an_overdue_scheduled_poll_only_when_asked_to(database: Database) -> None:
    store = PollStore(database.async_session_scope)
    poll_id = create(database)
    assert not await store.close(poll_id)  # default: from active only
    assert await store.close(poll_id, from_statuses=("scheduled",))
    assert row(database, poll_id) == ("closed", None)


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        ("123456789012345678", ("active", "123456789012345678")),
        (TOKEN, ("scheduled", None)),
        (None, ("scheduled", None)),
    ],
)
def test_reopen_follows_whether_the_poll_was_posted(
    database: Database, message_id: str | None, expected: tuple[str, str | None]
) -> None:
    poll_id = create(database)
    set_row(database, poll_id, status="closed", message_id=message_id)  # a claim left by older code
    done = service.reopen_poll(database, poll_id, now=utcnow_naive(), extend_minutes=600)
    assert (done.status, row(database, poll_id)) == (expected[0], expected)


def test_reopen_refuses_a_poll_whose_message_changed_meanwhile(database: Database) -> None:
    poll_id = create(database)
    set_row(database, poll_id, status="closed", message_id=None)
    # Read as never posted, but a post in flight stored its message id before the reopen ran.
    stale = transitions.reopen(poll_id, posted=False, close_time=utcnow_naive() + timedelta(hours=1))
    set_row(database, poll_id, message_id="123456789012345678")
    with database.session_scope() as session:
        assert not transitions.applied_sync(session, stale)
    assert row(database, poll_id) == ("closed", "123456789012345678")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def test_a_claims_time_is_read_back_in_any_local_time_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        now = datetime(2026, 3, 29, 1, 30, 15)  # naive UTC, as polly stores time
        token = transitions.claim_token("replica-1", now)
        assert token.startswith(transitions.CLAIM_PREFIX)
        assert transitions.is_claim(token)
        assert transitions.claim_time(token) == now
        assert transitions.claim_time("claim:broken") is None
    finally:
        monkeypatch.undo()
        time.tzset()
