"""Retrying a database operation that failed because the server went away.

Used for idempotent reads (the scheduler's due-poll queries) so a database restart is ridden out with
backoff instead of a crash loop. Together with ``pool_pre_ping`` (a dead pooled connection is replaced
at checkout, before the query), this covers both a restart between queries and one during a query.
Exhaustion (:class:`~polly.errors.PoolExhaustedError`) is never retried: waiting longer for a saturated
pool only adds load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from polly.clock import Backoff, Jitter, Sleep
from polly.errors import DatabaseUnavailableError, PoolExhaustedError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Waits between attempts of a read: 0.5 s doubling up to 30 s, with full jitter (anywhere in
#: ``(0, wait]``) so many clients do not reconnect in step.
READ_RETRY_BACKOFF = Backoff(initial=0.5, multiplier=2.0, cap=30.0, jitter=1.0)


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
    backoff: Backoff = READ_RETRY_BACKOFF,
    max_delay_seconds: float | None = None,
    sleep: Sleep = asyncio.sleep,
    rng: Jitter | None = None,
) -> T:
    """Await ``operation()``; on a transient failure wait and try again, at most ``max_attempts`` times.

    The n-th wait is ``backoff.delay(n, rng)`` (``max_delay_seconds``, when given, replaces the
    backoff's cap: the ``connect_retry_max_seconds`` setting). ``sleep`` waits (a
    :class:`~polly.clock.Clock`'s ``sleep`` in tests). Non-transient errors propagate at once. After
    the last attempt fails, :class:`DatabaseUnavailableError` is raised from the last error; ``what``
    (which must not contain secrets) names the operation in the message and the logs.
    """
    if max_attempts < 1:
        msg = f"max_attempts must be >= 1, got {max_attempts}"
        raise ValueError(msg)
    if max_delay_seconds is not None:
        cap = max_delay_seconds  # every wait is at most the cap, the first one included
        backoff = dataclasses.replace(backoff, initial=min(backoff.initial, cap), cap=cap)
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
            delay = backoff.delay(attempt, rng)
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
