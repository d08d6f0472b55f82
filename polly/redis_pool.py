"""The process's Redis connection pool: every limit explicit, and the counters redis-py keeps private.

:func:`build_pool` builds :class:`LimitedBlockingConnectionPool` (redis-py's blocking pool, counting
callers waiting to acquire and acquire timeouts) with an explicit ``max_connections`` and acquire
timeout, socket connect/read timeouts, a health-check interval and redis-py's own
:class:`~redis.asyncio.retry.Retry` with exponential backoff and jitter. :class:`~polly.redis.RedisConnector`
owns the one pool of a process.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as LibConnectionError

from polly.config import RedisSettings
from polly.config_urls import redact_url
from polly.errors import RedisMisconfiguredError, RedisPoolExhaustedError

#: ``CLIENT SETNAME`` of every pooled connection, so ``CLIENT LIST`` shows polly's connections.
CLIENT_NAME = "polly"
#: Backoff of redis-py's retry: ``min(cap, random() * base * 2**failures)`` seconds.
RETRY_BACKOFF_BASE_SECONDS = 0.05
RETRY_BACKOFF_CAP_SECONDS = 1.0


class PoolAcquireTimeoutError(LibConnectionError, RedisPoolExhaustedError):
    """No pooled connection became free within the acquire timeout.

    Both polly's :class:`~polly.errors.RedisPoolExhaustedError` and a redis-py ``ConnectionError``
    (code using ``RedisClient._client`` directly keeps catching redis-py's type). polly counts it as
    exhaustion, not as Redis being down.
    """


class LimitedBlockingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool plus two counters it does not expose publicly.

    ``acquiring``: callers inside :meth:`get_connection` now (waiting for a free slot, or for their
    connection to connect). ``acquire_timeouts``: cumulative acquire timeouts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquiring = 0
        self.acquire_timeouts = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.acquiring += 1
        try:
            # redis-py leaves get_connection unannotated (its deprecation decorator).
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except LibConnectionError as err:
            if not isinstance(err.__cause__, TimeoutError):
                raise
            self.acquire_timeouts += 1
            msg = (
                f"no Redis connection free within the acquire timeout of {self.timeout:g} s "
                f"(max_connections={self.max_connections})"
            )
            raise PoolAcquireTimeoutError(msg) from err
        finally:
            self.acquiring -= 1


def build_pool(settings: RedisSettings) -> LimitedBlockingConnectionPool:
    """The pool for ``settings.effective_url()``, every limit explicit.

    Raises :class:`~polly.errors.RedisMisconfiguredError` (URL redacted) for a URL redis-py rejects.
    """
    url = settings.effective_url().get_secret_value()
    retry = Retry(
        ExponentialWithJitterBackoff(cap=RETRY_BACKOFF_CAP_SECONDS, base=RETRY_BACKOFF_BASE_SECONDS),
        settings.retry_attempts,
    )
    try:
        return LimitedBlockingConnectionPool.from_url(
            url,
            max_connections=settings.max_connections,
            timeout=settings.acquire_timeout_seconds,
            socket_connect_timeout=settings.socket_connect_timeout_seconds,
            socket_timeout=settings.socket_timeout_seconds,
            health_check_interval=settings.health_check_interval_seconds,
            retry=retry,
            decode_responses=True,
            client_name=CLIENT_NAME,
        )
    except ValueError as err:
        msg = f"Redis URL {redact_url(url)} cannot be used: {err}"
        raise RedisMisconfiguredError(msg) from err
