"""Reading polls from the database: the list, one poll's details and results, and its export.

Rows that cannot be decoded (the corrupt-row rule of :mod:`polly.db.poll_rows`: bad ``options_json``,
unparseable times, ids that are not numbers) raise :class:`~polly.errors.CorruptPollError` naming the
poll and the column; :func:`list_polls` skips and reports them instead (the tolerant reader of
:mod:`polly.db.queries`), so one bad row never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from polly.db import poll_rows
from polly.db.engine import Database
from polly.db.models import STATUS_SCHEDULED, Poll, Vote
from polly.db.poll_rows import PollView
from polly.db.queries import CorruptRow, load_tolerant
from polly.errors import PollNotFoundError
from polly.polls.definition import to_json

MAX_LIST_LIMIT = 10_000
#: Vote rows :func:`show_poll` reads to name voters; the counts always cover every vote.
MAX_VOTE_ROWS_SHOWN = 1000


@dataclass(frozen=True, slots=True)
class PollSummary:
    """One line of :func:`list_polls`. Times are naive UTC; ``votes`` counts rows, ``voters`` users.

    ``name`` is ``None`` for a legacy row without one (upstream's schema forbids it, raw SQL did not).
    """

    id: int
    name: str | None
    status: str
    open_time: datetime
    close_time: datetime
    timezone: str
    server_id: str
    channel_id: str
    message_id: str | None
    votes: int
    voters: int


@dataclass(frozen=True, slots=True)
class PollList:
    """Polls newest first; ``skipped`` are corrupt rows; ``truncated`` when more matched the limit."""

    polls: list[PollSummary]
    skipped: list[CorruptRow]
    truncated: bool


@dataclass(frozen=True, slots=True)
class OptionResult:
    index: int
    option: str
    emoji: str
    votes: int
    percent: float  # of all vote rows; 0.0 with no votes


@dataclass(frozen=True, slots=True)
class PollDetails:
    """A poll with its results. ``voters`` maps user id → chosen option indexes, ``None`` when the poll
    is anonymous; it holds at most :data:`MAX_VOTE_ROWS_SHOWN` vote rows (``voters_truncated``)."""

    poll: PollView
    creator_id: str
    open_immediately: bool
    ping_role_on_update: bool
    created_at: datetime | None
    results: tuple[OptionResult, ...]
    total_votes: int
    voter_count: int
    winners: tuple[int, ...]
    voters: dict[str, list[int]] | None
    voters_truncated: bool


def list_polls(
    db: Database,
    *,
    status: str | None = None,
    server_id: str | None = None,
    channel_id: str | None = None,
    limit: int = 100,
) -> PollList:
    """At most ``limit`` (1..10 000) matching polls, newest first, with their vote counts."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        msg = f"limit must be from 1 to {MAX_LIST_LIMIT}, got {limit}"
        raise ValueError(msg)
    conditions = [
        c
        for c, given in (
            (Poll.status == status, status),
            (Poll.server_id == server_id, server_id),
            (Poll.channel_id == channel_id, channel_id),
        )
        if given is not None
    ]
    skipped: list[CorruptRow] = []
    with db.session_scope() as session:
        ids = list(
            session.scalars(select(Poll.id).where(*conditions).order_by(Poll.id.desc()).limit(limit + 1))
        )
        truncated, ids = len(ids) > limit, ids[:limit]
        rows = [found.row for found in load_tolerant(session, ids, on_corrupt=skipped.append)]
        counts = _vote_counts(session, [r.id for r in rows])
    polls = []
    for row in rows:
        votes, voters = counts.get(row.id, (0, 0))
        polls.append(
            PollSummary(
                id=row.id,
                name=row.name,
                status=str(row.status or STATUS_SCHEDULED),
                open_time=row.open_time,
                close_time=row.close_time,
                timezone=row.timezone or "UTC",
                server_id=row.server_id,
                channel_id=row.channel_id,
                message_id=row.message_id,
                votes=votes,
                voters=voters,
            )
        )
    return PollList(polls, skipped, truncated)


def _vote_counts(session: Session, ids: list[int]) -> dict[int, tuple[int, int]]:
    if not ids:
        return {}
    stmt = (
        select(Vote.poll_id, func.count(), func.count(func.distinct(Vote.user_id)))
        .where(Vote.poll_id.in_(ids))
        .group_by(Vote.poll_id)
    )
    return {int(pid): (int(n), int(users)) for pid, n, users in session.execute(stmt)}


def load_poll(session: Session, poll_id: int) -> tuple[Poll, PollView]:
    """The row and its checked view; :class:`PollNotFoundError` or
    :class:`~polly.errors.CorruptPollError`."""
    found = poll_rows.load_poll(session, poll_id)
    if found is None:
        raise PollNotFoundError(poll_id)
    return found.row, found.view


def show_poll(db: Database, poll_id: int) -> PollDetails:
    """The poll's settings, results per option, winner(s) and (unless anonymous) its voters."""
    with db.session_scope() as session:
        row, view = load_poll(session, poll_id)
        per_option = {
            int(index): int(count)
            for index, count in session.execute(
                select(Vote.option_index, func.count())
                .where(Vote.poll_id == poll_id)
                .group_by(Vote.option_index)
            )
        }
        voter_count = session.scalar(
            select(func.count(func.distinct(Vote.user_id))).where(Vote.poll_id == poll_id)
        )
        voters: dict[str, list[int]] | None = None
        truncated = False
        if not view.anonymous:
            stmt = (
                select(Vote.user_id, Vote.option_index)
                .where(Vote.poll_id == poll_id)
                .order_by(Vote.id)
                .limit(MAX_VOTE_ROWS_SHOWN + 1)
            )
            pairs = [(str(user), int(index)) for user, index in session.execute(stmt)]
            truncated = len(pairs) > MAX_VOTE_ROWS_SHOWN
            voters = {}
            for user_id, index in pairs[:MAX_VOTE_ROWS_SHOWN]:
                if 0 <= index < len(view.options):  # a vote for no option (-1, 99) names none
                    voters.setdefault(str(user_id), []).append(int(index))
        creator, on_update = row.creator_id, bool(row.ping_role_on_update)
        immediately, created_at = bool(row.open_immediately), row.created_at
    counted = {i: n for i, n in per_option.items() if 0 <= i < len(view.options)}
    total = sum(counted.values())
    results = tuple(
        OptionResult(
            i, option, view.emojis[i], counted.get(i, 0), 100 * counted.get(i, 0) / total if total else 0.0
        )
        for i, option in enumerate(view.options)
    )
    top = max(counted.values(), default=0)
    winners = tuple(r.index for r in results if top and r.votes == top)
    return PollDetails(
        poll=view,
        creator_id=creator,
        open_immediately=immediately,
        ping_role_on_update=on_update,
        created_at=created_at,
        results=results,
        total_votes=total,
        voter_count=int(voter_count or 0),
        winners=winners,
        voters=voters,
        voters_truncated=truncated,
    )


def export_poll(db: Database, poll_id: int, *, now: datetime) -> dict[str, Any]:
    """The poll in the JSON import format, times in its time zone, so importing it recreates it.

    ``now`` is naive UTC. A poll whose open time is not after ``now`` (it has opened, or is due) is
    written with ``open_immediately: true``: the import format refuses an open time in the past, and
    importing such a poll can only mean opening it at once.
    """
    with db.session_scope() as session:
        row, view = load_poll(session, poll_id)
        extra: dict[str, Any] = {
            "server_id": row.server_id,
            "channel_id": row.channel_id,
            "multiple_choice": view.multiple_choice,
            "anonymous": view.anonymous,
            "ping_role_enabled": view.ping_role_enabled,
            "ping_role_on_close": view.ping_role_on_close,
            "ping_role_on_update": bool(row.ping_role_on_update),
            "open_immediately": bool(row.open_immediately) or view.open_time <= now,
        }
        if view.max_choices is not None:
            extra["max_choices"] = view.max_choices
        if row.ping_role_id:
            extra["ping_role_id"] = row.ping_role_id
        if view.image_message_text:
            extra["image_message_text"] = view.image_message_text
    return to_json(
        name=view.name,
        question=view.question,
        options=list(view.options),
        emojis=list(view.emojis),
        open_time=view.open_time,
        close_time=view.close_time,
        timezone=view.timezone,
        extra=extra,
    )
