"""The vote writer on SQLite: one write lock, taken at the start, turns handed over in the process,
reads through the votes index; and the bounded stamps of recent reactions."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from polly.db.engine import Database
from polly.db.schema import create_schema
from polly.engine.gateway import ReactionEvent
from polly.engine.store import PollStore, VoteCommand, VoteOutcome
from polly.engine.vote_batch import apply_batch
from polly.engine.votes import VoteProcessor, _Stamps
from polly.supervisor import Supervisor
from tests.polly.engine.harness import settings_for
from tests.polly.engine.test_vote_batch import EMOJIS, NOW, _seed

pytestmark = pytest.mark.timeout(120)


async def test_a_batch_holds_the_write_lock_from_its_first_read(sqlite_url: str) -> None:
    """Even a batch that writes nothing holds the lock until it ends: its reads and writes are one
    serialised transaction (the driver alone would begin at the first INSERT/DELETE)."""
    database = Database(settings_for(sqlite_url).database)
    create_schema(database.sync_engine)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        await _seed(database)
        async with database.async_session_scope() as session:
            outcomes = await apply_batch(session, [VoteCommand(999, 1, EMOJIS[0], "add")], now=NOW)
            assert [o.action for o in outcomes] == ["ignored_unknown_poll"]
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        await database.dispose()


async def test_the_votes_are_read_through_the_index_in_a_few_statement_shapes(sqlite_url: str) -> None:
    database = Database(settings_for(sqlite_url).database)
    create_schema(database.sync_engine)
    reads: list[tuple[str, Any]] = []
    try:
        await _seed(database)
        store = PollStore(database.async_session_scope)

        def record(_conn: object, _cursor: object, stmt: str, params: Any, *_: object) -> None:
            if stmt.lstrip().upper().startswith("SELECT") and ("FROM votes" in stmt or "JOIN votes" in stmt):
                reads.append((stmt, params))

        sa_event.listen(database.async_engine.sync_engine, "before_cursor_execute", record)
        for polls in range(1, 6):  # messages 100…104 are active polls
            commands = [  # polls times (polls + 2) voters: every batch a new number of pairs
                VoteCommand(100 + p, 50 + u, EMOJIS[0], "add") for p in range(polls) for u in range(polls + 2)
            ]
            await store.apply_votes(commands, now=NOW)
        assert len(reads) == 5
        # One statement whatever the number of polls and voters: no statement per list length
        # compiled, and none piling up in each connection's sqlite3 statement cache.
        assert len({stmt for stmt, _ in reads}) == 1
        with database.sync_engine.connect() as conn:
            for stmt, params in reads:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}", params)
                plan = " | ".join(row[-1] for row in rows)
                assert "SCAN votes" not in plan
                assert "ix_votes_poll_id_user_id" in plan
            assert (
                conn.execute(text("SELECT count(*) FROM votes")).scalar() == 5 * 7
            )  # 5 polls, 7 voters each
    finally:
        await database.dispose()


class _Gateway:
    bot_user_id = 1

    def __init__(self) -> None:
        self.events: asyncio.Queue[ReactionEvent] = asyncio.Queue()

    async def next_reaction_event(self) -> ReactionEvent:
        return await self.events.get()


class _Embeds:
    def mark(self, poll_id: int) -> None:
        pass


class _Store:
    """Applies nothing; records the batches and how many were being applied at once."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.active = self.most_active = 0
        self.release = asyncio.Event()
        self.release.set()

    async def apply_votes(self, commands: list[VoteCommand], *, now: datetime) -> list[VoteOutcome]:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.batches.append([c.user_id for c in commands])
        await self.release.wait()
        await asyncio.sleep(0.01)
        self.active -= 1
        return [VoteOutcome("ignored_unknown_poll", None) for _ in commands]


def _processor(store: _Store, gateway: _Gateway, *, serial: bool) -> VoteProcessor:
    return VoteProcessor(
        store,  # type: ignore[arg-type]
        gateway,  # type: ignore[arg-type]
        _Embeds(),  # type: ignore[arg-type]
        clock=lambda: NOW,
        serial_writes=serial,
    )


def _event(message_id: int, user_id: int) -> ReactionEvent:
    return ReactionEvent("add", 1, 10, message_id, user_id, EMOJIS[0], is_bot=False, received_at=NOW)


@pytest.mark.parametrize("serial", [True, False])
async def test_serial_writes_apply_one_transaction_at_a_time(serial: bool) -> None:
    store = _Store()
    votes = _processor(store, _Gateway(), serial=serial)
    await asyncio.gather(*(votes.apply_events([_event(100 + i, 10 + i)]) for i in range(3)))
    assert store.most_active == (1 if serial else 3)


async def test_with_serial_writes_one_worker_gets_every_event_and_tops_up_while_it_waits() -> None:
    store, gateway = _Store(), _Gateway()
    votes = _processor(store, gateway, serial=True)
    queues = votes.partitions(4, 100)
    async with Supervisor(name="serial", registry=None) as sup:
        sup.spawn("votes", votes.dispatch())
        sup.spawn("vote-0", votes.work(0))
        store.release.clear()

        async def feed() -> None:
            await asyncio.sleep(0.01)
            for user in range(10, 16):
                gateway.events.put_nowait(_event(100 + user % 4, user))  # four messages
                await asyncio.sleep(0.02)  # each arrives while the worker waits for its turn
            assert all(q.empty() for q in queues[1:])
            store.release.set()

        await asyncio.gather(votes.apply_events([_event(200, 2)], inline=True), feed())  # a repair first
        async with asyncio.timeout(5):
            while votes.queued:  # noqa: ASYNC110 - polling the processor's own count
                await asyncio.sleep(0.01)
        assert store.batches == [[2], [10, 11, 12, 13, 14, 15]]
        assert await sup.shutdown(5) == ()


def test_stamps_expire_after_their_ttl_and_the_oldest_go_past_maxsize() -> None:
    stamps = _Stamps(maxsize=3, ttl=10.0)
    for n, key in enumerate([(1, 1, "a"), (2, 2, "b"), (3, 3, "c")]):
        stamps.put(key, float(n))
    assert stamps.get((1, 1, "a"), now=9.0) == 0.0
    assert stamps.get((1, 1, "a"), now=10.0) == float("-inf")  # 10 s old: expired
    stamps.put((1, 1, "a"), 5.0)  # renewed: now the newest
    stamps.put((4, 4, "d"), 6.0)  # over maxsize: the oldest, (2, 2, "b"), goes
    assert stamps.get((2, 2, "b"), now=6.0) == float("-inf")
    assert [stamps.get(k, now=6.0) for k in [(3, 3, "c"), (1, 1, "a"), (4, 4, "d")]] == [2.0, 5.0, 6.0]
    stamps.put((5, 5, "e"), 12.5)  # everything stamped 2.5 or earlier has expired and is dropped
    assert stamps.get((3, 3, "c"), now=0.0) == float("-inf")
    assert stamps.get((1, 1, "a"), now=12.5) == 5.0


def test_stamps_leave_nothing_for_the_garbage_collector_to_walk() -> None:
    stamps = _Stamps(maxsize=20_000, ttl=60.0)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        stamps.put((1000 + i % 50, 100 + i, "🇦"), i / 1000)
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert stamps.get((1000, 100, "🇦"), now=1.0) == 0.0
