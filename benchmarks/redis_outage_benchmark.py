"""Latency of a Redis read while Redis is down: polly (breaker open) against upstream's pattern.

Anchor: upstream's ``RedisClient`` while disconnected builds a new ``redis.asyncio.Redis`` and PINGs
it on every call (5 s connect timeout, old client never closed). Both run against a killed
``redis-server`` on a free local port, where a refused connect is the *fastest* failure; a
blackholed host would cost upstream the full 5 s per call. Also prints recovery time after restart.

    uv run python benchmarks/redis_outage_benchmark.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from polly.config import RedisSettings, SecretUrl
from polly.redis import close_redis, current_redis
from polly.redis_client import RedisClient
from polly.stats import BreakerState
from tests.polly.redis_server import OwnRedisServer

POLLY_CALLS = 20_000
UPSTREAM_CALLS = 20  # each takes redis-py's default retry backoff (up to seconds)


def pct(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100)[p - 1] * 1000


async def upstream_get(port: int) -> object:
    client = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    except RedisError:
        return None
    return await client.get("k")


async def main() -> None:
    server = OwnRedisServer()
    server.start()
    settings = RedisSettings(url=SecretUrl(server.url), breaker_probe_interval_seconds=0.5)
    client = RedisClient(settings)
    await client.connect()
    connector = current_redis()
    assert connector is not None
    await client.set("k", {"v": 1})
    server.kill()
    while connector.breaker.state is not BreakerState.OPEN:
        await client.get("k")

    polly: list[float] = []
    for _ in range(POLLY_CALLS):
        t = time.perf_counter()
        await client.get("k")
        polly.append(time.perf_counter() - t)
    upstream: list[float] = []
    for _ in range(UPSTREAM_CALLS):
        t = time.perf_counter()
        await upstream_get(server.port)
        upstream.append(time.perf_counter() - t)

    for name, samples in (("polly, breaker open", polly), ("upstream, new client per call", upstream)):
        print(f"{name} ({len(samples)} calls): p50 {pct(samples, 50):.4f} ms  p99 {pct(samples, 99):.4f} ms")
    p50_ratio = pct(upstream, 50) / pct(polly, 50)
    p99_ratio = pct(upstream, 99) / pct(polly, 99)
    print(f"ratio upstream/polly: p50 {p50_ratio:.0f}x  p99 {p99_ratio:.0f}x")

    server.start()
    t = time.perf_counter()
    while not await client.set("k", 1):  # noqa: ASYNC110 -- polling the call under test is the measurement
        await asyncio.sleep(0.005)
    print(f"recovery after restart (half-open trial, interval 0.5 s): {time.perf_counter() - t:.3f} s")
    s = connector.stats()
    pooled = s.pool.used + s.pool.idle
    print(f"pool objects used+idle {pooled} of {s.pool.max_connections}; errors {s.pool.errors}")
    await close_redis()
    server.kill()


if __name__ == "__main__":
    asyncio.run(main())
