"""Thousands of transactions cancelled at random points leak no pooled or server connection.

Each task is cancelled at most once (a second cancellation while psycopg is cancelling the server-side
query makes psycopg close the socket instead, and the server keeps that backend until its query ends).
"""

from __future__ import annotations

import asyncio
import gc
import random

import psycopg
from sqlalchemy import select, text

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.models import Poll, utcnow_naive
from polly.db.schema import create_schema
from polly.stats import StatsRegistry

TASKS = 2000
POOL_SIZE, MAX_OVERFLOW = 5, 5


def server_connections(url: str) -> list[tuple[str, str]]:
    """(state, query) of every other backend connected to the test's database."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [(str(s), str(q)) for s, q in rows]


async def test_cancelled_mid_transaction_leaves_nothing_checked_out(  # noqa: PLR0915 - one scenario, kept whole
    postgres_url: str,
) -> None:
    create_schema(postgres_url)
    db = Database(
        DatabaseSettings(
            url=SecretUrl(postgres_url),
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout_seconds=60,
        ),
        registry=StatsRegistry(),
    )
    rng = random.Random(20240611)
    in_transaction: set[int] = set()
    cancelled_in_transaction: list[int] = []
    completed: list[int] = []
    cancelled_once: set[int] = set()
    body_done: set[int] = set()
    alive: list[object] = []

    async def transaction(i: int) -> None:
        try:
            async with db.async_session_scope() as session:
                alive.append(session)  # no help from the garbage collector: the scope must return it
                now = utcnow_naive()
                session.add(
                    Poll(
                        name=f"c{i}",
                        question="q",
                        options_json='["a"]',
                        server_id="1",
                        channel_id="2",
                        creator_id="3",
                        open_time=now,
                        close_time=now,
                    )
                )
                await session.flush()
                in_transaction.add(i)
                await session.execute(text("SELECT pg_sleep(:s)"), {"s": rng.uniform(0.0, 0.03)})
                body_done.add(i)  # from here on only COMMIT and the connection's return remain
            completed.append(i)
        except asyncio.CancelledError:
            if i in in_transaction:
                cancelled_in_transaction.append(i)
            raise
        finally:
            in_transaction.discard(i)

    async def cancel_at_random(tasks: list[asyncio.Task[None]]) -> None:
        """Every ~0.5 ms cancel one task inside its transaction and, half the time, one still queued."""
        while not all(t.done() for t in tasks):
            inside = sorted(in_transaction - cancelled_once)
            if inside:
                victim = rng.choice(inside)
                cancelled_once.add(victim)
                tasks[victim].cancel()
            queued = rng.randrange(TASKS)
            if rng.random() < 0.5 and queued not in cancelled_once:
                cancelled_once.add(queued)
                tasks[queued].cancel()
            await asyncio.sleep(rng.uniform(0, 0.001))

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(transaction(i)) for i in range(TASKS)]
            group.create_task(cancel_at_random(tasks))
        cancelled = sum(t.cancelled() for t in tasks)
        assert cancelled > TASKS // 10
        assert len(cancelled_in_transaction) >= 200, "cancellations must hit open transactions"
        pool = db.async_engine.pool
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        (snap,) = db.engine_stats()
        assert (snap.used, snap.pending, snap.timeouts) == (0, 0, 0)
        remaining = server_connections(postgres_url)
        assert len(remaining) <= POOL_SIZE + MAX_OVERFLOW
        assert all(state == "idle" for state, _ in remaining), remaining  # none left in a transaction
        # a transaction cancelled before its body finished was rolled back; completed ones committed
        async with db.async_session_scope() as session:
            names = set((await session.execute(select(Poll.name))).scalars())
        assert {f"c{i}" for i in completed} <= names
        assert names <= {f"c{i}" for i in body_done}
    finally:
        await db.dispose()
    # A task cancelled while psycopg was still connecting leaves that half-made connection to the garbage
    # collector (the pool never had it); the Task objects kept here hold it through their tracebacks.
    tasks.clear()
    alive.clear()
    gc.collect()
    assert server_connections(postgres_url) == []
