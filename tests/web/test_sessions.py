"""Dashboard sessions: the Discord access token in Redis (encrypted, under upstream's
``cache:session:{id}`` key), so a restarted dashboard keeps its members signed in and a sign-out ends
the session everywhere; without Redis, a restart signs members out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from polly.config import load_settings
from polly.redis import RedisConnector
from polly.web.sessions import KEY_PREFIX, RECHECK_SECONDS, SessionTokens
from tests.web.support import World, csrf_of, dashboard, sign_in, web_settings


@pytest.fixture
async def connector(redis_url: str, tmp_path: Path) -> AsyncIterator[RedisConnector]:
    settings = load_settings(environ={"DISCORD_TOKEN": "x", "REDIS_URL": redis_url}, cwd=tmp_path)
    redis = RedisConnector(settings.redis)
    assert await redis.start()
    try:
        yield redis
    finally:
        await redis.aclose()


def _cookies(client: httpx.AsyncClient) -> dict[str, str]:
    return {c.name: c.value or "" for c in client.cookies.jar}


async def test_a_session_survives_a_restart_and_sign_out_ends_it_everywhere(
    world: World, sqlite_url: str, tmp_path: Path, connector: RedisConnector, redis_url: str
) -> None:
    settings = web_settings(world.discord, sqlite_url, tmp_path)
    async with dashboard(settings, connector) as (_, first, _db):
        await sign_in(first, world.discord, world.manager)
        assert (await first.get("/servers")).status_code == 200
        cookies = _cookies(first)
    keys = redis_sync.Redis.from_url(redis_url).keys(f"{KEY_PREFIX}*")
    assert len(keys) == 1
    stored = redis_sync.Redis.from_url(redis_url).get(keys[0])
    assert stored is not None
    assert world.discord.oauth.client_secret.encode() not in stored
    assert world.discord.oauth.tokens
    for token in world.discord.oauth.tokens:
        assert token.encode() not in stored  # encrypted at rest
    async with dashboard(settings, connector) as (_, again, _db):  # the restarted process
        again.cookies.update(cookies)
        page = await again.get("/servers")
        assert page.status_code == 200, page.headers
        assert world.discord.guild.name in page.text
        out = await again.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
    assert redis_sync.Redis.from_url(redis_url).keys(f"{KEY_PREFIX}*") == []
    async with dashboard(settings, connector) as (_, third, _db):
        third.cookies.update(cookies)  # the old cookie, replayed after sign-out
        assert (await third.get("/servers")).headers["location"] == "/"


async def test_without_redis_a_restart_signs_members_out(
    world: World, sqlite_url: str, tmp_path: Path
) -> None:
    settings = web_settings(world.discord, sqlite_url, tmp_path)
    async with dashboard(settings) as (_, first, _db):
        await sign_in(first, world.discord, world.manager)
        cookies = _cookies(first)
    async with dashboard(settings) as (_, again, _db):
        again.cookies.update(cookies)
        assert (await again.get("/servers")).headers["location"] == "/"


class _FakeRedis:
    """The connector's ``run`` contract: the op's result, or the fallback when down."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.down = False
        self.calls = 0

    async def run(self, op: Any, fallback: Any, command: str) -> Any:
        self.calls += 1
        if self.down:
            return fallback
        return await op(self)

    async def set(self, key: str, value: str, ex: int) -> None:
        self.data[key] = value.encode()

    async def get(self, key: str) -> Any:
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


async def test_a_known_token_is_rechecked_after_the_interval_and_kept_while_redis_is_down() -> None:
    now = [0.0]
    redis = _FakeRedis()
    tokens = SessionTokens("k" * 32, 3600, redis, clock=lambda: now[0])
    await tokens.put("sid", "tok")
    calls = redis.calls
    assert await tokens.get("sid") == "tok"
    assert redis.calls == calls  # fresh: no round trip
    now[0] += RECHECK_SECONDS + 1
    redis.down = True
    assert await tokens.get("sid") == "tok"  # Redis down: the known token stands
    redis.down = False
    del redis.data[KEY_PREFIX + "sid"]  # signed out elsewhere
    assert await tokens.get("sid") is None
    assert await tokens.get("sid") is None


async def test_a_value_under_another_key_or_tampered_is_no_session() -> None:
    redis = _FakeRedis()
    await SessionTokens("first-secret-key-0123456789", 3600, redis).put("sid", "tok")
    assert await SessionTokens("other-secret-key-0123456789", 3600, redis).get("sid") is None
    sealed = redis.data[KEY_PREFIX + "sid"]
    redis.data[KEY_PREFIX + "sid"] = sealed[:-4] + b"AAAA"
    assert await SessionTokens("first-secret-key-0123456789", 3600, redis).get("sid") is None
    redis.data[KEY_PREFIX + "sid"] = b'{"user_id": "1"}'  # upstream's own session value
    assert await SessionTokens("first-secret-key-0123456789", 3600, redis).get("sid") is None


async def test_the_local_front_is_bounded() -> None:
    tokens = SessionTokens("k" * 32, 3600, None, max_local=5)
    for i in range(50):
        await tokens.put(f"s{i}", "t")
    assert len(tokens) == 5
    assert "t" not in repr(tokens)
