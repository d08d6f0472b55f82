"""Readers that walk many polls and survive corrupt rows.

A row whose ``options_json`` / ``emojis_json`` is not a JSON list, or whose timestamps cannot be
parsed (SQLite stores them as text, and MariaDB can hold zero dates), is skipped: it is logged with
its id and passed to ``on_corrupt``, and iteration continues with the next row. Polls are read in
batches by ascending id (keyset pagination, so memory stays bounded by ``batch_size``); a batch that
fails to load is re-read row by row so one bad row costs only itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

from polly.db.models import Poll

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200
#: What loading a row with unparseable values raises (the SQLite datetime parser raises ValueError).
_LOAD_ERRORS = (ValueError, TypeError, StatementError)


@dataclass(frozen=True, slots=True)
class CorruptRow:
    """A row a reader skipped: its table, id and what was wrong."""

    table: str
    row_id: int
    reason: str


CorruptHandler = Callable[[CorruptRow], None]


def _json_list_problem(raw: str | None, column: str, *, required: bool) -> str | None:
    if raw is None:
        return f"{column} is NULL" if required else None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as err:
        return f"{column} is not valid JSON ({err.__class__.__name__}: {err})"
    if not isinstance(value, list):
        return f"{column} is JSON {type(value).__name__}, not a list"
    return None


def poll_problem(poll: Poll) -> str | None:
    """Why ``poll`` cannot be used (bad JSON, unparseable or missing timestamps), or ``None``."""
    for column, required in (("options_json", True), ("emojis_json", False)):
        problem = _json_list_problem(getattr(poll, column), column, required=required)
        if problem:
            return problem
    for column, required in (("open_time", True), ("close_time", True), ("created_at", False)):
        value = getattr(poll, column)
        if value is None and not required:
            continue
        if not isinstance(value, datetime):
            return f"{column} is not a timestamp ({value!r})"
    return None


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
    logger.warning("skipping corrupt polls row id=%d: %s", row_id, reason)
    if on_corrupt is not None:
        on_corrupt(CorruptRow("polls", row_id, reason))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size}"
        raise ValueError(msg)


async def iter_polls(
    session: AsyncSession,
    *,
    statuses: Collection[str] | None = None,
    with_votes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_corrupt: CorruptHandler | None = None,
) -> AsyncIterator[Poll]:
    """Yield usable polls (optionally only those whose status is in ``statuses``) by ascending id.

    ``with_votes`` loads each batch's votes eagerly (async sessions cannot lazy-load). Corrupt rows are
    skipped and reported (see the module docstring).
    """
    _check_batch_size(batch_size)
    after: int | None = None
    while True:
        ids = list(await session.scalars(_ids_query(after, statuses, batch_size)))
        if not ids:
            return
        after = ids[-1]
        loaded: dict[int, Poll] = {}
        try:
            loaded = {p.id: p for p in await session.scalars(_load_query(ids, with_votes))}
        except _LOAD_ERRORS:
            for row_id in ids:
                try:
                    poll = (await session.scalars(_load_query([row_id], with_votes))).one_or_none()
                except _LOAD_ERRORS as err:
                    _report(row_id, f"unreadable: {err}", on_corrupt)
                    continue
                if poll is not None:
                    loaded[row_id] = poll
        for row_id in ids:
            poll = loaded.get(row_id)
            if poll is None:
                continue  # deleted between the id query and the load, or reported above
            problem = poll_problem(poll)
            if problem is not None:
                _report(row_id, problem, on_corrupt)
                continue
            yield poll


def iter_polls_sync(
    session: Session,
    *,
    statuses: Collection[str] | None = None,
    with_votes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_corrupt: CorruptHandler | None = None,
) -> Iterator[Poll]:
    """:func:`iter_polls` for a sync session."""
    _check_batch_size(batch_size)
    after: int | None = None
    while True:
        ids = list(session.scalars(_ids_query(after, statuses, batch_size)))
        if not ids:
            return
        after = ids[-1]
        loaded: dict[int, Poll] = {}
        try:
            loaded = {p.id: p for p in session.scalars(_load_query(ids, with_votes))}
        except _LOAD_ERRORS:
            for row_id in ids:
                try:
                    poll = session.scalars(_load_query([row_id], with_votes)).one_or_none()
                except _LOAD_ERRORS as err:
                    _report(row_id, f"unreadable: {err}", on_corrupt)
                    continue
                if poll is not None:
                    loaded[row_id] = poll
        for row_id in ids:
            poll = loaded.get(row_id)
            if poll is None:
                continue
            problem = poll_problem(poll)
            if problem is not None:
                _report(row_id, problem, on_corrupt)
                continue
            yield poll
