"""polly.redis_client keeps upstream's API, encodings, TTLs and fallbacks, on the local Redis."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from polly import redis as polly_redis
from polly.config import RedisSettings, SecretUrl
from polly.errors import RedisError, RedisMisconfiguredError, RedisUnavailableError
from polly.redis_client import RedisClient, close_redis_client, get_redis_client
from polly.stats import BreakerState, RedisStats, registry
from tests.polly.redis_server import own_redis_server

pytestmark = pytest.mark.redis


def settings_for(url: str, **overrides: Any) -> RedisSettings:
    return RedisSettings(url=SecretUrl(url), **overrides)


def address(url: str) -> str:
    """``host:port`` of a Redis URL (the configured test server's, not an assumed default)."""
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    assert parts.port is not None, url
    return f"{parts.hostname}:{parts.port}"


@pytest.fixture(autouse=True)
async def _closed_afterwards() -> AsyncIterator[None]:
    yield
    await close_redis_client()
    await polly_redis.close_redis()


@pytest.fixture
async def client(redis_url: str) -> RedisClient:
    return await get_redis_client(settings_for(redis_url))


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    """A plain redis-py client on the same db, standing in for upstream (and for inspection)."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


async def test_set_get_roundtrip_json_and_scalars(client: RedisClient, raw: redis.Redis) -> None:
    assert await client.set("d", {"a": [1, 2], "b": None})
    assert raw.get("d") == json.dumps({"a": [1, 2], "b": None})
    assert await client.get("d") == {"a": [1, 2], "b": None}
    assert await client.set("l", [1, "x"])
    assert await client.get("l") == [1, "x"]
    assert await client.set("n", 42)
    assert raw.get("n") == "42"
    assert await client.get("n") == 42  # upstream JSON-decodes every value
    assert await client.set("f", 1.5)
    assert await client.get("f") == 1.5
    assert await client.set("s", "plain text")
    assert await client.get("s") == "plain text"
    assert await client.get("missing") is None
    assert await client.get("missing", default="dflt") == "dflt"
    assert raw.ttl("d") == -1


async def test_set_with_ttl_uses_setex(client: RedisClient, raw: redis.Redis) -> None:
    assert await client.set("k", {"x": 1}, ttl=30)
    assert 0 < raw.ttl("k") <= 30
    assert await client.ttl("k") == raw.ttl("k")
    assert await client.set("z", "v", ttl=0)  # upstream: a falsy ttl means no expiry
    assert raw.ttl("z") == -1


async def test_values_written_by_upstream_read_back(client: RedisClient, raw: redis.Redis) -> None:
    # Written with upstream's own command (SETEX), which redis-py types loosely.
    prefs = {"last_server_id": "1", "last_channel_id": "2", "default_timezone": "UTC"}
    raw.execute_command("SETEX", "cache:user_prefs:7", 1800, json.dumps(prefs))  # type: ignore[no-untyped-call]
    raw.execute_command("SETEX", "screenshot_token:abc123", 330, json.dumps({"poll_id": 5}))  # type: ignore[no-untyped-call]
    raw.execute_command("SETEX", "super_admin:dashboard_stats", 60, json.dumps({"polls": 3}))  # type: ignore[no-untyped-call]
    assert await client.cache_get("user_prefs:7") == prefs
    assert await client.get("screenshot_token:abc123") == {"poll_id": 5}
    assert await client.get("super_admin:dashboard_stats") == {"polls": 3}
    raw.hset("h", mapping={"a": json.dumps([1]), "b": "True", "c": "7"})
    assert await client.hgetall("h") == {"a": [1], "b": "True", "c": 7}
    raw.rpush("q", json.dumps({"v": 1}), "word")
    assert await client.lrange("q") == [{"v": 1}, "word"]


async def test_cache_helpers_keep_prefix_and_default_ttl(client: RedisClient, raw: redis.Redis) -> None:
    assert await client.cache_set("poll_results:9", {"0": 3})
    assert raw.get("cache:poll_results:9") == json.dumps({"0": 3})
    assert 3590 < raw.ttl("cache:poll_results:9") <= 3600
    assert await client.cache_set("live_poll_results:9", {"x": 1}, ttl=10)
    assert 0 < raw.ttl("cache:live_poll_results:9") <= 10
    assert await client.cache_get("poll_results:9") == {"0": 3}
    assert await client.cache_delete("poll_results:9") is True
    assert await client.cache_delete("poll_results:9") is False
    assert await client.cache_get("poll_results:9", "gone") == "gone"


async def test_keys_exists_expire_ttl_delete(client: RedisClient, raw: redis.Redis) -> None:
    raw.set("a", "1")
    raw.set("b", "2")
    assert await client.exists("a") is True
    assert await client.exists("nope") is False
    assert await client.ttl("a") == -1
    assert await client.ttl("nope") == -2
    assert await client.expire("a", 100) is True
    assert await client.expire("nope", 100) is False
    assert 0 < raw.ttl("a") <= 100
    assert await client.delete("a", "b", "nope") == 2
    assert await client.delete() == 0


async def test_hashes_encode_like_upstream(client: RedisClient, raw: redis.Redis) -> None:
    assert await client.hset("h", {"d": {"x": 1}, "n": 3, "t": True, "s": "str"}) == 4
    assert raw.hgetall("h") == {"d": '{"x": 1}', "n": "3", "t": "True", "s": "str"}
    assert await client.hget("h", "d") == {"x": 1}
    assert await client.hget("h", "n") == 3
    assert await client.hget("h", "t") == "True"
    assert await client.hget("h", "missing", "dflt") == "dflt"
    assert await client.hgetall("h") == {"d": {"x": 1}, "n": 3, "t": "True", "s": "str"}
    assert await client.hdel("h", "d", "n", "missing") == 2
    assert await client.hgetall("nope") == {}


async def test_lists_encode_like_upstream(client: RedisClient, raw: redis.Redis) -> None:
    assert await client.rpush("l", {"a": 1}, 2) == 2
    assert await client.lpush("l", "first") == 3
    assert raw.lrange("l", 0, -1) == ["first", '{"a": 1}', "2"]
    assert await client.lrange("l") == ["first", {"a": 1}, 2]
    assert await client.lrange("l", 1, 1) == [{"a": 1}]
    assert await client.llen("l") == 3
    assert await client.llen("nope") == 0
    assert await client.lrange("nope") == []


async def test_not_json_is_returned_raw_and_logged_once_per_pattern(
    client: RedisClient, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(20):
        raw.set(f"cache:session:{i}", f"not json {i}")
    raw.set("cache:other:1", "{broken")
    with caplog.at_level(logging.WARNING, logger="polly.redis_breaker"):
        values = [await client.cache_get(f"session:{i}") for i in range(20)]
        assert await client.cache_get("other:1") == "{broken"
    assert values == [f"not json {i}" for i in range(20)]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert "cache:session:*" in logged[0]
    assert "cache:other:*" in logged[1]


async def test_error_replies_answer_with_the_fallback(client: RedisClient, raw: redis.Redis) -> None:
    raw.rpush("a_list", "x")
    assert await client.get("a_list", "dflt") == "dflt"  # WRONGTYPE
    assert await client.hgetall("a_list") == {}
    assert await client.set("b", True) is False  # redis-py refuses bools, as upstream saw
    assert client.is_connected  # an error reply is not an outage


async def test_cache_clear_pattern_scans_and_unlinks_in_batches(
    client: RedisClient, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = raw.pipeline()
    for i in range(1234):
        pipe.set(f"cache:user_polls:{i}:all", "1")
    pipe.set("cache:keep:1", "1")
    pipe.set("user_polls:1:all", "1")  # outside the cache: prefix
    pipe.execute()
    assert client._client is not None
    batches: list[int] = []
    real_unlink = client._client.unlink

    async def spy(*keys: str) -> Any:
        batches.append(len(keys))
        return await real_unlink(*keys)

    monkeypatch.setattr(client._client, "unlink", spy)
    assert await client.cache_clear_pattern("user_polls:*") == 1234
    assert max(batches) <= 500
    assert sum(batches) == 1234
    assert len(batches) == 3
    assert raw.exists("cache:keep:1", "user_polls:1:all") == 2
    assert await client.cache_clear_pattern("user_polls:*") == 0


async def test_concurrent_first_calls_share_one_client_and_pool(redis_url: str) -> None:
    settings = settings_for(redis_url)
    clients = await asyncio.gather(*(get_redis_client(settings) for _ in range(20)))
    assert len({id(c) for c in clients}) == 1
    assert clients[0]._client is not None
    assert polly_redis.current_redis() is not None
    assert clients[0]._client is polly_redis.current_redis().client  # type: ignore[union-attr]
    assert isinstance(clients[0]._client, redis.asyncio.Redis)
    assert clients[0]._client.connection_pool.connection_kwargs["decode_responses"] is True


async def test_one_pool_per_process(redis_url: str) -> None:
    first = await polly_redis.open_redis(settings_for(redis_url))
    assert await polly_redis.open_redis(settings_for(redis_url)) is first
    with pytest.raises(RedisError, match="already open"):
        await polly_redis.open_redis(settings_for(redis_url, max_connections=3))
    await polly_redis.close_redis()
    assert first.closed
    second = await polly_redis.open_redis(settings_for(redis_url))
    assert second is not first


async def test_pool_has_explicit_limits(redis_url: str) -> None:
    s = settings_for(redis_url, max_connections=7, acquire_timeout_seconds=0.5, retry_attempts=4)
    connector = await polly_redis.open_redis(s)
    pool = connector.pool
    assert pool.max_connections == 7
    assert pool.timeout == 0.5
    kwargs = pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == s.socket_connect_timeout_seconds
    assert kwargs["socket_timeout"] == s.socket_timeout_seconds
    assert kwargs["health_check_interval"] == s.health_check_interval_seconds
    assert kwargs["retry"].get_retries() == 4
    assert kwargs["decode_responses"] is True


async def test_pool_exhaustion_times_out_without_opening_the_breaker(redis_url: str) -> None:
    s = settings_for(redis_url, max_connections=1, acquire_timeout_seconds=0.1)
    client = await get_redis_client(s)
    connector = polly_redis.current_redis()
    assert connector is not None
    held = await connector.pool.get_connection()
    try:
        assert await client.get("k", "fallback") == "fallback"
        assert await client.set("k", 1) is False
    finally:
        await connector.pool.release(held)
    stats = connector.stats()
    assert stats.pool.timeouts == 2
    assert stats.breaker is BreakerState.CLOSED
    assert await client.set("k", 1) is True


async def test_stats_registered_while_open(client: RedisClient, redis_url: str) -> None:
    await client.set("k", "v")
    await client.get("k")
    collected = [s for s in registry.collect("redis_pool") if isinstance(s, RedisStats)]
    assert len(collected) == 1
    stats = collected[0]
    assert stats == polly_redis.redis_stats()
    assert stats.pool.name == address(redis_url)
    assert stats.pool.system == "redis"
    assert stats.pool.max_connections == 20
    assert stats.pool.used == 0
    assert stats.pool.idle >= 1
    assert stats.breaker is BreakerState.CLOSED
    assert stats.fallback_cache_size == 1
    await close_redis_client()
    assert registry.collect("redis_pool") == []
    with pytest.raises(RedisUnavailableError, match="not open"):
        polly_redis.redis_stats()


async def test_disabled_redis_answers_with_fallbacks() -> None:
    client = RedisClient(RedisSettings(enabled=False))
    assert await client.connect() is False
    assert client._client is None
    assert await client.set("k", 1) is False
    assert await client.get("k", 5) == 5
    assert await client.ttl("k") == -2
    assert not client.is_connected


async def test_client_settings_default_to_upstream_env(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    client = await get_redis_client()
    assert client.is_connected
    assert await client.set("via_env", 1)


async def test_wrong_db_number_is_a_clear_startup_error(redis_url: str) -> None:
    with pytest.raises(RedisMisconfiguredError, match=r"db number") as info:
        await get_redis_client(settings_for(f"redis://:hunter2@{address(redis_url)}/99"))
    assert "hunter2" not in str(info.value)
    assert f"redis://:***@{address(redis_url)}/99" in str(info.value)
    assert polly_redis.current_redis() is None


async def test_wrong_password_is_a_clear_startup_error() -> None:
    with own_redis_server(password="right-one") as server:
        url = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        with pytest.raises(RedisMisconfiguredError, match="password") as info:
            await get_redis_client(settings_for(url))
        assert "wrong-one" not in str(info.value)
        assert "right-one" not in str(info.value)
        assert f"redis://:***@127.0.0.1:{server.port}/0" in str(info.value)
        with pytest.raises(RedisMisconfiguredError):
            await get_redis_client(RedisSettings(port=server.port, host="127.0.0.1"))
        client = await get_redis_client(settings_for(server.url))
        assert await client.set("k", "v")
