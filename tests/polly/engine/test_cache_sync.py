"""The engine deletes upstream's cached poll results when votes change and when a poll closes."""

from __future__ import annotations

import redis.asyncio as aioredis

from polly.config import load_settings
from polly.engine.cache_sync import POLL_CACHE_KEYS, PollCacheInvalidator
from polly.engine.service import Engine
from polly.redis import close_redis, open_redis
from tests.polly.engine.harness import USER, harness


async def test_votes_and_closing_invalidate_upstreams_result_caches(sqlite_url: str, redis_url: str) -> None:
    connector = await open_redis(load_settings(environ={"REDIS_URL": redis_url}).redis)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        invalidate = PollCacheInvalidator(connector)
        async with harness(sqlite_url, embed_update_interval_seconds=0.1) as h:
            engine = Engine(h.settings, h.database, h.sandbox, clock=h.clock, on_poll_changed=invalidate)
            poll_id = await h.add_poll()
            await engine.scheduler.tick()
            keys = [f"cache:{name}:{poll_id}" for name in POLL_CACHE_KEYS]
            other = f"cache:poll_results:{poll_id + 1000}"
            for key in (*keys, other):
                await raw.set(key, '{"stale": true}', ex=300)
            h.sandbox.user_add_reaction(await h.message_of(poll_id), USER, "🇦")
            await h.drain(engine)
            await engine.embeds.flush_due()
            assert await raw.exists(*keys) == 0
            assert await raw.exists(other) == 1  # only the changed poll's keys
            for key in keys:
                await raw.set(key, "{}", ex=300)
            h.clock.advance(hours=2)
            await engine.scheduler.tick()  # closes it
            assert await raw.exists(*keys) == 0
            assert invalidate.invalidations == 2
    finally:
        await raw.aclose()
        await close_redis()
