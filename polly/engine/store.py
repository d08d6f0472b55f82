"""The engine's database operations: short transactions, conditional state changes, idempotent votes.

Every state change is one of the poll state machine's conditional ``UPDATE`` statements
(:mod:`polly.db.transitions`, shared with ``polly poll``), whose row count says whether *this*
caller made it, so two replicas on one database never perform a transition twice. While a replica
posts a poll, ``message_id`` holds a claim token (``claim:<replica>:<epoch seconds>``); a claim older
than the lease is taken over by the next tick, so a crash between "claimed" and "posted" is finished
by someone. Rows are decoded by :mod:`polly.db.poll_rows`; corrupt ones are skipped by the tolerant
reader of :mod:`polly.db.queries`.

Votes keep upstream's schema (no unique constraint): uniqueness per (poll, user, option) is enforced
by :mod:`polly.engine.vote_batch`, which reads and writes a batch of reactions in one transaction
that first locks the poll rows (``SELECT … FOR UPDATE`` on PostgreSQL and MariaDB; SQLite
serialises writers itself, and :class:`PollStore` retries a transaction that lost a write race).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from polly.clock import Backoff
from polly.db import transitions
from polly.db.models import Poll, Vote
from polly.db.poll_rows import PollView, load_poll
from polly.db.queries import load_tolerant
from polly.db.transitions import CLAIMED, Transition, claim_time, claim_token
from polly.engine.vote_batch import VoteAction, VoteCommand, VoteOutcome, apply_batch

__all__ = ["PollStore", "VoteAction", "VoteCommand", "VoteOutcome", "claim_time", "claim_token"]

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
_WRITE_RETRIES = 4
#: waits between tries of a write that lost a lock race: 10 ms doubling
WRITE_RETRY_BACKOFF = Backoff(0.01, 2.0, cap=0.01 * 2 ** (_WRITE_RETRIES - 2))


class PollStore:
    """Database access for the scheduler, the vote path and the reconciler."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def _retrying(self, work: Callable[[AsyncSession], object]) -> object:
        for attempt in range(_WRITE_RETRIES):
            try:
                async with self._sessions() as session:
                    return await work(session)  # type: ignore[misc]
            except OperationalError as err:
                # SQLite answers a lost write race with "database is locked", a server a lock-order
                # clash between replicas with a deadlock; either way the whole unit is tried again.
                text = str(err).lower()
                if attempt == _WRITE_RETRIES - 1 or ("locked" not in text and "deadlock" not in text):
                    raise
                await asyncio.sleep(WRITE_RETRY_BACKOFF.delay(attempt + 1))
        msg = "unreachable: the last attempt re-raises"
        raise AssertionError(msg)  # pragma: no cover

    # --- reading ------------------------------------------------------------------------------

    async def ids(self, *conditions: object, limit: int) -> list[int]:
        async with self._sessions() as session:
            stmt = select(Poll.id).where(*conditions).order_by(Poll.id).limit(limit)  # type: ignore[arg-type]
            return list((await session.scalars(stmt)).all())

    async def due_to_open(self, now: datetime, limit: int) -> list[int]:
        """Scheduled polls whose open time has come (or that open immediately), overdue ones included."""
        return await self.ids(
            Poll.status == "scheduled",
            or_(Poll.open_time <= now, Poll.open_immediately.is_(True)),
            limit=limit,
        )

    async def due_to_close(self, now: datetime, limit: int) -> list[int]:
        """Active polls whose close time has passed."""
        return await self.ids(Poll.status == "active", Poll.close_time <= now, limit=limit)

    async def stale_claims(self, limit: int) -> list[tuple[int, str]]:
        """Active polls still carrying a claim token (an open that may have been interrupted)."""
        async with self._sessions() as session:
            stmt = (
                select(Poll.id, Poll.message_id)
                .where(Poll.status == "active", CLAIMED)
                .order_by(Poll.id)
                .limit(limit)
            )
            return [(row.id, str(row.message_id)) for row in await session.execute(stmt)]

    async def view(self, poll_id: int) -> PollView | None:
        """The poll as a view; ``None`` if it no longer exists.

        Raises :class:`~polly.errors.CorruptPollError` for a row that cannot be loaded or decoded.
        """
        async with self._sessions() as session:
            found = await session.run_sync(load_poll, poll_id)
            return None if found is None else found.view

    async def views(self, *conditions: object, limit: int) -> AsyncIterator[PollView]:
        """Views of matching polls; a corrupt row is logged with its id and skipped."""
        stmt = select(Poll.id).where(*conditions).order_by(Poll.id).limit(limit)  # type: ignore[arg-type]
        async with self._sessions() as session:
            ids = list(await session.scalars(stmt))
            decoded = await session.run_sync(load_tolerant, ids)
        for found in decoded:
            yield found.view

    async def results(self, poll_id: int) -> tuple[dict[int, int], int]:
        """Votes per option index and the number of distinct voters."""
        async with self._sessions() as session:
            counts = await session.execute(
                select(Vote.option_index, func.count())
                .where(Vote.poll_id == poll_id)
                .group_by(Vote.option_index)
            )
            voters = await session.scalar(
                select(func.count(func.distinct(Vote.user_id))).where(Vote.poll_id == poll_id)
            )
        return {int(i): int(n) for i, n in counts}, int(voters or 0)

    # --- transitions --------------------------------------------------------------------------

    async def _apply(self, transition: Transition) -> bool:
        async def work(session: AsyncSession) -> bool:
            return await transitions.applied(session, transition)

        return bool(await self._retrying(work))

    async def claim_open(self, poll_id: int, token: str) -> bool:
        """``scheduled → active`` with ``message_id`` = ``token``; ``True`` for the caller that did it."""
        return await self._apply(transitions.claim_open(poll_id, token))

    async def reclaim(self, poll_id: int, old_token: str, new_token: str) -> bool:
        """Take over an interrupted open: replace ``old_token`` with ``new_token`` if nobody else did."""
        return await self._apply(transitions.reclaim(poll_id, old_token, new_token))

    async def finish_open(self, poll_id: int, token: str, message_id: int) -> bool:
        """Store the posted message's id in place of our claim (or on a poll closed meanwhile)."""
        return await self._apply(transitions.finish_open(poll_id, token, message_id))

    async def close(self, poll_id: int, *, from_statuses: Sequence[str] = ("active",)) -> bool:
        """``active → closed`` (or from ``from_statuses``); ``True`` only for the caller that closed it.

        A claim is released (see :mod:`polly.db.transitions` for the one meaning of close).
        """
        return await self._apply(transitions.close(poll_id, from_statuses))

    # --- votes --------------------------------------------------------------------------------

    async def apply_reaction(
        self, message_id: int, user_id: int, emoji: str, *, kind: Literal["add", "remove"], now: datetime,
        reconcile: bool = False,
    ) -> VoteOutcome:  # fmt: skip
        """Turn one reaction into a vote change, idempotently (a batch of one, see :mod:`vote_batch`).

        Single choice: an add replaces the user's vote (``created``/``updated``/``already_recorded``).
        Multiple choice: an add inserts the (user, option) vote if absent and the user is under
        ``max_choices`` (else ``rejected_max_choices``); a remove deletes it, but only where the
        reaction is the user's own (polls that keep reactions: multiple choice, not anonymous).
        ``reconcile=True`` only ever adds: a single-choice user who already voted keeps their vote.
        Raises :class:`CorruptPollError` for a corrupt poll row.
        """
        (outcome,) = await self.apply_votes(
            [VoteCommand(message_id, user_id, emoji, kind, reconcile=reconcile)], now=now
        )
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def apply_votes(self, commands: Sequence[VoteCommand], *, now: datetime) -> list[VoteOutcome]:
        """Apply ``commands`` in order in one transaction (:func:`~polly.engine.vote_batch.apply_batch`),
        retried as a whole when SQLite reports a lost write race or a server a deadlock."""

        async def work(session: AsyncSession) -> list[VoteOutcome]:
            return await apply_batch(session, commands, now=now)

        outcomes = await self._retrying(work)
        assert isinstance(outcomes, list)
        return outcomes

    async def votes_by_user(self, poll_id: int) -> dict[int, set[int]]:
        """The poll's votes: user id → option indexes (a non-numeric user id is skipped)."""
        return (await self.votes_with_times(poll_id))[0]

    async def votes_with_times(self, poll_id: int) -> tuple[dict[int, set[int]], dict[int, datetime]]:
        """The poll's votes (user id → option indexes) and each user's latest ``voted_at``."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Vote.user_id, Vote.option_index, Vote.voted_at).where(Vote.poll_id == poll_id)
            )
            votes: dict[int, set[int]] = {}
            times: dict[int, datetime] = {}
            for user, option, voted_at in rows:
                if not str(user).isdigit():
                    continue
                uid = int(user)
                votes.setdefault(uid, set()).add(int(option))
                if isinstance(voted_at, datetime) and (uid not in times or voted_at > times[uid]):
                    times[uid] = voted_at
            return votes, times

    async def reconcile_candidates(self, now: datetime, lookback: timedelta, limit: int) -> list[PollView]:
        """Active polls with a posted message that opened within ``lookback``."""
        return [
            view
            async for view in self.views(
                and_(Poll.status == "active", Poll.message_id.is_not(None)),
                Poll.open_time >= now - lookback,
                ~CLAIMED,
                limit=limit,
            )
        ]
