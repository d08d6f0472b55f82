"""Set-based vote writing: a batch of reaction events applied in one transaction.

:func:`apply_batch` is the engine's only vote write path. For a batch of :class:`VoteCommand`
values it makes one read of the affected polls (locked with ``SELECT … FOR UPDATE`` on PostgreSQL
and MariaDB, in poll id order so two replicas lock in the same order; on SQLite the transaction
starts with ``BEGIN IMMEDIATE``, taking the database's one write lock before it reads), one read
of the affected (poll, user) pairs' votes (through the votes index on every dialect), then replays
the commands *in order* on that state in memory with the vote rules below, and writes the
difference with one bulk ``DELETE`` and one bulk ``INSERT``. Applying a batch gives exactly the
database state that applying its commands one at a time would give (a property test checks this
on every dialect).

The rules, per command (the same as for one event):

- unknown message, unknown emoji (matched through the poll's own emoji list), a poll that is not
  ``active`` or whose close time has passed: ignored;
- single choice: an add records the vote, replacing the user's previous one(s);
- multiple choice: an add records that option if absent and the user is below ``max_choices``,
  otherwise ``rejected_max_choices``; a remove deletes that option's vote, but only on polls that
  keep reactions (multiple choice, not anonymous): elsewhere the bot's own removals echo back;
- ``reconcile=True`` only ever adds (a single-choice user who already voted keeps the vote);
- replaying a command changes nothing;
- a command with ``seen_at`` (when the engine took its event in) older than the user's recorded
  vote it would replace (single choice) or remove is ``ignored_stale``: another replica, ahead of
  this one, already applied a newer event. New votes are stamped with ``seen_at`` (else ``now``);
  a single-choice vote chosen again by an event (not by a repair's read) takes its newer
  ``seen_at``, so an older add replayed later stays older.

A corrupt poll row fails only its own commands (``ignored_corrupt``, with the error); the rest of
the batch is applied.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from polly.db.models import Poll, Vote
from polly.db.poll_rows import PollView, poll_view
from polly.errors import CorruptPollError

VoteAction = Literal[
    "created", "updated", "added", "removed", "already_recorded", "rejected_max_choices",
    "ignored_unknown_poll", "ignored_closed", "ignored_emoji", "ignored_remove", "ignored_corrupt",
    "ignored_stale",
]  # fmt: skip
CHANGED_ACTIONS = frozenset({"created", "updated", "added", "removed"})
#: The tables, used through Core on the session's connection: no ORM objects are built, tracked
#: or synchronised (a batch reads and writes plain rows).
_POLLS, _VOTES = cast("Table", Poll.__table__), cast("Table", Vote.__table__)
#: Bound on the ids in one ``IN (…)`` list (SQLite's default variable limit is 32 766).
_IN_CHUNK = 900


@dataclass(frozen=True, slots=True)
class VoteCommand:
    """One reaction to apply: ``kind`` by ``user_id`` with ``emoji`` on message ``message_id``."""

    message_id: int
    user_id: int
    emoji: str
    kind: Literal["add", "remove"]
    reconcile: bool = False
    seen_at: datetime | None = None
    #: from a read of the message's reactions rather than an event Discord sent (a repair)
    read: bool = False


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    """What applying one command did, and the poll it did it on (``None`` if unknown or corrupt)."""

    action: VoteAction
    poll: PollView | None
    option_index: int | None = None
    error: CorruptPollError | None = None

    @property
    def changed(self) -> bool:
        return self.action in CHANGED_ACTIONS


@dataclass(slots=True)
class _UserVotes:
    """One user's votes on one poll: option index → the ids of its rows (``()``: added by this batch).

    Duplicate (poll, user, option) rows written elsewhere count as one vote and go together.
    """

    options: dict[int, tuple[int, ...]] = field(default_factory=dict)
    voted_at: dict[int, datetime] = field(default_factory=dict)
    #: kept options whose ``voted_at`` moved on (a single-choice vote chosen again)
    touched: set[int] = field(default_factory=set)


def _chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i : i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)] or [[]]


async def _polls(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, PollView | CorruptPollError]:
    out: dict[str, PollView | CorruptPollError] = {}
    for chunk in _chunks(message_ids):
        stmt = select(*_POLLS.c).where(_POLLS.c.message_id.in_(chunk)).order_by(_POLLS.c.id).with_for_update()
        for row in await conn.execute(stmt):
            key = str(row.message_id)
            if key in out:  # two rows claiming one message: the oldest wins, as a LIMIT 1 by id would
                continue
            try:
                out[key] = poll_view(row)
            except CorruptPollError as err:
                out[key] = err
    return out


#: SQLite's read of exactly the given (poll, user) pairs: one statement whatever their number, a
#: JSON array of pairs, each looked up through the votes index (SQLite keeps a CROSS JOIN's order).
#: SQLite answers a row-value ``IN`` by scanning the whole table, and an ``IN`` list would compile,
#: and cache in each connection's statement cache, one statement per list length.
_SQLITE_PAIRS = text(
    "SELECT votes.id, votes.poll_id, votes.user_id, votes.option_index, votes.voted_at "
    "FROM json_each(:pairs) AS pair CROSS JOIN votes "
    "ON votes.poll_id = json_extract(pair.value, '$[0]') AND votes.user_id = json_extract(pair.value, '$[1]')"
).columns(**{n: _VOTES.c[n].type for n in ("id", "poll_id", "user_id", "option_index", "voted_at")})


async def _votes(
    conn: AsyncConnection, pairs: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], _UserVotes]:
    """The votes of exactly these (poll, user) pairs, read through the votes index (PostgreSQL and
    MariaDB use it for the row-value ``IN``; SQLite gets :data:`_SQLITE_PAIRS`)."""
    state: dict[tuple[int, str], _UserVotes] = {}
    c = _VOTES.c
    if conn.dialect.name == "sqlite":
        results = [await conn.execute(_SQLITE_PAIRS, {"pairs": json.dumps([list(p) for p in pairs])})]
    else:
        results = [
            await conn.execute(
                select(c.id, c.poll_id, c.user_id, c.option_index, c.voted_at).where(
                    tuple_(c.poll_id, c.user_id).in_(pairs[start : start + _IN_CHUNK // 2])
                )
            )
            for start in range(0, len(pairs), _IN_CHUNK // 2)
        ]
    for result in results:
        for vote_id, poll_id, user_id, option, voted_at in result:
            votes = state.setdefault((int(poll_id), str(user_id)), _UserVotes())
            votes.options[int(option)] = (*votes.options.get(int(option), ()), int(vote_id))
            if isinstance(voted_at, datetime):
                votes.voted_at[int(option)] = max(voted_at, votes.voted_at.get(int(option), voted_at))
    return state


def _stale(votes: _UserVotes, command: VoteCommand, options: object) -> bool:
    """``True`` if a vote among ``options`` was recorded from an event newer than ``command``."""
    seen = command.seen_at
    return seen is not None and any(
        t > seen
        for o, t in votes.voted_at.items()
        if o in options  # type: ignore[operator]
    )


def _apply(poll: PollView, votes: _UserVotes, command: VoteCommand, option: int, now: datetime) -> VoteAction:  # noqa: PLR0911 - one return per rule
    """Apply one command's rule to ``votes`` in place and name what it did."""
    chosen = votes.options
    if command.kind == "remove":
        if poll.removes_reactions or option not in chosen:
            return "ignored_remove"
        if _stale(votes, command, {option}):
            return "ignored_stale"  # re-added since this event (another replica was ahead)
        del chosen[option]
        votes.voted_at.pop(option, None)
        return "removed"
    if not poll.multiple_choice:
        if option in chosen and len(chosen) == 1:
            seen = command.seen_at
            if not command.read and seen is not None and seen > votes.voted_at.get(option, seen):
                # Chosen again: the user's latest choice is now, which a shed older add must not undo.
                votes.voted_at[option] = seen
                votes.touched.add(option)
            return "already_recorded"
        if chosen and command.reconcile:
            return "already_recorded"
        if _stale(votes, command, chosen):
            return "ignored_stale"  # the user chose again since this event
        had = bool(chosen)
        chosen.clear()
        votes.voted_at.clear()
        votes.touched.clear()
        chosen[option] = ()
        votes.voted_at[option] = command.seen_at or now
        return "updated" if had else "created"
    if option in chosen:
        return "already_recorded"
    if poll.max_choices is not None and len(chosen) >= poll.max_choices:
        return "rejected_max_choices"
    chosen[option] = ()
    votes.voted_at[option] = command.seen_at or now
    return "added"


async def apply_batch(
    session: AsyncSession, commands: Sequence[VoteCommand], *, now: datetime
) -> list[VoteOutcome]:
    """Apply ``commands`` in order inside ``session``'s transaction; one outcome per command.

    ``now`` (naive UTC) decides whether a poll is past its close time and stamps new votes.
    """
    if not commands:
        return []
    conn = await session.connection()
    if conn.dialect.name == "sqlite":
        await _begin_immediate(conn)
    polls = await _polls(conn, sorted({str(c.message_id) for c in commands}))
    live = {k: p for k, p in polls.items() if isinstance(p, PollView)}
    state = await _votes(
        conn,
        sorted({(live[str(c.message_id)].id, str(c.user_id)) for c in commands if str(c.message_id) in live}),
    )
    before = {key: dict(v.options) for key, v in state.items()}
    outcomes: list[VoteOutcome] = []
    for command in commands:
        found = polls.get(str(command.message_id))
        if found is None:
            outcomes.append(VoteOutcome("ignored_unknown_poll", None))
            continue
        if isinstance(found, CorruptPollError):
            outcomes.append(VoteOutcome("ignored_corrupt", None, error=found))
            continue
        poll = found
        if poll.status != "active" or poll.close_time <= now:
            outcomes.append(VoteOutcome("ignored_closed", poll))
            continue
        option = poll.option_for(command.emoji)
        if option is None:
            outcomes.append(VoteOutcome("ignored_emoji", poll))
            continue
        votes = state.setdefault((poll.id, str(command.user_id)), _UserVotes())
        outcomes.append(VoteOutcome(_apply(poll, votes, command, option, now), poll, option))
    await _write(conn, before, state, now)
    return outcomes


async def _begin_immediate(conn: AsyncConnection) -> None:
    """Take SQLite's write lock now (waiting up to ``busy_timeout``), so the batch's reads and its
    writes are one serialised transaction; the driver would otherwise begin only at the first
    ``DELETE``/``INSERT``, after the reads, and the reads would see no lock at all."""
    raw = (await conn.get_raw_connection()).driver_connection
    if raw is not None and not getattr(raw, "in_transaction", True):
        await raw.execute("BEGIN IMMEDIATE")


async def _write(
    conn: AsyncConnection,
    before: dict[tuple[int, str], dict[int, tuple[int, ...]]],
    state: dict[tuple[int, str], _UserVotes],
    now: datetime,
) -> None:
    """Write the difference between ``before`` and ``state``: one bulk DELETE, one bulk INSERT."""
    gone: list[int] = []
    rows: list[dict[str, object]] = []
    moved: list[dict[str, object]] = []
    for key, votes in state.items():
        old = before.get(key, {})
        poll_id, user_id = key
        moved.extend(
            {"vote_id": vote_id, "at": votes.voted_at[option]}
            for option in votes.touched
            if option in votes.options
            for vote_id in old.get(option, ())
        )
        # An option deleted and re-added within the batch keeps its old row(s).
        gone.extend(vote_id for option, ids in old.items() if option not in votes.options for vote_id in ids)
        rows.extend(
            {"poll_id": poll_id, "user_id": user_id, "option_index": option,
             "voted_at": votes.voted_at.get(option, now)}
            for option in votes.options
            if option not in old
        )  # fmt: skip
    for start in range(0, len(gone), _IN_CHUNK):
        await conn.execute(delete(_VOTES).where(_VOTES.c.id.in_(gone[start : start + _IN_CHUNK])))
    if rows:
        await conn.execute(insert(_VOTES), rows)
    if moved:
        stmt = update(_VOTES).where(_VOTES.c.id == bindparam("vote_id")).values(voted_at=bindparam("at"))
        await conn.execute(stmt, moved)
