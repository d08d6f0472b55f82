"""Changing polls in the database: create, close, reopen and delete (reading is :mod:`.reports`).

Everything here writes only to the database, in upstream Polly's conventions (naive-UTC times, JSON
text lists, ``status`` ``scheduled``/``active``/``closed``); the running engine, on any replica, picks
each change up on its next tick: it posts ``scheduled`` polls that are due (``open_immediately`` ones
at once), finalizes polls it knew as active that are now ``closed``, and refreshes polls that became
``active`` again. State changes are the poll state machine's conditional updates
(:mod:`polly.db.transitions`, the statements the engine runs too), so a change racing the engine (or
another operator) is applied once or reported, never applied twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from polly.db import transitions
from polly.db.engine import Database
from polly.db.models import STATUS_ACTIVE, STATUS_CLOSED, STATUS_SCHEDULED, Poll, Vote
from polly.db.poll_rows import LOAD_ERRORS
from polly.errors import CorruptPollError, PollNotFoundError, PollStateError, PollValidationError
from polly.polls.definition import MAX_DURATION, PollDefinition, format_local

_CREATOR_ID = re.compile(r"^[0-9]{1,21}$")
#: The longest reopen extension: upstream's longest poll.
MAX_EXTEND_MINUTES = int(MAX_DURATION.total_seconds() // 60)


@dataclass(frozen=True, slots=True)
class ReopenResult:
    """``status`` is ``active`` (the engine refreshes the message) or ``scheduled`` (never posted: the
    engine posts it); ``close_time`` is naive UTC."""

    status: Literal["active", "scheduled"]
    close_time: datetime
    timezone: str
    votes_deleted: int


# --- create ---------------------------------------------------------------------------------------


def create_polls(db: Database, definitions: Sequence[PollDefinition], *, creator_id: str = "0") -> list[int]:
    """Insert every poll in one transaction (all or none) as ``scheduled``; returns their ids in order.

    ``creator_id`` is the Discord user id recorded as creator (``"0"``: nobody in particular).
    """
    if not _CREATOR_ID.match(creator_id):
        raise PollValidationError([f"creator_id: {creator_id!r}: must be a Discord user id (digits) or 0"])
    rows = [poll_row(d, creator_id) for d in definitions]
    with db.session_scope() as session:
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def poll_row(
    d: PollDefinition,
    creator_id: str,
    *,
    image_path: str | None = None,
    server_name: str | None = None,
    channel_name: str | None = None,
    ping_role_name: str | None = None,
) -> Poll:
    """The ``scheduled`` row of a validated poll; the names are the ones Discord gives (the dashboard
    knows them, the command line does not)."""
    row = Poll(
        name=d.name,
        question=d.question,
        server_id=d.server_id,
        server_name=server_name,
        channel_id=d.channel_id,
        channel_name=channel_name,
        creator_id=creator_id,
        multiple_choice=d.multiple_choice,
        max_choices=d.max_choices,
        anonymous=d.anonymous,
        ping_role_enabled=d.ping_role_enabled,
        ping_role_id=d.ping_role_id,
        ping_role_name=ping_role_name,
        ping_role_on_close=d.ping_role_on_close,
        ping_role_on_update=d.ping_role_on_update,
        image_path=image_path,
        image_message_text=d.image_message_text,
        open_time=d.open_time,
        close_time=d.close_time,
        timezone=d.timezone,
        open_immediately=d.open_immediately,
        # The engine opens it (open_immediately ones on its next tick) and sets message_id.
        status=STATUS_SCHEDULED,
    )
    row.options = list(d.options)
    row.emojis = list(d.emojis)
    return row


# --- change ---------------------------------------------------------------------------------------


def _status(session: Session, poll_id: int) -> str:
    status = session.execute(select(Poll.status).where(Poll.id == poll_id)).one_or_none()
    if status is None:
        raise PollNotFoundError(poll_id)
    return str(status[0] or STATUS_SCHEDULED)


def close_poll(db: Database, poll_id: int) -> str | None:
    """Close an ``active`` or ``scheduled`` poll; returns the status it had, ``None`` if already closed.

    The engine's close (:func:`polly.db.transitions.close`): a post still in flight stores its
    message id when it completes, and the engine finalizes the message as it does for any poll
    closed elsewhere.
    """
    with db.session_scope() as session:
        for _ in range(3):  # a race with the engine changes the status at most twice
            before = _status(session, poll_id)
            if before == STATUS_CLOSED:
                return None
            if before not in (STATUS_SCHEDULED, STATUS_ACTIVE):
                msg = f"poll {poll_id} has status {before!r}; only a scheduled or active poll can be closed"
                raise PollStateError(msg)
            if transitions.applied_sync(session, transitions.close(poll_id, (before,))):
                return before
        msg = f"poll {poll_id} kept changing status while being closed; try again"
        raise PollStateError(msg)


def reopen_poll(
    db: Database, poll_id: int, *, now: datetime, extend_minutes: int | None = None, reset_votes: bool = False
) -> ReopenResult:
    """Reopen a closed poll until its close time, or until ``now + extend_minutes`` (1..43 200).

    A poll that was posted becomes ``active``; one never posted (no message id) becomes ``scheduled``
    so the engine posts it. The close time must end up in the future (upstream's reopen without an
    extension leaves a poll nobody can vote in) and after the open time. ``reset_votes`` deletes its
    votes in the same transaction.
    """
    if extend_minutes is not None and not 1 <= extend_minutes <= MAX_EXTEND_MINUTES:
        msg = f"extend_minutes must be from 1 to {MAX_EXTEND_MINUTES} (30 days), got {extend_minutes}"
        raise ValueError(msg)
    with db.session_scope() as session:
        stmt = select(Poll.status, Poll.message_id, Poll.open_time, Poll.close_time, Poll.timezone)
        try:
            found = session.execute(stmt.where(Poll.id == poll_id)).one_or_none()
        except LOAD_ERRORS as err:
            raise CorruptPollError(poll_id, "open_time/close_time", f"cannot be read ({err})") from err
        if found is None:
            raise PollNotFoundError(poll_id)
        status, message_id, open_time, close_time, tz_name = found
        if status != STATUS_CLOSED:
            msg = f"poll {poll_id} is {status or STATUS_SCHEDULED}; only a closed poll can be reopened"
            raise PollStateError(msg)
        if extend_minutes is not None:
            close_time = (now + timedelta(minutes=extend_minutes)).replace(second=0, microsecond=0)
        elif close_time <= now:
            shown = f"{format_local(close_time, tz_name or 'UTC')} {tz_name or 'UTC'}"
            msg = (
                f"poll {poll_id} closed at {shown}, which has passed: nobody could vote in it; "
                "pass --extend-minutes N to reopen it until N minutes from now"
            )
            raise PollStateError(msg)
        if close_time <= open_time:
            opens = format_local(open_time, tz_name or "UTC")
            msg = f"poll {poll_id} opens at {opens} {tz_name or 'UTC'}: the close time must be later"
            raise PollStateError(msg)
        posted = bool(message_id) and not transitions.is_claim(message_id)
        target: Literal["active", "scheduled"] = STATUS_ACTIVE if posted else STATUS_SCHEDULED
        reopen = transitions.reopen(poll_id, posted=posted, close_time=close_time)
        if not transitions.applied_sync(session, reopen):
            msg = f"poll {poll_id} changed while being reopened; try again"
            raise PollStateError(msg)
        deleted = 0
        if reset_votes:
            deleted = session.execute(delete(Vote).where(Vote.poll_id == poll_id)).rowcount  # type: ignore[attr-defined]
    return ReopenResult(target, close_time, tz_name or "UTC", int(deleted))


def delete_poll(db: Database, poll_id: int) -> int:
    """Delete the poll and its votes in one transaction; returns how many votes went with it.

    A posted message stays on Discord (the engine stops following the poll).
    """
    with db.session_scope() as session:
        _status(session, poll_id)
        votes = session.execute(delete(Vote).where(Vote.poll_id == poll_id)).rowcount  # type: ignore[attr-defined]
        if session.execute(delete(Poll).where(Poll.id == poll_id)).rowcount != 1:  # type: ignore[attr-defined]
            raise PollNotFoundError(poll_id)  # deleted by someone else meanwhile: roll back
    return int(votes)
