"""Readers that walk many polls and survive corrupt rows.

A row that fails the corrupt-row rule of :mod:`polly.db.poll_rows` (it cannot be loaded, its
``options_json`` / ``emojis_json`` is not a JSON list of strings, a timestamp or an id cannot be
read) is skipped: it is passed to ``on_corrupt`` (logged with its id when there is no
``on_corrupt``), and reading continues with the next row. Polls are read in batches by ascending id
(keyset pagination, so memory stays bounded by ``batch_size``); a batch that fails to load is re-read
row by row so one bad row costs only itself.

There is one implementation, for a sync :class:`~sqlalchemy.orm.Session`: the async reader runs it
through :meth:`AsyncSession.run_sync <sqlalchemy.ext.asyncio.AsyncSession.run_sync>`, one batch at a
time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

from polly.db.models import Poll
from polly.db.poll_rows import LOAD_ERRORS, Decoded, poll_view
from polly.errors import CorruptPollError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200


@dataclass(frozen=True, slots=True)
class CorruptRow:
    """A row a reader skipped: its table, id and what was wrong."""

    table: str
    row_id: int
    reason: str


CorruptHandler = Callable[[CorruptRow], None]


def _ids_query(after: int | None, statuses: Collection[str] | None, batch_size: int) -> Select[int]:
    query = select(Poll.id).order_by(Poll.id).limit(batch_size)
    if after is not None:
        query = query.where(Poll.id > after)
    if statuses is not None:
        query = query.where(Poll.status.in_(list(statuses)))
    return query


def _load_query(ids: Sequence[int], with_votes: bool) -> Select[Poll]:
    query = select(Poll).where(Poll.id.in_(list(ids))).execution_options(populate_existing=True)
    if with_votes:
        query = query.options(selectinload(Poll.votes))
    return query


def _report(row_id: int, reason: str, on_corrupt: CorruptHandler | None) -> None:
    if on_corrupt is None:
        logger.warning("skipping corrupt polls row id=%d: %s", row_id, reason)
    else:
        on_corrupt(CorruptRow("polls", row_id, reason))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size}"
        raise ValueError(msg)


def load_tolerant(
    session: Session,
    ids: Sequence[int],
    *,
    with_votes: bool = False,
    on_corrupt: CorruptHandler | None = None,
) -> list[Decoded]:
    """The usable rows of ``ids``, decoded, in the order of ``ids``; corrupt ones are reported.

    A row deleted meanwhile is simply absent.
    """
    loaded: dict[int, Poll] = {}
    try:
        loaded = {p.id: p for p in session.scalars(_load_query(ids, with_votes))}
    except LOAD_ERRORS:
        for row_id in ids:  # one bad row must cost only itself
            try:
                poll = session.scalars(_load_query([row_id], with_votes)).one_or_none()
            except LOAD_ERRORS as err:
                _report(row_id, f"unreadable: {err}", on_corrupt)
                continue
            if poll is not None:
                loaded[row_id] = poll
    out: list[Decoded] = []
    for row_id in ids:
        poll = loaded.get(row_id)
        if poll is None:
            continue  # deleted between the id query and the load, or reported above
        try:
            out.append(Decoded(poll, poll_view(poll)))
        except CorruptPollError as err:
            _report(row_id, err.reason, on_corrupt)
    return out


def _batch(
    session: Session,
    after: int | None,
    *,
    statuses: Collection[str] | None,
    with_votes: bool,
    batch_size: int,
    on_corrupt: CorruptHandler | None,
) -> tuple[int | None, list[Poll]]:
    """The next batch after id ``after``: the last id read (``None`` at the end) and its usable rows."""
    ids = list(session.scalars(_ids_query(after, statuses, batch_size)))
    if not ids:
        return None, []
    decoded = load_tolerant(session, ids, with_votes=with_votes, on_corrupt=on_corrupt)
    return ids[-1], [d.row for d in decoded]


def iter_polls_sync(
    session: Session,
    *,
    statuses: Collection[str] | None = None,
    with_votes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_corrupt: CorruptHandler | None = None,
) -> Iterator[Poll]:
    """Yield usable polls (optionally only those whose status is in ``statuses``) by ascending id.

    ``with_votes`` loads each batch's votes eagerly. Corrupt rows are skipped and reported (see the
    module docstring).
    """
    _check_batch_size(batch_size)
    batch = partial(
        _batch, statuses=statuses, with_votes=with_votes, batch_size=batch_size, on_corrupt=on_corrupt
    )
    after: int | None = None
    while True:
        after, polls = batch(session, after)
        if after is None:
            return
        yield from polls


async def iter_polls(
    session: AsyncSession,
    *,
    statuses: Collection[str] | None = None,
    with_votes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_corrupt: CorruptHandler | None = None,
) -> AsyncIterator[Poll]:
    """:func:`iter_polls_sync` for an async session (async sessions cannot lazy-load: pass
    ``with_votes`` to read the votes)."""
    _check_batch_size(batch_size)
    batch = partial(
        _batch, statuses=statuses, with_votes=with_votes, batch_size=batch_size, on_corrupt=on_corrupt
    )
    after: int | None = None
    while True:
        after, polls = await session.run_sync(batch, after)
        if after is None:
            return
        for poll in polls:
            yield poll
