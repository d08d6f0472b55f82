"""Upstream Polly's ``polly.redis_client`` API, on polly's one pool and circuit breaker.

Same names, signatures, encodings and fallbacks as upstream, so upstream modules and the data a
deployment already holds in Redis keep working:

* ``set``/``hset``/``lpush``/``rpush`` store a dict or list as ``json.dumps(value)``; ``set`` passes
  other values to redis-py as they are, ``hset``/``lpush``/``rpush`` store ``str(value)``;
  a truthy ``ttl`` sets the expiry (``SET ... EX``, what upstream's ``SETEX`` stores);
* ``get``/``hget``/``hgetall``/``lrange`` JSON-decode each value and return the raw string when it is
  not JSON (logged once per key pattern, not per call);
* ``cache_set``/``cache_get``/``cache_delete``/``cache_clear_pattern`` prefix keys with ``cache:``;
  ``cache_set``'s default TTL is 3600 s.

When Redis is unreachable (or the breaker is open) each method returns upstream's fallback: ``set``,
``exists``, ``expire``, ``cache_set``, ``cache_delete`` → ``False``; ``get``/``hget``/``cache_get`` →
the remembered value, else ``default``; ``delete``, ``hset``, ``hdel``, ``lpush``, ``rpush``, ``llen``,
``cache_clear_pattern`` → ``0``; ``ttl`` → ``-2``; ``hgetall`` → ``{}``; ``lrange`` → ``[]``.

Unlike upstream, nothing is rebuilt per call while Redis is down, and a lost connection is noticed.
A wrong password or db number raises :class:`~polly.errors.RedisMisconfiguredError` from
:meth:`RedisClient.connect` (and so from :func:`get_redis_client`).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from polly.config import RedisSettings, load_settings
from polly.redis import EventLoopLock, RedisConnector, close_redis, current_redis, open_redis
from polly.redis_breaker import KeyPatternLog
from polly.stats import BreakerState

#: ``SCAN ... COUNT`` hint and the largest ``UNLINK`` of :meth:`RedisClient.cache_clear_pattern`.
SCAN_COUNT = 500
UNLINK_BATCH = 500

_NOT_READ = object()


def _encode_json(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _encode_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _stored_text(value: Any) -> str | None:
    """The string Redis will hold for ``value`` as redis-py encodes it, or None when unsure."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return None


class RedisClient:
    """Upstream's Redis wrapper. ``_client`` is the :class:`redis.asyncio.Redis` (``decode_responses``)
    on the process's pool once connected, None before.

    ``settings`` defaults to ``load_settings().redis`` (upstream's ``REDIS_*`` variables). Calls made
    before :meth:`connect` connect first, as upstream; after :meth:`disconnect` they return their
    fallback until :meth:`connect` is called again.
    """

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self._settings = settings
        self._connector: RedisConnector | None = None
        self._client: aioredis.Redis | None = None
        self._disconnected = False
        self._decode_log = KeyPatternLog()

    async def connect(self) -> bool:
        """Open (or join) the process's pool; True when Redis answered.

        False when Redis is disabled or unreachable (calls then answer with fallbacks and recover on
        their own). Raises :class:`~polly.errors.RedisMisconfiguredError` for a wrong password or db.
        """
        settings = self._settings if self._settings is not None else load_settings().redis
        self._disconnected = False
        if not settings.enabled:
            return False
        self._connector = await open_redis(settings)
        self._client = self._connector.client
        return self._connector.breaker.state is BreakerState.CLOSED

    async def disconnect(self) -> None:
        """Close the process's pool (once); later calls return their fallback."""
        connector, self._connector, self._client = self._connector, None, None
        self._disconnected = True
        if connector is not None and connector is current_redis():
            await close_redis()
        elif connector is not None:
            await connector.aclose()

    @property
    def is_connected(self) -> bool:
        """Connected and the breaker closed (upstream never noticed a connection lost at runtime)."""
        connector = self._connector
        return (
            connector is not None and not connector.closed and connector.breaker.state is BreakerState.CLOSED
        )

    async def _ready(self) -> RedisConnector | None:
        if self._connector is None and not self._disconnected:
            await self.connect()
        connector = self._connector
        return connector if connector is not None and not connector.closed else None

    async def _run(self, command: str, op: Any, fallback: Any) -> Any:
        connector = await self._ready()
        if connector is None:
            return fallback
        return await connector.run(op, fallback, command)

    def _decode(self, key: str, raw: Any) -> Any:
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            self._decode_log.report(key, "a value is not JSON; returned as the raw string")
            return raw

    # --- strings -------------------------------------------------------------------------------------

    async def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        """Store ``value`` (dict/list as JSON), expiring after ``ttl`` seconds when ``ttl`` is truthy."""
        encoded = _encode_json(value)
        if ttl:
            ok = bool(await self._run("SET EX", lambda c: c.set(key, encoded, ex=ttl), fallback=False))
        else:
            ok = bool(await self._run("SET", lambda c: c.set(key, encoded), fallback=False))
        connector = self._connector
        if connector is not None:
            text = _stored_text(encoded)
            if ok and text is not None:
                connector.remember(key, text, ttl or None)
            else:
                connector.forget(key)
        return ok

    async def get(self, key: str, default: Any = None) -> Any:
        """The JSON-decoded value (raw string when not JSON), or ``default`` when missing.

        While Redis is down, the value last read or written here within the fallback TTL.
        """
        connector = await self._ready()
        if connector is None:
            return default
        raw = await connector.run(lambda c: c.get(key), _NOT_READ, "GET")
        if raw is _NOT_READ:
            raw = connector.recall(key)
        elif raw is None:
            connector.forget(key)
        else:
            connector.remember(key, raw)
        return default if raw is None else self._decode(key, raw)

    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; the number deleted."""
        if not keys:
            return 0
        if self._connector is not None:
            self._connector.forget(*keys)
        return int(await self._run("DEL", lambda c: c.delete(*keys), 0))

    async def exists(self, key: str) -> bool:
        return bool(await self._run("EXISTS", lambda c: c.exists(key), 0))

    async def expire(self, key: str, ttl: int) -> bool:
        """Set ``key``'s TTL in seconds; False when the key does not exist."""
        return bool(await self._run("EXPIRE", lambda c: c.expire(key, ttl), fallback=False))

    async def ttl(self, key: str) -> int:
        """Seconds left; -1 without expiry, -2 when the key does not exist (or Redis is down)."""
        return int(await self._run("TTL", lambda c: c.ttl(key), -2))

    # --- hashes --------------------------------------------------------------------------------------

    async def hset(self, name: str, mapping: dict[str, Any]) -> int:
        """Set hash fields (dict/list values as JSON, others ``str()``); the number of new fields."""
        encoded = {field: _encode_text(value) for field, value in mapping.items()}
        return int(await self._run("HSET", lambda c: c.hset(name, mapping=encoded), 0))

    async def hget(self, name: str, key: str, default: Any = None) -> Any:
        raw = await self._run("HGET", lambda c: c.hget(name, key), None)
        return default if raw is None else self._decode(name, raw)

    async def hgetall(self, name: str) -> dict[str, Any]:
        raw: dict[str, Any] = await self._run("HGETALL", lambda c: c.hgetall(name), {})
        return {field: self._decode(name, value) for field, value in raw.items()}

    async def hdel(self, name: str, *keys: str) -> int:
        return int(await self._run("HDEL", lambda c: c.hdel(name, *keys), 0))

    # --- lists ---------------------------------------------------------------------------------------

    async def lpush(self, name: str, *values: Any) -> int:
        """Push to the head (dict/list values as JSON, others ``str()``); the new length."""
        encoded = [_encode_text(v) for v in values]
        return int(await self._run("LPUSH", lambda c: c.lpush(name, *encoded), 0))

    async def rpush(self, name: str, *values: Any) -> int:
        """Push to the tail (dict/list values as JSON, others ``str()``); the new length."""
        encoded = [_encode_text(v) for v in values]
        return int(await self._run("RPUSH", lambda c: c.rpush(name, *encoded), 0))

    async def lrange(self, name: str, start: int = 0, end: int = -1) -> list[Any]:
        raw: list[Any] = await self._run("LRANGE", lambda c: c.lrange(name, start, end), [])
        return [self._decode(name, value) for value in raw]

    async def llen(self, name: str) -> int:
        return int(await self._run("LLEN", lambda c: c.llen(name), 0))

    # --- the cache: prefix -------------------------------------------------------------------------

    async def cache_set(self, key: str, value: Any, ttl: int = 3600) -> bool:
        """``set("cache:" + key, value, ttl)``."""
        return await self.set(f"cache:{key}", value, ttl)

    async def cache_get(self, key: str, default: Any = None) -> Any:
        """``get("cache:" + key, default)``."""
        return await self.get(f"cache:{key}", default)

    async def cache_delete(self, key: str) -> bool:
        """``delete("cache:" + key)``; True when the key existed."""
        return bool(await self.delete(f"cache:{key}"))

    async def cache_clear_pattern(self, pattern: str) -> int:
        """Delete every key matching ``cache:{pattern}``; the number deleted.

        Walks the keyspace with ``SCAN`` (``COUNT`` :data:`SCAN_COUNT`) and deletes in ``UNLINK``
        batches of at most :data:`UNLINK_BATCH`, so neither Redis nor this process holds the whole
        match at once. O(keyspace): for administration, never per request. When Redis fails midway,
        the keys already deleted are counted.
        """
        connector = await self._ready()
        if connector is None:
            return 0
        deleted = 0

        async def unlink(client: aioredis.Redis, batch: list[str]) -> None:
            nonlocal deleted
            connector.forget(*batch)
            deleted += int(await client.unlink(*batch))
            batch.clear()

        async def clear(client: aioredis.Redis) -> int:
            batch: list[str] = []
            async for key in client.scan_iter(match=f"cache:{pattern}", count=SCAN_COUNT):
                batch.append(key)
                if len(batch) >= UNLINK_BATCH:
                    await unlink(client, batch)
            if batch:
                await unlink(client, batch)
            return deleted

        await connector.run(clear, 0, "cache_clear_pattern")
        return deleted


_redis_client: RedisClient | None = None
_first_call_lock = EventLoopLock()


async def get_redis_client(settings: RedisSettings | None = None) -> RedisClient:
    """The process's connected :class:`RedisClient`; concurrent first calls share one.

    ``settings`` (default ``load_settings().redis``) is used by the call that creates it.
    """
    global _redis_client  # noqa: PLW0603 -- upstream's module-level singleton, kept for compatibility
    if _redis_client is not None:
        return _redis_client
    async with _first_call_lock.get():
        if _redis_client is None:
            client = RedisClient(settings)
            await client.connect()
            _redis_client = client
    return _redis_client


async def close_redis_client() -> None:
    """Close the process's client and its pool; the next :func:`get_redis_client` builds anew."""
    global _redis_client
    client, _redis_client = _redis_client, None
    if client is not None:
        await client.disconnect()
