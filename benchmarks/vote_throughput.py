"""Vote throughput: the real vote path (gateway queue → dispatcher → batch writer → database).

A synthetic gateway that costs next to nothing (its REST calls return at once) feeds reaction
events for 50 active polls (single choice, multiple choice, capped, anonymous) from 5 000 voters
into polly's :class:`~polly.engine.service.Engine`, on SQLite, PostgreSQL and MariaDB. Printed per
database:

* the highest offered rate (events/s, from a ladder) held for ``--hold`` seconds with 0 events shed;
* p50/p99 event-to-commit latency at 1 000 events/s, timed per event from its offer to the engine's
  outcome report after the commit (the events carry ``received_at``, so the very object offered is
  the one reported; the count of events timed is printed beside);
* the longest event-loop stall (a 5 ms sleep probe on the engine's own loop), the peak server
  connections and the process's CPU (all threads) as a share of one core;
* two anchors measured in the same run, as capacity on a backlog (events applied per second):
  the previous per-event path (one transaction per event, 4 workers; ``per_event_anchor``) and
  upstream's per-vote pattern (a new sync session per vote, on the event loop), with the ratios.

    uv run python benchmarks/vote_throughput.py [--quick] [--databases sqlite,postgres,mariadb]
        [--ladder 1000,3000] [--hold 30] [--latency-seconds 15] [--no-anchors]

The load averages are printed with each figure: on a shared machine they say how much CPU the run
had to compete for.

``POLLY_BENCH_POSTGRES_URL`` / ``POLLY_BENCH_MARIADB_URL`` name the servers (defaults: the local
ones); a database ``polly_bench_<random>`` is created and dropped on each.
"""

# ruff: noqa: ARG002 - the synthetic gateway takes the protocol's arguments and ignores them

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from per_event_anchor import apply_reaction_per_event
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session

from polly.config import load_settings
from polly.db.engine import Database
from polly.db.models import Poll, Vote
from polly.db.schema import create_schema
from polly.engine.gateway import (
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    PostedMessage,
    ReactionEvent,
    ReactionEventQueue,
    ReactionUser,
    ShedReportingEvents,
)
from polly.engine.service import Engine, utcnow_naive
from polly.errors import ServerError
from polly.supervisor import Supervisor

PG = os.environ.get("POLLY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIA = os.environ.get("POLLY_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
POLLS, VOTERS, BOT = 50, 5000, 1
EMOJIS = ["🇦", "🇧", "🇨", "🇩"]


class SyntheticGateway(ShedReportingEvents):
    """A gateway whose REST calls return at once; events come from :meth:`offer`."""

    def __init__(self, max_events: int) -> None:
        self.queue = self._events = ReactionEventQueue(max_events)  # the benchmark offers to it
        self._ready = asyncio.Event()

    bot_user_id = BOT

    def is_ready(self) -> bool:
        return self._ready.is_set()

    async def start(self) -> None:
        self._ready.set()
        await asyncio.Event().wait()

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    async def close(self) -> None:
        self._ready.clear()

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Any, content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        return PostedMessage(1)

    async def edit_message(self, channel_id: int, message_id: int, **_: Any) -> None:
        return None

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        return None

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        return None

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        return None

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        # The benchmark measures the event path; the repair (which would read no reactions) is kept out.
        msg = "synthetic gateway: no reactions to read"
        raise ServerError(msg)

    async def list_reaction_users(self, *_: Any, **__: Any) -> tuple[ReactionUser, ...]:
        return ()

    async def send_message(self, channel_id: int, **_: Any) -> int:
        return 1

    async def send_dm(self, user_id: int, **_: Any) -> int:
        return 1


def make_database(kind: str) -> tuple[str, Callable[[], None]]:
    name = f"polly_bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        path = tempfile.mkdtemp()
        return f"sqlite:///{path}/bench.db", lambda: None
    base = PG if kind == "postgres" else MARIA
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://"),
        isolation_level="AUTOCOMMIT",
    )
    quote = '"' if kind == "postgres" else "`"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
    head = base.rsplit("/", 1)[0]

    def drop() -> None:
        with admin.connect() as conn:
            if kind == "postgres":
                conn.execute(
                    text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                )
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        admin.dispose()

    return f"{head}/{name}", drop


def seed(url: str) -> None:
    database = Database(load_settings(environ={"DATABASE_URL": url}).database)
    create_schema(database.sync_engine)
    now = utcnow_naive()
    rows = []
    for i in range(POLLS):
        multiple = i % 2 == 1
        rows.append({
            "name": f"b{i}", "question": "?", "options_json": json.dumps(["a", "b", "c", "d"]),
            "emojis_json": json.dumps(EMOJIS), "server_id": "1", "channel_id": str(10 + i % 5),
            "creator_id": "0",
            "status": "active", "timezone": "UTC", "message_id": str(1000 + i), "open_time": now,
            "close_time": now + timedelta(hours=2), "anonymous": i % 5 == 0, "multiple_choice": multiple,
            "max_choices": 2 if multiple and i % 3 == 0 else None,
        })  # fmt: skip
    with Session(database.sync_engine) as session, session.begin():
        session.execute(insert(Poll), rows)
    database.dispose_sync()


def random_event(rng: random.Random, *, stamp: bool = False) -> ReactionEvent:
    """A random add (or, on multiple-choice polls, 30 % removes); ``stamp`` sets ``received_at`` as a
    gateway adapter does, so the queue passes this very object on."""
    poll = rng.randrange(POLLS)
    kind = "remove" if poll % 2 == 1 and rng.random() < 0.3 else "add"
    return ReactionEvent(
        kind, 1, 10 + poll % 5, 1000 + poll, 100 + rng.randrange(VOTERS), rng.choice(EMOJIS), is_bot=False,
        received_at=utcnow_naive() if stamp else None,
    )  # fmt: skip


async def server_connections(database: Database) -> int:
    if database.backend == "sqlite":
        return sum(p.used for p in database.engine_stats())
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        if database.backend == "postgresql"
        else "SELECT count(*) FROM information_schema.processlist WHERE db = database()"
    )
    async with database.async_session_scope() as session:
        return int(await session.scalar(text(query)) or 0) - 1


async def offered_run(url: str, rate: float, seconds: float) -> dict[str, float]:
    """Offer ``rate`` events/s for ``seconds`` to a fresh engine; shed, latency, stall, connections."""
    settings = load_settings(environ={"DATABASE_URL": url, "POLLY_REDIS__ENABLED": "false"})
    database = Database(settings.database)
    gateway = SyntheticGateway(settings.engine.vote_queue_max)
    # Keyed by the event object's id while the entry keeps the event alive (so no id is reused):
    # the events carry ``received_at``, so the queue and the dispatcher pass the same object on.
    offered_at: dict[int, tuple[ReactionEvent, float]] = {}
    latencies: list[float] = []

    def on_outcome(event: ReactionEvent, _outcome: object) -> None:
        entry = offered_at.pop(id(event), None)
        if entry is not None:
            latencies.append(time.perf_counter() - entry[1])

    engine = Engine(settings, database, gateway, on_outcome=on_outcome)  # type: ignore[arg-type]
    rng = random.Random(1)
    worst, peak = [0.0], [0]
    async with Supervisor(name="bench", registry=None) as sup:
        engine.start(sup)
        await sup.wait_ready(30)
        await asyncio.sleep(2.0)  # start-up (first scheduler tick, first repair pass) is not measured

        async def probe() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                worst[0] = max(worst[0], time.perf_counter() - t - 0.005)

        async def connections() -> None:
            while True:
                peak[0] = max(peak[0], await server_connections(database))
                await asyncio.sleep(0.5)

        sup.start_loop("probe", lambda ready: (ready.ready(), probe())[1])
        sup.start_loop("connections", lambda ready: (ready.ready(), connections())[1])
        start, sent, cpu = time.perf_counter(), 0, time.process_time()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                event = random_event(rng, stamp=True)
                offered_at[id(event)] = (event, time.perf_counter())
                gateway.queue.offer(event)
                sent += 1
            await asyncio.sleep(0.005)
        await engine.drain(30)
        cpu = (time.process_time() - cpu) / (time.perf_counter() - start)
        shed = gateway.event_stats().dropped
        await sup.shutdown(10)
    engine.close()
    await database.dispose()
    lat = sorted(latencies) or [0.0]
    return {
        "rate": rate, "sent": sent, "shed": shed, "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "stall_ms": 1000 * worst[0],
        "connections": peak[0], "measured": len(latencies), "cpu": cpu,
    }  # fmt: skip


async def per_event_capacity(url: str, seconds: float) -> float:
    """The previous path: 4 workers, one transaction per event, on a backlog."""
    database = Database(load_settings(environ={"DATABASE_URL": url}).database)
    rng = random.Random(2)
    done = [0]
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            e = random_event(rng)
            async with database.async_session_scope() as session:
                await apply_reaction_per_event(
                    session, e.message_id, e.user_id, e.emoji, kind=e.kind, now=utcnow_naive()
                )
            done[0] += 1

    await asyncio.gather(*(worker() for _ in range(4)))
    await database.dispose()
    return done[0] / seconds


async def upstream_capacity(url: str, seconds: float) -> float:
    """Upstream's pattern: a new sync session per vote, called on the event loop, one at a time."""
    database = Database(load_settings(environ={"DATABASE_URL": url}).database)
    rng = random.Random(3)
    engine = create_engine(database.sync_engine.url)
    deadline, done = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        e = random_event(rng)
        with Session(engine) as session:
            poll = session.scalar(select(Poll).where(Poll.message_id == str(e.message_id)))
            assert poll is not None
            option = EMOJIS.index(e.emoji)
            existing = session.scalar(
                select(Vote).where(
                    Vote.poll_id == poll.id, Vote.user_id == str(e.user_id), Vote.option_index == option
                )
            )
            if existing is None:
                session.add(
                    Vote(
                        poll_id=poll.id, user_id=str(e.user_id), option_index=option, voted_at=utcnow_naive()
                    )
                )
            session.commit()
        done += 1
        await asyncio.sleep(0)
    engine.dispose()
    await database.dispose()
    return done / seconds


async def polly_capacity(url: str, seconds: float) -> float:
    """polly's path on a backlog: events applied per second while the queue is kept full."""
    settings = load_settings(environ={"DATABASE_URL": url, "POLLY_REDIS__ENABLED": "false"})
    database = Database(settings.database)
    gateway = SyntheticGateway(settings.engine.vote_queue_max)
    engine = Engine(settings, database, gateway)  # type: ignore[arg-type]
    rng = random.Random(4)
    async with Supervisor(name="cap", registry=None) as sup:
        engine.start(sup)
        await sup.wait_ready(30)
        before, start = engine.votes.stats.events, time.perf_counter()
        while time.perf_counter() - start < seconds:
            while gateway.queue.stats().depth < gateway.queue.max_events - 100:
                gateway.queue.offer(random_event(rng))
            await asyncio.sleep(0.01)
        rate = (engine.votes.stats.events - before) / (time.perf_counter() - start)
        await sup.shutdown(10)
    engine.close()
    await database.dispose()
    return rate


async def bench(kind: str, args: argparse.Namespace) -> None:
    url, drop = make_database(kind)
    try:
        seed(url)
        print(f"\n{kind}: {url.split('@')[-1]}  (load {load()})")
        if not args.no_anchors:
            anchor_seconds = 5.0 if args.hold < 30 else 10.0
            capacity = await polly_capacity(url, anchor_seconds)
            per_event = await per_event_capacity(url, anchor_seconds)
            upstream = await upstream_capacity(url, anchor_seconds)
            print(f"  capacity on a backlog: polly {capacity:,.0f} ev/s | per-event path "
                  f"{per_event:,.0f} ev/s (x{capacity / per_event:.1f}) | upstream per-vote session "
                  f"{upstream:,.0f} ev/s (x{capacity / upstream:.1f})")  # fmt: skip
        at_1000 = await offered_run(url, 1000, args.latency_seconds)
        print(f"  at 1 000 ev/s for {args.latency_seconds:.0f} s: p50 {at_1000['p50_ms']:.1f} ms, "
              f"p99 {at_1000['p99_ms']:.1f} ms ({at_1000['measured']:,} events timed), "
              f"stall {at_1000['stall_ms']:.1f} ms, connections {at_1000['connections']}, "
              f"shed {at_1000['shed']}, cpu {at_1000['cpu']:.0%} of a core  (load {load()})")  # fmt: skip
        held = 0.0
        for rate in args.ladder:
            r = await offered_run(url, rate, args.hold)
            print(f"  offered {rate:,.0f} ev/s for {args.hold:.0f} s: shed {r['shed']}, "
                  f"p99 {r['p99_ms']:.0f} ms, stall {r['stall_ms']:.0f} ms, connections {r['connections']}, "
                  f"cpu {r['cpu']:.0%} of a core  (load {load()})")  # fmt: skip
            if r["shed"]:
                break
            held = rate
        if args.ladder:
            print(f"  highest rate held {args.hold:.0f} s with 0 shed: {held:,.0f} ev/s")
    finally:
        drop()


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def rates(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated events/s such as 1000,3000, got {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s holds and the ladder 1000,3000")
    parser.add_argument("--databases", default="sqlite,postgres,mariadb")
    parser.add_argument("--hold", type=float, help="seconds each ladder rate is offered (default 30)")
    parser.add_argument("--ladder", type=rates, help="offered rates, events/s (default 1000,2000,…,8000)")
    parser.add_argument("--latency-seconds", type=float, help="seconds of the 1 000 ev/s run (default 15)")
    parser.add_argument("--no-anchors", action="store_true", help="skip the capacity anchors")
    args = parser.parse_args()
    if args.hold is None:
        args.hold = 5.0 if args.quick else 30.0
    if args.ladder is None:
        args.ladder = (
            [1000.0, 3000.0] if args.quick else [1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0]
        )
    if args.latency_seconds is None:
        args.latency_seconds = min(args.hold, 15.0)
    print(f"load before: {load()} (1/5/15 min), {os.cpu_count()} cores")
    for kind in args.databases.split(","):
        asyncio.run(bench(kind.strip(), args))
    print(f"\nload after: {load()}")


if __name__ == "__main__":
    main()
