"""Memory bounds of calls made while Redis is down. Run only under ``pytest --memray``
(``tests/polly/test_redis_memory.py`` does so in a subprocess); the file name keeps pytest's default
collection away from it, because the markers do nothing without ``--memray``.

The bound is on the peak memory allocated during the 100 000 calls (``limit_memory``): a leak of 10
bytes per call would exceed it. The canary makes the same calls plus the leak a naive outage path
would have (every failed write kept in an unbounded dict); it must fail, proving the bound can fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from polly.config import RedisSettings, SecretUrl
from polly.redis import RedisConnector
from polly.redis_client import RedisClient
from polly.stats import BreakerState
from tests.polly.redis_server import free_port

CALLS = 100_000


@pytest.fixture
async def down_client() -> AsyncIterator[RedisClient]:
    """A client on a port nobody listens on: the breaker opens at start; one trial call per second."""
    settings = RedisSettings(
        url=SecretUrl(f"redis://127.0.0.1:{free_port()}/0"),
        max_connections=4,
        breaker_probe_interval_seconds=1.0,
        fallback_cache_max_entries=1000,
    )
    client = RedisClient(settings)
    connector = RedisConnector(settings)
    assert await connector.start() is False
    client._connector, client._client = connector, connector.client
    # Warm every code path once so first-use allocations (caches, interned strings) are not counted.
    await calls(client, 0, 200, None)
    try:
        yield client
    finally:
        assert connector.breaker.state is not BreakerState.CLOSED
        await connector.aclose()


async def calls(client: RedisClient, start: int, stop: int, leak: dict[str, str] | None) -> None:
    for i in range(start, stop):
        key = f"poll_results:{i}"
        value = {"poll": i, "counts": [i, i + 1, i + 2]}
        if not await client.cache_set(key, value, ttl=300) and leak is not None:
            leak[key] = repr(value)
        await client.cache_get(key, None)
        await client.get(f"raw:{i}")
        await client.hgetall(f"h:{i}")
        await client.exists(key)


@pytest.mark.limit_memory("1 MB")
async def test_outage_calls_peak_memory_is_bounded(down_client: RedisClient) -> None:
    await calls(down_client, 0, CALLS, None)


@pytest.mark.limit_memory("1 MB")
async def test_canary_unbounded_outage_state_exceeds_the_peak_bound(down_client: RedisClient) -> None:
    leak: dict[str, str] = {}
    await calls(down_client, 0, CALLS, leak)
