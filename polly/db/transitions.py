"""The poll state machine: every change of a poll's ``status`` (and of its claim) is one of these.

Upstream's statuses and the moves between them::

    scheduled ──open (claim)──▶ active ──close──▶ closed ──reopen──▶ active     (it has a message)
        │                                            ▲  └────reopen──▶ scheduled  (never posted)
        └──────────────────close─────────────────────┘

Each move is one conditional ``UPDATE`` built once, at import, with bound parameters; it names the
state it expects, so its row count says whether *this* caller made the move and two replicas (or a
replica and ``polly poll``) never make it twice. The engine's :class:`~polly.engine.store.PollStore`
and the poll commands (:mod:`polly.polls.service`) run the same statements; nothing else in polly
writes a poll's ``status`` (``tests/test_state_machine_arch.py`` checks it).

**Claims.** While a replica posts a poll, ``message_id`` holds a claim token
(``claim:<replica>:<epoch s>``) instead of a Discord id; :func:`finish_open` replaces it with the
posted message's id.

**Close** has one meaning, whoever closes: ``status`` becomes ``closed`` if it is one of the statuses
the caller expects, and a claim is released (``message_id`` back to ``NULL``), so a closed poll
never carries one. A post still in flight when its poll is closed is not lost: :func:`finish_open`
also stores its message id on a closed poll that has none, and the engine then finalizes the
message as it does for any poll closed elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Table, and_, bindparam, case, null, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from polly.db.models import STATUS_ACTIVE, STATUS_CLOSED, STATUS_SCHEDULED, Poll

__all__ = [
    "CLAIMED",
    "CLAIM_PREFIX",
    "Transition",
    "applied",
    "applied_sync",
    "claim_open",
    "claim_time",
    "claim_token",
    "close",
    "finish_open",
    "is_claim",
    "reclaim",
    "reopen",
]

#: ``message_id`` holds a claim token while a replica posts a poll: ``claim:<replica>:<epoch s>``.
CLAIM_PREFIX = "claim:"


#: The condition "``message_id`` holds a claim", for queries.
CLAIMED = Poll.message_id.like(f"{CLAIM_PREFIX}%")


def claim_token(replica: str, now: datetime) -> str:
    """A claim for ``message_id``: ``claim:<replica>:<epoch s>`` (≤ 50 characters, the column's size).

    ``now`` is naive UTC, as every time polly stores.
    """
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return f"{CLAIM_PREFIX}{replica[:24]}:{int(aware.timestamp())}"


def claim_time(token: str) -> datetime | None:
    """When a claim token was taken (naive UTC), or ``None`` if it is malformed."""
    try:
        return datetime.fromtimestamp(int(token.rsplit(":", 1)[1]), UTC).replace(tzinfo=None)
    except (IndexError, ValueError, OverflowError, OSError):
        return None


def is_claim(message_id: object) -> bool:
    """Whether a stored ``message_id`` is a claim token rather than a Discord id."""
    return isinstance(message_id, str) and message_id.startswith(CLAIM_PREFIX)


_polls: Table = Poll.__table__  # type: ignore[assignment]
_id, _status, _message_id = _polls.c.id, _polls.c.status, _polls.c.message_id
_claimed = _message_id.like(f"{CLAIM_PREFIX}%")
_this_poll = _id == bindparam("poll_id")

_CLAIM_OPEN = (
    update(_polls)
    .where(_this_poll, _status == STATUS_SCHEDULED)
    .values(status=STATUS_ACTIVE, message_id=bindparam("token"))
)
_RECLAIM = (
    update(_polls)
    .where(_this_poll, _status == STATUS_ACTIVE, _message_id == bindparam("old_token"))
    .values(message_id=bindparam("new_token"))
)
_FINISH_OPEN = (
    update(_polls)
    .where(
        _this_poll,
        or_(_message_id == bindparam("token"), and_(_status == STATUS_CLOSED, _message_id.is_(None))),
    )
    .values(message_id=bindparam("posted"))
)
_CLOSE = (
    update(_polls)
    .where(_this_poll, _status.in_(bindparam("from_statuses", expanding=True)))
    .values(status=STATUS_CLOSED, message_id=case((_claimed, null()), else_=_message_id))
)
_REOPEN_POSTED = (
    update(_polls)
    .where(_this_poll, _status == STATUS_CLOSED, _message_id.is_not(None), ~_claimed)
    .values(status=STATUS_ACTIVE, close_time=bindparam("until"))
)
_REOPEN_UNPOSTED = (
    update(_polls)
    .where(_this_poll, _status == STATUS_CLOSED, or_(_message_id.is_(None), _claimed))
    .values(status=STATUS_SCHEDULED, close_time=bindparam("until"), message_id=null())
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of one poll: a prebuilt statement and its parameters; run it with :func:`applied`."""

    name: str
    statement: Update
    params: Mapping[str, object]


def claim_open(poll_id: int, token: str) -> Transition:
    """``scheduled → active``, ``message_id`` = ``token``."""
    return Transition("scheduled->active", _CLAIM_OPEN, {"poll_id": poll_id, "token": token})


def reclaim(poll_id: int, old_token: str, new_token: str) -> Transition:
    """Take over an interrupted open: ``old_token`` → ``new_token`` on an ``active`` poll."""
    params = {"poll_id": poll_id, "old_token": old_token, "new_token": new_token}
    return Transition("reclaim", _RECLAIM, params)


def finish_open(poll_id: int, token: str, message_id: int) -> Transition:
    """Store the posted message's id in place of ``token`` (or on a poll closed while posting)."""
    params = {"poll_id": poll_id, "token": token, "posted": str(message_id)}
    return Transition("posted", _FINISH_OPEN, params)


def close(poll_id: int, from_statuses: Iterable[str] = (STATUS_ACTIVE,)) -> Transition:
    """``status`` (one of ``from_statuses``) → ``closed``, releasing a claim (see the module docstring)."""
    expected = sorted(set(from_statuses))
    if not expected or not set(expected) <= {STATUS_SCHEDULED, STATUS_ACTIVE}:
        msg = f"close moves a poll from scheduled or active, not from {expected}"
        raise ValueError(msg)
    params = {"poll_id": poll_id, "from_statuses": expected}
    return Transition(f"{'|'.join(expected)}->closed", _CLOSE, params)


def reopen(poll_id: int, *, posted: bool, close_time: datetime) -> Transition:
    """``closed → active`` for a poll with a message (``posted``), else ``closed → scheduled`` (the
    engine posts it; a leftover claim is cleared); either way until ``close_time`` (naive UTC).

    Applied only if the poll is still closed and still ``posted`` or not.
    """
    target: Literal["active", "scheduled"] = STATUS_ACTIVE if posted else STATUS_SCHEDULED
    statement = _REOPEN_POSTED if posted else _REOPEN_UNPOSTED
    return Transition(f"closed->{target}", statement, {"poll_id": poll_id, "until": close_time})


def applied_sync(session: Session, transition: Transition) -> bool:
    """Run ``transition``; ``True`` if this call made the move."""
    result = session.execute(transition.statement, dict(transition.params))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def applied(session: AsyncSession, transition: Transition) -> bool:
    """:func:`applied_sync` for an async session."""
    result = await session.execute(transition.statement, dict(transition.params))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
