"""The previous per-event vote path, kept only as an anchor and as the property test's oracle.

One transaction per reaction: lock the poll row by message id, read the user's votes, insert or
delete, commit. polly's production path is :mod:`polly.engine.vote_batch`; this module must give
the same database state for the same events (``tests/polly/engine/test_vote_batch.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from polly.db.models import Poll, Vote
from polly.db.poll_rows import poll_view
from polly.engine.vote_batch import VoteOutcome


async def apply_reaction_per_event(  # noqa: PLR0911 - one return per rule
    session: AsyncSession, message_id: int, user_id: int, emoji: str, *, kind: Literal["add", "remove"],
    now: datetime, reconcile: bool = False,
) -> VoteOutcome:  # fmt: skip
    """Apply one reaction in ``session`` (the caller commits): the rules of ``vote_batch``."""
    row = await session.scalar(
        select(Poll).where(Poll.message_id == str(message_id)).order_by(Poll.id).with_for_update().limit(1)
    )
    if row is None:
        return VoteOutcome("ignored_unknown_poll", None)
    poll = poll_view(row)
    if poll.status != "active" or poll.close_time <= now:
        return VoteOutcome("ignored_closed", poll)
    option = poll.option_for(emoji)
    if option is None:
        return VoteOutcome("ignored_emoji", poll)
    uid = str(user_id)
    mine = list(
        await session.execute(
            select(Vote.id, Vote.option_index).where(Vote.poll_id == poll.id, Vote.user_id == uid)
        )
    )
    chosen = {int(r.option_index) for r in mine}
    if kind == "remove":
        if poll.removes_reactions or option not in chosen:
            return VoteOutcome("ignored_remove", poll, option)
        await session.execute(
            delete(Vote).where(Vote.poll_id == poll.id, Vote.user_id == uid, Vote.option_index == option)
        )
        return VoteOutcome("removed", poll, option)
    if not poll.multiple_choice:
        if option in chosen and len(mine) == 1:
            return VoteOutcome("already_recorded", poll, option)
        if mine and reconcile:
            return VoteOutcome("already_recorded", poll, option)
        if mine:
            await session.execute(delete(Vote).where(Vote.poll_id == poll.id, Vote.user_id == uid))
        await session.execute(
            insert(Vote).values(poll_id=poll.id, user_id=uid, option_index=option, voted_at=now)
        )
        return VoteOutcome("updated" if mine else "created", poll, option)
    if option in chosen:
        return VoteOutcome("already_recorded", poll, option)
    if poll.max_choices is not None and len(chosen) >= poll.max_choices:
        return VoteOutcome("rejected_max_choices", poll, option)
    await session.execute(
        insert(Vote).values(poll_id=poll.id, user_id=uid, option_index=option, voted_at=now)
    )
    return VoteOutcome("added", poll, option)
