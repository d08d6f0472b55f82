"""Retrying a database operation that failed because the server went away.

Used for idempotent reads (the scheduler's due-poll queries) so a database restart is ridden out with
backoff instead of a crash loop. Together with ``pool_pre_ping`` (a dead pooled connection is replaced
at checkout, before the query), this covers both a restart between queries and one during a query.
Exhaustion (:class:`~polly.errors.PoolExhaustedError`) is never retried: waiting longer for a saturated
pool only adds load.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from polly.errors import DatabaseUnavailableError, PoolExhaustedError

logger = logging.getLogger(__name__)

T = TypeVar("T")

BASE_DELAY_SECONDS = 0.5


def is_transient(err: BaseException) -> bool:
    """True for failures a retry can fix: connection loss, refused connections, server restarts."""
    if isinstance(err, PoolExhaustedError):
        return False
    if isinstance(err, DatabaseUnavailableError | OperationalError | InterfaceError):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


async def retry_with_backoff(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_attempts: int = 5,
    base_delay_seconds: float = BASE_DELAY_SECONDS,
    max_delay_seconds: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Await ``operation()``; on a transient failure wait and try again, at most ``max_attempts`` times.

    The n-th wait is ``jitter() * min(max_delay_seconds, base_delay_seconds * 2**(n-1))`` seconds (full
    jitter, so many clients do not reconnect in step). Non-transient errors propagate at once. After
    the last attempt fails, :class:`DatabaseUnavailableError` is raised from the last error; ``what``
    (which must not contain secrets) names the operation in the message and the logs.
    """
    if max_attempts < 1:
        msg = f"max_attempts must be >= 1, got {max_attempts}"
        raise ValueError(msg)
    last: BaseException | None = None
    waited = 0.0
    for attempt in range(1, max_attempts + 1):
        try:
            return await operation()
        except Exception as err:
            if not is_transient(err):
                raise
            last = err
            if attempt == max_attempts:
                break
            delay = jitter() * min(max_delay_seconds, base_delay_seconds * 2 ** (attempt - 1))
            logger.warning(
                "%s failed (attempt %d of %d: %s); retrying in %.2f s",
                what,
                attempt,
                max_attempts,
                type(err).__name__,
                delay,
            )
            waited += delay
            await sleep(delay)
    msg = f"{what}: still failing after {max_attempts} attempts over {waited:.1f} s of backoff"
    raise DatabaseUnavailableError(msg) from last
