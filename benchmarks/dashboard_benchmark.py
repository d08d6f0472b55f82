"""The dashboard's poll list with 10 000 polls: p95 server time against anchors, in one run.

    uv run python benchmarks/dashboard_benchmark.py [--polls 10000] [--requests 200]
        [--databases sqlite,postgres,mariadb] [--database-url URL]

A signed-in member (against the loopback Discord of the tests) asks for the list page of a server
holding ``--polls`` polls (a quarter each scheduled and closed, half active, plus 1 000 in another
server): the first page, a deep page, every status, a search and a search matching nothing, each
``--requests`` times, in process (httpx over ASGI, so the figure includes the client's small overhead
and no network). Anchors measured in the same run and process:

* ``bare query``: ``polly.web.store.list_page`` for the first active page (its database work
  alone: no HTTP, no sign-in check, no rendering);
* ``naive load-all``: ``polly.polls.reports.list_polls`` for the server with ``limit=10000`` (every
  row and its vote counts loaded, as a page without paging would).

Target: p95 <= 50 ms for every list page, on every database. ``--databases`` (default: all three)
runs it on a SQLite file in a temporary directory and on a fresh ``polly_bench_<random>`` database
created and dropped on the servers of ``POLLY_BENCH_POSTGRES_URL`` / ``POLLY_BENCH_MARIADB_URL`` (as
``vote_throughput.py``); ``--database-url`` runs it once on that database instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import insert
from vote_throughput import make_database

from polly.db.models import Poll
from polly.polls.reports import list_polls
from polly.web.store import list_page
from tests.discord_standin import DiscordStandin
from tests.web.support import build_world, dashboard, sign_in, web_settings

TARGET_P95_MS = 50.0


def seed(engine: object, server_id: str, other_id: str, channel_id: str, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for i in range(count + 1000):
        status = ("scheduled", "active", "active", "closed")[i % 4]
        rows.append(
            {
                "name": f"Poll {i:05d}",
                "question": f"Question number {i} about lunch?",
                "options_json": '["a", "b"]',
                "emojis_json": '["🇦", "🇧"]',
                "server_id": server_id if i < count else other_id,
                "channel_id": channel_id,
                "channel_name": "polls",
                "creator_id": "1",
                "status": status,
                "timezone": "UTC",
                "open_time": now + timedelta(minutes=i),
                "close_time": now + timedelta(days=1, minutes=i),
            }
        )
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for start in range(0, len(rows), 1000):
            conn.execute(insert(Poll), rows[start : start + 1000])
    # a live database has planner statistics (autovacuum keeps them); a just-filled table has none yet
    analyze = {"postgresql": "VACUUM ANALYZE polls", "sqlite": "ANALYZE", "mysql": "ANALYZE TABLE polls"}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql(analyze[conn.dialect.name])


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    await call()  # warm
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


async def bench(url: str, polls: int, requests: int) -> float:
    """Measure every list page on ``url``, print the figures, return the worst p95 (ms)."""
    tmp = Path(tempfile.mkdtemp(prefix="polly-dashboard-bench-"))
    async with DiscordStandin() as discord:
        world = build_world(discord)
        async with dashboard(web_settings(discord, url, tmp)) as (_, client, database):
            gid, cid = str(discord.guild.id), str(discord.channel.id)
            seed(database.sync_engine, gid, str(world.other.id), cid, polls)
            await sign_in(client, discord, world.manager)
            base = f"/servers/{gid}/polls"
            deep = polls // 2 // 25
            pages = {
                "first page (active)": f"{base}?status=active",
                f"deep page {deep} (active)": f"{base}?status=active&page={deep}",
                "all statuses, page 1": f"{base}?status=all",
                "search 'number 77'": f"{base}?status=all&q=number+77",
                "search, no match": f"{base}?status=all&q=zzz",
            }
            results: dict[str, list[float]] = {}
            for label, path in pages.items():

                async def get(path: str = path) -> None:
                    response = await client.get(path)
                    assert response.status_code == 200, response.status_code

                results[label] = await timed(requests, get)

            async def bare() -> None:
                await asyncio.to_thread(
                    list_page, database, server_id=gid, status="active", search="", page=1
                )

            async def naive() -> None:
                await asyncio.to_thread(list_polls, database, server_id=gid, limit=10_000)

            anchor_bare = await timed(requests, bare)
            anchor_naive = await timed(max(10, requests // 10), naive)
    print(f"dashboard list page, {polls} polls in the server (+1000 elsewhere), {requests} requests each")
    print(f"database: {url.split(':', 1)[0]}")
    print(f"{'':32} {'p50 ms':>8} {'p95 ms':>8}  ratios (p95)")
    bare95, naive95 = p95(anchor_bare), p95(anchor_naive)
    print(f"{'anchor: bare query':32} {statistics.median(anchor_bare):8.2f} {bare95:8.2f}")
    print(f"{'anchor: naive load-all':32} {statistics.median(anchor_naive):8.2f} {naive95:8.2f}")
    worst = 0.0
    for label, samples in results.items():
        page95 = p95(samples)
        worst = max(worst, page95)
        print(
            f"{label:32} {statistics.median(samples):8.2f} {page95:8.2f}  "
            f"{page95 / bare95:5.1f}x bare query, {naive95 / page95:5.1f}x faster than load-all"
        )
    verdict = "meets" if worst <= TARGET_P95_MS else "MISSES"
    print(f"worst p95 {worst:.2f} ms: {verdict} the {TARGET_P95_MS:.0f} ms target\n")
    return worst


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--databases", default="sqlite,postgres,mariadb")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    unknown = sorted(set(kinds) - {"sqlite", "postgres", "mariadb"})
    if unknown:
        print(f"--databases: unknown {', '.join(unknown)} (choose from sqlite, postgres, mariadb)")
        return 2
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    worst = 0.0
    if args.database_url:
        worst = await bench(args.database_url, args.polls, args.requests)
    for kind in [] if args.database_url else kinds:
        url, drop = make_database(kind)
        try:
            worst = max(worst, await bench(url, args.polls, args.requests))
        finally:
            drop()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if worst <= TARGET_P95_MS else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
