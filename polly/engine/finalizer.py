"""Closed polls' final results: the last embed, the reactions cleared, the optional role ping.

:class:`Finalizer` does it for one scheduler and remembers what could not be done yet: a transient
failure (5xx, transport, 429) is retried on the scheduler's next tick; a 404 is retried with
backoff (2 s doubling to 5 minutes), and only 404s lasting ``orphan_after`` mean the message is
gone. Both are bounded by ``max_pending`` polls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta

from polly.clock import Backoff
from polly.db.poll_rows import PollView
from polly.engine.embeds import poll_embed, results_message
from polly.engine.gateway import AllowedMentions, Gateway
from polly.engine.store import PollStore
from polly.errors import ForbiddenError, NotFoundError, RateLimitedError, ServerError

logger = logging.getLogger("polly.engine.scheduler")

#: Backoff of a final edit that failed with 404: first retry after 2 s, doubling up to 5 minutes.
FINAL_RETRY_BACKOFF = Backoff(initial=2.0, multiplier=2.0, cap=300.0)
FINAL_RETRY_INITIAL_SECONDS = FINAL_RETRY_BACKOFF.initial
FINAL_RETRY_MAX_SECONDS = FINAL_RETRY_BACKOFF.cap


class Finalizer:
    """Final embeds, reaction clearing and close pings, with their retries."""

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        orphan_after: timedelta,
        max_pending: int,
        on_closed: Callable[[int], Awaitable[None]] | None = None,
        on_rate_limited: Callable[[int, RateLimitedError], None] = lambda _channel, _err: None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._monotonic = monotonic
        self._orphan_after = orphan_after
        self._max_pending = max_pending
        self._on_closed = on_closed
        self._on_rate_limited = on_rate_limited
        # Closed polls whose final embed failed -> (ping still due, ping only unless done elsewhere)
        self._pending: dict[int, tuple[bool, bool]] = {}
        # Final edits answered 404: poll id -> (first 404, next try monotonic, failures); bounded as
        # _pending is.
        self._final_gone: dict[int, tuple[datetime, float, int]] = {}

    def pending(self) -> Iterator[tuple[int, bool, bool]]:
        """``(poll id, ping, unless_done)`` of every poll whose final edit is still to do."""
        return iter([(p, ping, unless) for p, (ping, unless) in self._pending.items()])

    def due(self, poll_id: int) -> bool:
        gone = self._final_gone.get(poll_id)
        return gone is None or gone[1] <= self._monotonic()

    def forget(self, poll_id: int) -> None:
        """The poll is no longer closed (reopened, deleted): nothing is left to finalize."""
        self._pending.pop(poll_id, None)
        self._final_gone.pop(poll_id, None)

    async def finalize(self, poll: PollView, *, ping: bool, unless_done: bool = False) -> None:
        """Show the final results and clear the reactions; idempotent except the optional role ping.

        ``unless_done`` is for a poll closed elsewhere, which every replica following it sees: the
        ping goes only from a replica that still finds the bot's reactions on the message (the
        first to finalize clears them), so replicas ping once, short of two finalizing within
        the same round trip.
        """
        if self._on_closed is not None:
            await self._on_closed(poll.id)
        if poll.message_id is None:
            return
        results, voters = await self._store.results(poll.id)
        self._pending.pop(poll.id, None)
        try:
            if ping and unless_done:
                message = await self._gateway.fetch_message(poll.channel_id, poll.message_id)
                ping, unless_done = any(r.me for r in message.reactions), False
            await self._gateway.edit_message(
                poll.channel_id, poll.message_id, embed=poll_embed(poll, results, closed=True, voters=voters)
            )
            await self._gateway.clear_reactions(poll.channel_id, poll.message_id)
        except (RateLimitedError, ServerError) as err:
            # Transient: the final embed is shown on a later tick (bounded by the polls followed).
            if isinstance(err, RateLimitedError):
                self._on_rate_limited(poll.channel_id, err)
            if len(self._pending) < self._max_pending:
                self._pending[poll.id] = (ping, unless_done)
            return
        except NotFoundError:
            if self._final_not_found(poll.id, ping=ping, unless_done=unless_done):
                return
        except ForbiddenError as err:
            logger.warning("poll %s: cannot edit or clear its message: %s", poll.id, err)
        else:
            self._final_gone.pop(poll.id, None)
        if ping and poll.ping_role_enabled and poll.ping_role_on_close and poll.ping_role_id is not None:
            text = results_message(poll, results)
            try:
                await self._gateway.send_message(
                    poll.channel_id,
                    content=f"<@&{poll.ping_role_id}> {text}",
                    allowed_mentions=AllowedMentions(roles=(poll.ping_role_id,)),
                )
            except ForbiddenError:
                await self._gateway.send_message(poll.channel_id, content=text)

    def _final_not_found(self, poll_id: int, *, ping: bool, unless_done: bool) -> bool:
        """A 404 on the final edit: ``True`` while it is retried (with backoff), ``False`` once 404s
        have lasted ``orphan_after`` and the message counts as gone."""
        now = self._clock()
        first, _due, failures = self._final_gone.get(poll_id, (now, 0.0, 0))
        if now - first < self._orphan_after and len(self._pending) < self._max_pending:
            delay = FINAL_RETRY_BACKOFF.delay(failures + 1)
            self._final_gone[poll_id] = (first, self._monotonic() + delay, failures + 1)
            self._pending[poll_id] = (ping, unless_done)
            if failures == 0:
                logger.info(
                    "poll %s: its message answered 404 to the final edit; retried with backoff", poll_id
                )
            return True
        self._final_gone.pop(poll_id, None)
        logger.warning(
            "poll %s: its message is gone (404 for %s); closed without editing it", poll_id, now - first
        )
        return False
