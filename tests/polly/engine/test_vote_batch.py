"""The batched vote writer gives exactly the per-event path's database state, on every dialect."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta
from typing import Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text
from sqlalchemy import event as sa_event

from benchmarks.per_event_anchor import apply_reaction_per_event
from polly.db.engine import Database
from polly.db.models import Poll, Vote
from polly.db.schema import create_schema
from polly.engine.store import PollStore
from polly.engine.vote_batch import VoteCommand
from polly.errors import CorruptPollError
from tests.polly.engine.harness import CHANNEL, GUILD, settings_for

pytestmark = pytest.mark.timeout(240)

NOW = datetime(2026, 6, 1, 12, 0)
USERS = 2
EMOJIS = ["🇦", "🇧", "🇨", "🇿"]  # the last is no poll's option
#: (multiple_choice, anonymous, max_choices, status, closes in hours, corrupt)
KINDS = [
    (False, False, None, "active", 1, False),
    (True, False, None, "active", 1, False),
    (True, False, 2, "active", 1, False),
    (False, True, None, "active", 1, False),
    (True, True, 2, "active", 1, False),
    (True, False, None, "closed", 1, False),
    (False, False, None, "active", -1, False),  # past its close time, not closed yet
    (True, False, None, "active", 1, True),
]
UNKNOWN_MESSAGE = 999


async def _seed(database: Database) -> list[int]:
    ids = []
    async with database.async_session_scope() as session:
        for i, (multiple, anonymous, cap, status, hours, _corrupt) in enumerate(KINDS):
            poll = Poll(
                name=f"p{i}", question="?", options_json=json.dumps(["a", "b", "c"]),
                emojis_json=json.dumps(EMOJIS[:3]), server_id=str(GUILD), channel_id=str(CHANNEL),
                creator_id="1", status=status, timezone="UTC", message_id=str(100 + i),
                open_time=NOW - timedelta(hours=2), close_time=NOW + timedelta(hours=hours),
                anonymous=anonymous, multiple_choice=multiple, max_choices=cap,
            )  # fmt: skip
            session.add(poll)
            await session.flush()
            ids.append(int(poll.id))
    async with database.async_session_scope() as session:
        for poll_id, kind in zip(ids, KINDS, strict=True):
            if kind[5]:
                await session.execute(
                    text("UPDATE polls SET options_json = '{x' WHERE id = :id"), {"id": poll_id}
                )
    return ids


async def _state(database: Database) -> set[tuple[int, str, int]]:
    async with database.async_session_scope() as session:
        rows = await session.execute(select(Vote.poll_id, Vote.user_id, Vote.option_index))
        return {(int(p), str(u), int(o)) for p, u, o in rows}


async def _reset(database: Database, poll_ids: list[int], initial: list[tuple[int, int, int]]) -> None:
    async with database.async_session_scope() as session:
        await session.execute(delete(Vote))
        if initial:
            await session.execute(
                insert(Vote),
                [
                    {"poll_id": poll_ids[p], "user_id": str(u), "option_index": o, "voted_at": NOW}
                    for p, u, o in initial
                ],
            )


Event = tuple[int, int, int, Literal["add", "remove"], bool]
events_strategy = st.lists(
    st.tuples(
        st.integers(0, len(KINDS)),  # len(KINDS): an unknown message
        st.integers(0, USERS - 1),
        st.integers(0, len(EMOJIS) - 1),
        st.sampled_from(["add", "remove"]),
        st.integers(0, 9).map(lambda n: n == 0),  # now and then a reconcile (add-only) event
    ),
    min_size=10,
    max_size=60,
)
initial_strategy = st.lists(
    st.tuples(st.integers(0, len(KINDS) - 1), st.integers(0, USERS - 1), st.integers(0, 2)), max_size=10
)


def _command(event: Event) -> VoteCommand:
    poll, user, emoji, kind, reconcile = event
    message = UNKNOWN_MESSAGE if poll == len(KINDS) else 100 + poll
    return VoteCommand(message, 7000 + user, EMOJIS[emoji], kind, reconcile=reconcile and kind == "add")


async def _per_event(database: Database, commands: list[VoteCommand]) -> None:
    for c in commands:
        async with database.async_session_scope() as session:
            with contextlib.suppress(CorruptPollError):
                await apply_reaction_per_event(
                    session, c.message_id, c.user_id, c.emoji, kind=c.kind, now=NOW, reconcile=c.reconcile
                )


async def _batched(store: PollStore, commands: list[VoteCommand], cuts: list[int]) -> None:
    start = 0
    for size in [*cuts, len(commands)]:
        chunk = commands[start : start + max(size, 1)]
        if not chunk:
            break
        await store.apply_votes(chunk, now=NOW)
        start += len(chunk)


def test_random_event_sequences_give_identical_state(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    database = Database(settings_for(db_url).database)
    create_schema(database.sync_engine)
    store = PollStore(database.async_session_scope)
    poll_ids = loop.run_until_complete(_seed(database))
    checked: list[int] = []

    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(initial=initial_strategy, events=events_strategy, cuts=st.lists(st.integers(1, 15), max_size=4))
    # Over the cap, a change of mind in one batch, an add-only replay over a vote, a re-add after a remove.
    @example(
        initial=[],
        events=[(2, 0, 0, "add", False), (2, 0, 1, "add", False), (2, 0, 2, "add", False)],
        cuts=[],
    )
    @example(initial=[(0, 0, 0)], events=[(0, 0, 1, "add", False), (0, 0, 2, "add", True)], cuts=[])
    @example(initial=[(1, 1, 0)], events=[(1, 1, 0, "remove", False), (1, 1, 0, "add", False)], cuts=[])
    def check(initial: list[tuple[int, int, int]], events: list[Event], cuts: list[int]) -> None:
        commands = [_command(e) for e in events]
        loop.run_until_complete(_reset(database, poll_ids, initial))
        loop.run_until_complete(_per_event(database, commands))
        expected = loop.run_until_complete(_state(database))
        loop.run_until_complete(_reset(database, poll_ids, initial))
        loop.run_until_complete(_batched(store, commands, cuts))
        assert loop.run_until_complete(_state(database)) == expected, commands
        checked.append(len(expected))

    try:
        check()
    finally:
        loop.run_until_complete(database.dispose())
        loop.close()
    assert any(checked), "no example recorded a vote"


async def test_a_corrupt_poll_fails_only_its_own_events(sqlite_url: str) -> None:
    database = Database(settings_for(sqlite_url).database)
    create_schema(database.sync_engine)
    try:
        ids = await _seed(database)
        store = PollStore(database.async_session_scope)
        outcomes = await store.apply_votes(
            [
                VoteCommand(107, 1, "🇦", "add"),
                VoteCommand(100, 1, "🇦", "add"),
                VoteCommand(101, 2, "🇧", "add"),
            ],
            now=NOW,
        )
        assert [o.action for o in outcomes] == ["ignored_corrupt", "created", "added"]
        assert outcomes[0].error is not None
        assert "options_json" in str(outcomes[0].error)
        assert await _state(database) == {(ids[0], "1", 0), (ids[1], "2", 1)}
        with pytest.raises(CorruptPollError):
            await store.apply_reaction(107, 1, "🇦", kind="add", now=NOW)
    finally:
        await database.dispose()


async def test_one_batch_reads_once_and_writes_in_bulk(sqlite_url: str) -> None:
    """A batch of 200 events costs a constant number of statements, not one round trip per event."""
    database = Database(settings_for(sqlite_url).database)
    create_schema(database.sync_engine)
    statements: list[str] = []
    try:
        await _seed(database)
        store = PollStore(database.async_session_scope)

        def count(_conn: object, _cursor: object, stmt: str, *_args: object) -> None:
            statements.append(stmt.split(maxsplit=1)[0].upper())

        sa_event.listen(database.async_engine.sync_engine, "before_cursor_execute", count)
        commands = [VoteCommand(100 + (i % 3), 7000 + i, EMOJIS[i % 3], "add") for i in range(200)]
        commands += [
            VoteCommand(100, 7000 + i, EMOJIS[1], "add") for i in range(0, 200, 3)
        ]  # changes of mind
        await store.apply_votes(commands, now=NOW)
        assert statements.count("SELECT") == 2
        assert statements.count("INSERT") == 1
        assert statements.count("DELETE") <= 1
    finally:
        await database.dispose()


async def test_a_stale_event_never_overwrites_a_newer_choice(db_url: str) -> None:
    """A replica that lags applies an older event after another replica applied a newer one."""
    database = Database(settings_for(db_url).database)
    create_schema(database.sync_engine)
    try:
        ids = await _seed(database)
        store = PollStore(database.async_session_scope)
        t = [NOW - timedelta(seconds=30 - i) for i in range(4)]
        first = [VoteCommand(100, 1, "🇦", "add", seen_at=t[0]), VoteCommand(100, 1, "🇧", "add", seen_at=t[1])]
        await store.apply_votes(first, now=NOW)  # the replica ahead: 🇦 then 🇧
        (late,) = await store.apply_votes([first[0]], now=NOW)  # the lagging one replays 🇦
        assert late.action == "ignored_stale"
        assert await _state(database) == {(ids[0], "1", 1)}
        (newer,) = await store.apply_votes([VoteCommand(100, 1, "🇨", "add", seen_at=t[2])], now=NOW)
        assert newer.action == "updated"
        # Multiple choice: a late remove of an option re-added since is stale too.
        await store.apply_votes(
            [VoteCommand(101, 1, "🇦", "add", seen_at=t[0]), VoteCommand(101, 1, "🇦", "remove", seen_at=t[1]),
             VoteCommand(101, 1, "🇦", "add", seen_at=t[2])], now=NOW,
        )  # fmt: skip
        (stale_remove,) = await store.apply_votes([VoteCommand(101, 1, "🇦", "remove", seen_at=t[1])], now=NOW)
        assert stale_remove.action == "ignored_stale"
        assert await _state(database) == {(ids[0], "1", 2), (ids[1], "1", 0)}
    finally:
        await database.dispose()
