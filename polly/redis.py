"""One Redis connection pool for the process, behind a circuit breaker, with a fallback cache.

:class:`RedisConnector` owns, for the life of the process:

* one :class:`redis.asyncio.BlockingConnectionPool` with an explicit ``max_connections`` and acquire
  timeout, socket connect/read timeouts, a health-check interval and redis-py's own
  :class:`~redis.asyncio.retry.Retry` with exponential backoff and jitter (never redis-py's implicit
  defaults);
* one :class:`redis.asyncio.Redis` client on that pool (``decode_responses=True``, as upstream);
* a :class:`~polly.redis_breaker.CircuitBreaker`: while it is open, :meth:`RedisConnector.run` answers
  with the caller's fallback in microseconds, without touching the network or building anything;
* a bounded, TTL'd cache (cachetools) of recently read and written string values, served while
  Redis is down;
* the counters behind :meth:`RedisConnector.stats` (registered in :data:`polly.stats.registry` under
  kind ``redis_pool`` while open).

:func:`open_redis` / :func:`close_redis` create and close the process's connector exactly once; the
upstream-compatible API lives in :mod:`polly.redis_client`. Recovery needs no restart: a half-open
trial call every ``breaker_probe_interval_seconds``, and :meth:`RedisConnector.probe_loop`, a coroutine
the owner (the task supervisor) runs for the life of the process.

redis-py's native OpenTelemetry metrics (``redis.observability``) stay available: this module only
configures the pool (:mod:`polly.redis_pool`), so an operator may enable them in addition to polly's
own snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from cachetools import TLRUCache
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as LibConnectionError
from redis.exceptions import RedisError as LibRedisError
from redis.exceptions import TimeoutError as LibTimeoutError

from polly.clock import Monotonic, Sleep
from polly.config import RedisSettings
from polly.config_urls import mask, redact_url
from polly.errors import RedisError, RedisMisconfiguredError, RedisUnavailableError
from polly.outages import OutageLog, describe
from polly.redis_breaker import CircuitBreaker
from polly.redis_pool import CLIENT_NAME as CLIENT_NAME  # noqa: PLC0414 - re-exported
from polly.redis_pool import PoolAcquireTimeoutError, build_pool
from polly.stats import BreakerState, PoolStats, RedisStats, registry

logger = logging.getLogger(__name__)

#: Longer values are not kept in the fallback cache (its entry count is bounded, so is its size).
MAX_FALLBACK_VALUE_CHARS = 64 * 1024
#: Distinct (command, error) kinds whose warnings are throttled to one per minute.
MAX_ERROR_LOG_KINDS = 64
ERROR_LOG_WINDOW_SECONDS = 60.0

# Errors meaning "Redis cannot be reached": they count towards opening the breaker.
_UNREACHABLE = (LibConnectionError, LibTimeoutError, OSError)


class _Remembered(NamedTuple):
    raw: str
    ttl_seconds: float


class RedisConnector:
    """The process's Redis: pool, client, breaker, fallback cache and counters.

    ``clock`` (monotonic seconds) drives the breaker and the fallback cache's expiry, ``sleep`` the
    probe loop's waits (a test passes a :class:`~polly.clock.FakeClock`'s methods). Build it with
    :func:`open_redis` in the application; tests and benchmarks may build their own.
    """

    def __init__(
        self, settings: RedisSettings, clock: Monotonic = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self.url_redacted = redact_url(settings.effective_url().get_secret_value())
        self.pool = build_pool(settings)
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=self.pool)
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_probe_interval_seconds, clock
        )
        self._fallback: TLRUCache[str, _Remembered] = TLRUCache(
            maxsize=settings.fallback_cache_max_entries, ttu=self._expires_at, timer=clock
        )
        # the project's one throttled logger: per (command, error type) a line when it starts failing,
        # then at most one summary per window with the count. No end line: such errors (a WRONGTYPE
        # key) come and go between successes; the breaker writes when Redis itself goes and comes back.
        self._error_log = OutageLog(
            logger, window_seconds=ERROR_LOG_WINDOW_SECONDS, max_causes=MAX_ERROR_LOG_KINDS, timer=clock
        )
        # redis-py's own pool name (host:port), so polly's series and redis-py's native ones agree.
        attrs = self.pool.get_connection_count()[0][1]
        self.name = str(attrs.get("db.client.connection.pool.name", "redis"))
        self.errors = 0
        self.fallback_hits = 0
        self.closed = False
        self._unregister: Callable[[], None] | None = None

    def _password(self) -> str | None:
        """The password redis-py sends (from the URL or REDIS_PASSWORD), to mask it in messages."""
        return self.pool.connection_kwargs.get("password")

    def _expires_at(self, _key: str, value: _Remembered, now: float) -> float:
        return now + value.ttl_seconds

    async def start(self) -> bool:
        """Register the stats provider and PING once.

        True when Redis answers. False when it cannot be reached: the breaker starts open and
        recovery works as for any outage. A wrong password or db number raises
        :class:`~polly.errors.RedisMisconfiguredError` (URL redacted) after closing the pool.
        """
        self._unregister = registry.register("redis_pool", self.name, self.stats)
        try:
            await self.client.ping()
        except (AuthenticationError, ResponseError) as err:
            await self.aclose()
            detail = mask(str(err), [self._password()])
            msg = (
                f"Redis at {self.url_redacted} refused polly's settings ({type(err).__name__}: {detail}); "
                "check the password (REDIS_PASSWORD or the URL) and the db number (0 to the server's "
                "`databases` - 1)"
            )
            raise RedisMisconfiguredError(msg) from err
        except (*_UNREACHABLE, LibRedisError) as err:
            self.errors += 1
            self.breaker.record_failure()
            self.breaker.trip()
            logger.warning(
                "Redis at %s unreachable at start (%s: %s); continuing with fallbacks",
                self.url_redacted,
                type(err).__name__,
                err,
            )
            return False
        logger.info(
            "Redis at %s: pool of at most %d connections", self.url_redacted, self.pool.max_connections
        )
        return True

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[Any]], fallback: Any, command: str) -> Any:
        """``await op(client)``, or ``fallback`` when the breaker refuses or the call fails.

        Never raises a Redis or socket error (only cancellation passes through). Unreachable-type
        errors count towards the breaker; an error reply from the server (``WRONGTYPE`` ...) counts
        as Redis answering; pool exhaustion counts as neither.
        """
        if self.closed or not self.breaker.allow():
            self.fallback_hits += 1
            return fallback
        trial = self.breaker.state is BreakerState.HALF_OPEN
        try:
            result = await op(self.client)
        except PoolAcquireTimeoutError as err:
            self._log_error(command, err)
        except _UNREACHABLE as err:
            self.errors += 1
            self.breaker.record_failure()
            logger.debug("Redis %s failed: %s: %s", command, type(err).__name__, err)
        except (LibRedisError, ValueError) as err:
            # The server answered with an error, or the value cannot be encoded/decoded.
            self.errors += 1
            if isinstance(err, ResponseError):
                self.breaker.record_success()
            self._log_error(command, err)
        else:
            self.breaker.record_success()
            return result
        finally:
            if trial:
                self.breaker.release_trial()
        self.fallback_hits += 1
        return fallback

    def _log_error(self, command: str, err: Exception) -> None:
        detail = mask(describe(err), [self._password()])  # an error text may quote the password
        self._error_log.failed(
            f"Redis {command} ({type(err).__name__})",
            err,
            detail=f"{detail} (answered with the fallback)",
            traceback=False,
        )

    # --- fallback cache ------------------------------------------------------------------------------

    def remember(self, key: str, raw: str, ttl_seconds: float | None = None) -> None:
        """Keep ``raw`` (the string Redis holds at ``key``) for reads while Redis is down.

        Kept for ``fallback_cache_ttl_seconds``, or the key's own TTL when shorter; values longer
        than :data:`MAX_FALLBACK_VALUE_CHARS` are not kept.
        """
        if len(raw) > MAX_FALLBACK_VALUE_CHARS:
            self._fallback.pop(key, None)
            return
        ttl = self.settings.fallback_cache_ttl_seconds
        if ttl_seconds is not None and ttl_seconds > 0:
            ttl = min(ttl, ttl_seconds)
        self._fallback[key] = _Remembered(raw, ttl)

    def forget(self, *keys: str) -> None:
        """Drop ``keys`` from the fallback cache (they were written, deleted, or failed to be)."""
        for key in keys:
            self._fallback.pop(key, None)

    def recall(self, key: str) -> str | None:
        """The remembered string at ``key``, or None when unknown or expired."""
        entry = self._fallback.get(key)
        return None if entry is None else entry.raw

    # --- recovery ------------------------------------------------------------------------------------

    async def probe(self) -> bool:
        """PING Redis now; True (and the breaker closed) when it answers. Never raises a Redis error."""
        try:
            await self.client.ping()
        except (*_UNREACHABLE, LibRedisError) as err:
            logger.debug("Redis probe failed: %s: %s", type(err).__name__, err)
            if self.breaker.state is not BreakerState.CLOSED:
                self.breaker.trip()
            return False
        self.breaker.record_success()
        return True

    async def probe_loop(self) -> None:
        """Probe every ``breaker_probe_interval_seconds`` while the breaker is not closed.

        Meant to be run by the owner of background tasks for the life of the process; returns
        once the connector is closed, and stops at once when cancelled.
        """
        while not self.closed:
            await self._sleep(self.settings.breaker_probe_interval_seconds)
            if not self.closed and self.breaker.state is not BreakerState.CLOSED:
                await self.probe()

    # --- stats and lifecycle -------------------------------------------------------------------------

    def stats(self) -> RedisStats:
        """A snapshot from the pool's public ``get_connection_count()`` and polly's counters.

        ``idle`` counts pooled connection objects not in use (after an outage some are disconnected
        and reconnect on next use); ``pending`` callers acquiring a connection; ``timeouts`` acquire
        timeouts; ``errors`` failed operations. Cheap and I/O-free: safe from any thread.
        """
        used = idle = 0
        for count, attrs in self.pool.get_connection_count():
            if attrs.get("db.client.connection.state") == "used":
                used = count
            else:
                idle = count
        pool = PoolStats(
            name=self.name,
            system="redis",
            max_connections=self.pool.max_connections,
            max_idle=self.pool.max_connections,
            used=used,
            idle=idle,
            overflow=0,
            pending=self.pool.acquiring,
            timeouts=self.pool.acquire_timeouts,
            errors=self.errors,
        )
        return RedisStats(
            pool=pool,
            breaker=self.breaker.state,
            breaker_opened=self.breaker.opened,
            fallback_cache_size=len(self._fallback),
            fallback_cache_max=int(self._fallback.maxsize),
            fallback_hits=self.fallback_hits,
        )

    async def aclose(self) -> None:
        """Close the client and the pool (idempotent) and unregister the stats provider."""
        if self.closed:
            return
        self.closed = True
        if self._unregister is not None:
            self._unregister()
        self._fallback.clear()
        await self.client.aclose()
        await self.pool.aclose()


class EventLoopLock:
    """An :class:`asyncio.Lock` per running event loop (a module-level lock outlives its loop)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock


_current: RedisConnector | None = None
_open_lock = EventLoopLock()


async def open_redis(settings: RedisSettings) -> RedisConnector:
    """The process's connector, created and started on the first call (concurrent calls share it).

    Raises :class:`~polly.errors.RedisMisconfiguredError` for a wrong password or db number, and
    :class:`~polly.errors.RedisError` when one is already open with other settings.
    """
    global _current  # noqa: PLW0603 -- the process's one pool is module state by design
    async with _open_lock.get():
        if _current is not None and not _current.closed:
            if _current.settings != settings:
                msg = (
                    f"Redis is already open for {_current.url_redacted} with other settings; "
                    "close it before opening another (one pool per process)"
                )
                raise RedisError(msg)
            return _current
        connector = RedisConnector(settings)
        await connector.start()
        _current = connector
        return connector


async def close_redis() -> None:
    """Close the process's connector, if open. Later :func:`open_redis` calls build a new one."""
    global _current
    async with _open_lock.get():
        connector, _current = _current, None
        if connector is not None:
            await connector.aclose()


def current_redis() -> RedisConnector | None:
    """The open connector of the process, or None."""
    return _current if _current is not None and not _current.closed else None


def redis_stats() -> RedisStats:
    """The snapshot of the process's connector; :class:`RedisUnavailableError` when none is open."""
    connector = current_redis()
    if connector is None:
        msg = "Redis is not open: no pool to describe (open_redis() has not run, or close_redis() has)"
        raise RedisUnavailableError(msg)
    return connector.stats()
