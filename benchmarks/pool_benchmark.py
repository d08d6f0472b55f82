"""Pool benchmark: 500 concurrent voters x 20 votes against PostgreSQL.

Two runs of the same load in one process, on one fresh database:

* ``polly``: polly's real vote path, :class:`~polly.engine.service.Engine` on a
  :class:`polly.db.Database` (pool 5 + 5 overflow): each vote is a reaction event through the
  gateway queue and the batch writer (:mod:`polly.engine.vote_batch`), awaited until committed;
* ``upstream``: upstream Polly's pattern, a default ``create_engine(url)`` (QueuePool 5 + 10, 30 s
  timeout) and a new sync ``SessionLocal()`` per vote, called from the coroutines on the event loop.

A vote is upstream's vote path in miniature: look up the user's existing vote for the option, insert
it if absent, commit. Printed per run: votes/s, p50/p99 checkout wait, pool timeouts, peak server
connections (``pg_stat_activity`` for the database, sampled every 10 ms from a thread) and the
largest event-loop stall; then the ratios polly / upstream.

    uv run python benchmarks/pool_benchmark.py [--voters 500] [--votes 20]

``POLLY_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) names the
server; a database ``polly_bench_<random>`` is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg
from sqlalchemy import create_engine, select
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import Session, sessionmaker
from vote_throughput import SyntheticGateway

from polly.config import load_settings
from polly.db.engine import Database
from polly.db.models import Poll, Vote, utcnow_naive
from polly.db.schema import create_schema
from polly.db.urls import driver_url
from polly.engine.gateway import ReactionEvent
from polly.engine.service import Engine
from polly.errors import PoolExhaustedError
from polly.stats import DurationEvent, StatsRegistry
from polly.supervisor import Supervisor

MESSAGE_ID = 5_000
EMOJIS = ["0️⃣", "1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣"]
ADMIN_URL = os.environ.get("POLLY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Result:
    name: str
    votes: int
    seconds: float
    waits: list[float]
    timeouts: int
    peak_connections: int
    max_loop_stall: float

    @property
    def rate(self) -> float:
        return self.votes / self.seconds

    def pct(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ConnectionSampler(threading.Thread):
    """Samples the number of server connections to ``database`` every ``interval`` seconds."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.url, self.interval, self.peak = url, interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop_event.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


async def loop_stall_probe(stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], time.perf_counter() - started - 0.005)


async def drive(
    name: str, url: str, voters: int, votes: int, vote: Callable[[int, int], Awaitable[None]]
) -> tuple[float, int, float]:
    sampler = ConnectionSampler(url)
    sampler.start()
    stop, worst = asyncio.Event(), [0.0]
    failures = [0]

    async def voter(v: int) -> None:
        for n in range(votes):
            try:
                await vote(v, n)
            except (PoolExhaustedError, SATimeoutError):
                failures[0] += 1
            await asyncio.sleep(0)  # the handler's next await (a Discord call upstream)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        probe = group.create_task(loop_stall_probe(stop, worst))
        async with asyncio.TaskGroup() as voters_group:
            for v in range(voters):
                voters_group.create_task(voter(v))
        elapsed = time.perf_counter() - started
        stop.set()
        await probe
    peak = sampler.stop()
    print(f"  {name}: done in {elapsed:.2f} s")
    return elapsed, peak, worst[0]


async def run_polly(url: str, _poll_id: int, voters: int, votes: int) -> Result:
    """polly's real vote path: each vote is a reaction event through the engine's batch writer."""
    registry = StatsRegistry()
    waits: list[float] = []

    def on_duration(event: DurationEvent) -> None:
        if event.kind == "wait_time":
            waits.append(event.seconds)

    registry.add_listener(on_duration)
    settings = load_settings(
        environ={
            "DATABASE_URL": url,
            "DB_POOL_SIZE": "5",
            "DB_MAX_OVERFLOW": "5",
            "POLLY_REDIS__ENABLED": "false",
        }
    )
    db = Database(settings.database, registry=registry)
    gateway = SyntheticGateway(settings.engine.vote_queue_max)
    committed: dict[tuple[int, str], asyncio.Future[None]] = {}

    def on_outcome(event: ReactionEvent, _outcome: object) -> None:
        future = committed.pop((event.user_id, event.emoji), None)
        if future is not None and not future.done():
            future.set_result(None)

    engine = Engine(settings, db, gateway, on_outcome=on_outcome)  # type: ignore[arg-type]

    async def vote(v: int, n: int) -> None:
        # A voter's vote counts once its transaction committed (the handler awaits it).
        event = ReactionEvent("add", 1, 2, MESSAGE_ID, 10_000 + v, EMOJIS[n % 10], is_bot=False)
        future = committed[(event.user_id, event.emoji)] = asyncio.get_running_loop().create_future()
        while not gateway.queue.offer(event):  # noqa: ASYNC110 - a full queue: the voter retries
            await asyncio.sleep(0.01)
        await future

    try:
        async with Supervisor(name="bench", registry=None) as sup:
            engine.start(sup)
            await sup.wait_ready(30)
            elapsed, peak, stall = await drive("polly", url, voters, votes, vote)
            await sup.shutdown(10)
        snap = next(s for s in db.engine_stats() if "async" in s.name)
        return Result("polly", voters * votes, elapsed, waits, snap.timeouts, peak, stall)
    finally:
        engine.close()
        await db.dispose()


async def run_upstream(url: str, poll_id: int, voters: int, votes: int) -> Result:
    engine = create_engine(driver_url(url, "sync"))  # upstream: create_engine(DATABASE_URL), defaults
    session_local = sessionmaker(autocommit=False, autoflush=False, bind=engine)
    waits: list[float] = []
    timeouts = [0]

    async def vote(v: int, n: int) -> None:
        session: Session = session_local()  # upstream's get_db_session()
        try:
            started = time.perf_counter()
            try:
                session.connection()  # the checkout upstream's first query would do
            except SATimeoutError:
                timeouts[0] += 1
                raise
            waits.append(time.perf_counter() - started)
            user, option = f"u{v}", n % 10
            existing = session.execute(
                select(Vote.id).where(
                    Vote.poll_id == poll_id, Vote.user_id == user, Vote.option_index == option
                )
            ).first()
            if existing is None:
                session.add(Vote(poll_id=poll_id, user_id=user, option_index=option, voted_at=utcnow_naive()))
            session.commit()
        finally:
            session.close()

    try:
        elapsed, peak, stall = await drive("upstream", url, voters, votes, vote)
        return Result("upstream", voters * votes, elapsed, waits, timeouts[0], peak, stall)
    finally:
        engine.dispose()


def report(results: list[Result]) -> None:
    print()
    print(f"{'run':<10}{'votes/s':>10}{'p50 wait ms':>13}{'p99 wait ms':>13}{'timeouts':>10}"
          f"{'peak conns':>12}{'max loop stall ms':>19}")  # fmt: skip
    for r in results:
        print(
            f"{r.name:<10}{r.rate:>10.0f}{r.pct(0.5) * 1e3:>13.2f}{r.pct(0.99) * 1e3:>13.2f}{r.timeouts:>10}"
            f"{r.peak_connections:>12}{r.max_loop_stall * 1e3:>19.1f}"
        )
    polly, upstream = results
    print()
    print("ratios polly / upstream (anchor: upstream's pattern in this run):")
    print(f"  votes/s           {polly.rate / upstream.rate:.2f}x")
    print(f"  p99 checkout wait {polly.pct(0.99) / max(upstream.pct(0.99), 1e-9):.2f}x")
    print(f"  max loop stall    {polly.max_loop_stall / max(upstream.max_loop_stall, 1e-9):.3f}x")
    print(
        f"  peak connections  {polly.peak_connections} (limit 10) vs {upstream.peak_connections} (limit 15)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--voters", type=int, default=500)
    parser.add_argument("--votes", type=int, default=20)
    args = parser.parse_args()
    name = f"polly_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(ADMIN_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    try:
        create_schema(url)
        engine = create_engine(driver_url(url, "sync"))
        with Session(engine) as session:
            now = utcnow_naive()
            poll = Poll(name="bench", question="?", server_id="1", channel_id="2", creator_id="3",
                        open_time=now, close_time=now + timedelta(hours=1), status="active",
                        message_id=str(MESSAGE_ID), multiple_choice=True)  # fmt: skip
            poll.options = [str(i) for i in range(10)]
            poll.emojis = list(EMOJIS)
            session.add(poll)
            session.commit()
            poll_id = poll.id
        engine.dispose()
        print(f"{args.voters} voters x {args.votes} votes on PostgreSQL ({name})")
        results = [
            await run_polly(url, poll_id, args.voters, args.votes),
            await run_upstream(url, poll_id, args.voters, args.votes),
        ]
        report(results)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    asyncio.run(main())
