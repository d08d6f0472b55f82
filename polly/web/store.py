"""The dashboard's reads and writes of upstream's tables: the poll list page, polls created from the
dashboard (with their image and the names Discord gave), members and their preferences.

Writes follow :mod:`polly.polls.service`'s conventions (naive UTC, ``scheduled`` for the engine to
open); the list reads only the columns it shows, one page at a time, newest first, so a page costs
the same with 10 polls or 10 000.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Subquery, func, literal, or_, select, update
from sqlalchemy.orm import Session

from polly.db.engine import Database
from polly.db.models import STATUS_SCHEDULED, Poll, User, UserPreference
from polly.polls.definition import PollDefinition
from polly.polls.service import poll_row

PAGE_SIZE = 25
STATUSES = ("scheduled", "active", "closed")
MAX_SEARCH_CHARS = 100
#: A search counts its matches up to this many (one scan that stops there); past it the list says
#: "more than" and pages on with Next. A multiple of :data:`PAGE_SIZE`; kept small so the scan can
#: stop early and MariaDB walks the primary key rather than sorting every match.
SEARCH_COUNT_CAP = 4 * PAGE_SIZE


@dataclass(frozen=True, slots=True)
class ListedPoll:
    id: int
    name: str
    status: str
    channel_name: str | None
    open_time: datetime
    close_time: datetime
    timezone: str


@dataclass(frozen=True, slots=True)
class PollPage:
    """One page of the list; ``page`` counts from 1. ``total`` counts every match when ``exact``;
    otherwise (a search with more than :data:`SEARCH_COUNT_CAP` matches) there are more than
    ``total`` and ``more`` says whether a page follows this one."""

    polls: list[ListedPoll]
    page: int
    total: int
    exact: bool = True
    more: bool = False

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages if self.exact else self.more


_COLUMNS = (
    Poll.id,
    Poll.name,
    Poll.status,
    Poll.channel_name,
    Poll.open_time,
    Poll.close_time,
    Poll.timezone,
)


def _search_condition(term: str, dialect: str) -> ColumnElement[bool]:
    """Name or question contains ``term``, case-insensitively, ``%`` ``_`` ``\\`` taken literally.

    SQLite's ``lower()`` and ``LIKE`` both fold ASCII only, so there ``lower(col) LIKE p`` and
    ``col LIKE p`` match the same rows for a lower-case ``p``: the cheaper form is used."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped.lower()}%"
    if dialect == "sqlite":
        return or_(Poll.name.like(like, escape="\\"), Poll.question.like(like, escape="\\"))
    return or_(
        func.lower(Poll.name).like(like, escape="\\"),
        func.lower(Poll.question).like(like, escape="\\"),
    )


_Row = Row[*tuple[Any, ...]]


def _rows(session: Session, window: Subquery, extra: ColumnElement[Any]) -> list[_Row]:
    """The listed columns of the polls whose ids ``window`` holds, newest first, plus ``extra``."""
    stmt = select(*_COLUMNS, extra).join(window, Poll.id == window.c.id).order_by(Poll.id.desc())
    return list(session.execute(stmt).all())


def _carried(rows: list[_Row], offset: int, recount: Callable[[], int]) -> int:
    """The count the page's rows carry; none for an empty first page, ``recount()`` past the end."""
    if rows:
        return int(rows[0][-1])
    return 0 if offset == 0 else recount()


def _capped_count(session: Session, ids: Select[Any]) -> int:
    """How many rows ``ids`` selects, counting no further than :data:`SEARCH_COUNT_CAP` + 1."""
    capped = ids.limit(SEARCH_COUNT_CAP + 1).subquery()
    return int(session.scalar(select(func.count()).select_from(capped)) or 0)


def list_page(db: Database, *, server_id: str | None, status: str | None, search: str, page: int) -> PollPage:
    """Polls of ``server_id`` (``None``: every server) in ``status`` whose name or question contains
    ``search`` (case-insensitive, at most :data:`MAX_SEARCH_CHARS` used), page ``page`` (from 1),
    newest first.

    One statement per page: the page's ids (an offset over the ids only, so a deep page skips
    index entries, not rows), joined back to the listed columns by primary key, with the total.
    Without a search the total is an exact count (index-only on ``ix_polls_server_id_status_id``).
    A search scans once: the ids of the first :data:`SEARCH_COUNT_CAP` + 1 matches give both the
    count (a window over them) and the page; a page past the cap pages on with an offset."""
    conditions: list[ColumnElement[bool]] = []
    if server_id is not None:
        conditions.append(Poll.server_id == server_id)
    if status in STATUSES:
        conditions.append(Poll.status == status)
    term = search.strip()[:MAX_SEARCH_CHARS]
    if term:
        conditions.append(_search_condition(term, db.sync_engine.dialect.name))
    page = max(1, page)
    offset = (page - 1) * PAGE_SIZE
    ids = select(Poll.id).where(*conditions).order_by(Poll.id.desc())
    exact, more = True, False
    with db.session_scope() as session:
        if not term:
            count = select(func.count()).select_from(Poll).where(*conditions).correlate(None)
            rows = _rows(session, ids.offset(offset).limit(PAGE_SIZE).subquery(), count.scalar_subquery())
            total = _carried(rows, offset, lambda: int(session.scalar(count) or 0))
        elif offset < SEARCH_COUNT_CAP:
            matched = ids.limit(SEARCH_COUNT_CAP + 1).subquery()
            window = (
                select(matched.c.id, func.count().over().label("matched"))
                .order_by(matched.c.id.desc())
                .offset(offset)
                .limit(PAGE_SIZE)
                .subquery()
            )
            rows = _rows(session, window, window.c.matched)
            found = _carried(rows, offset, lambda: _capped_count(session, ids))
            total, exact = min(found, SEARCH_COUNT_CAP), found <= SEARCH_COUNT_CAP
            more = not exact
        else:  # past the cap: whether this page has rows and a successor is all there is to know
            rows = _rows(session, ids.offset(offset).limit(PAGE_SIZE + 1).subquery(), literal(0))
            more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
            if rows:
                total, exact = offset + len(rows), not more
            else:  # beyond the last match
                found = _capped_count(session, ids)
                total, exact = min(found, SEARCH_COUNT_CAP), found <= SEARCH_COUNT_CAP
    polls = [
        ListedPoll(int(r[0]), str(r[1]), str(r[2] or STATUS_SCHEDULED), r[3], r[4], r[5], str(r[6] or "UTC"))
        for r in rows
    ]
    return PollPage(polls, page, total, exact, more)


def poll_server(db: Database, poll_id: int) -> str | None:
    """The poll's ``server_id``, ``None`` when there is no such poll (what authorisation checks)."""
    with db.session_scope() as session:
        return session.scalar(select(Poll.server_id).where(Poll.id == poll_id))


def create_poll(
    db: Database,
    d: PollDefinition,
    *,
    creator_id: str,
    image_path: str | None,
    server_name: str | None,
    channel_name: str | None,
    ping_role_name: str | None,
) -> int:
    """Insert one validated poll as ``scheduled`` with its image and names in one transaction."""
    row = poll_row(
        d, creator_id, image_path=image_path, server_name=server_name, channel_name=channel_name,
        ping_role_name=ping_role_name,
    )  # fmt: skip
    with db.session_scope() as session:
        session.add(row)
        session.flush()
        return int(row.id)


def update_scheduled_poll(
    db: Database,
    poll_id: int,
    d: PollDefinition,
    *,
    image_path: str | None,
    channel_name: str | None,
    ping_role_name: str | None,
) -> bool:
    """Rewrite a poll that is still ``scheduled`` and unposted; ``False`` when it opened meanwhile
    (the engine claimed or posted it) or is gone. ``image_path`` ``None`` keeps the current image."""
    values = {
        "name": d.name,
        "question": d.question,
        "channel_id": d.channel_id,
        "channel_name": channel_name,
        "multiple_choice": d.multiple_choice,
        "max_choices": d.max_choices,
        "anonymous": d.anonymous,
        "ping_role_enabled": d.ping_role_enabled,
        "ping_role_id": d.ping_role_id,
        "ping_role_name": ping_role_name,
        "ping_role_on_close": d.ping_role_on_close,
        "ping_role_on_update": d.ping_role_on_update,
        "image_message_text": d.image_message_text,
        "open_time": d.open_time,
        "close_time": d.close_time,
        "timezone": d.timezone,
        "open_immediately": d.open_immediately,
    }
    probe = Poll()
    probe.options, probe.emojis = list(d.options), list(d.emojis)
    values |= {"options_json": probe.options_json, "emojis_json": probe.emojis_json}
    if image_path is not None:
        values["image_path"] = image_path
    with db.session_scope() as session:
        result = session.execute(
            update(Poll)
            .where(Poll.id == poll_id, Poll.status == STATUS_SCHEDULED, Poll.message_id.is_(None))
            .values(**values)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Preferences:
    server_id: str | None = None
    channel_id: str | None = None
    role_id: str | None = None
    timezone: str = "US/Eastern"


def save_member(db: Database, user_id: str, username: str, avatar: str | None) -> None:
    """Insert or refresh the ``users`` row (upstream's dashboard does it at every sign-in)."""
    with db.session_scope() as session:
        row = session.get(User, user_id)
        if row is None:
            session.add(User(id=user_id, username=username[:100], avatar=avatar))
        else:
            row.username, row.avatar = username[:100], avatar


def preferences(db: Database, user_id: str) -> Preferences:
    """The member's first ``user_preferences`` row (upstream's schema allows several), or defaults."""
    with db.session_scope() as session:
        row = session.scalars(
            select(UserPreference)
            .where(UserPreference.user_id == user_id)
            .order_by(UserPreference.id)
            .limit(1)
        ).first()
        if row is None:
            return Preferences()
        return Preferences(
            row.last_server_id, row.last_channel_id, row.last_role_id, row.default_timezone or "US/Eastern"
        )


def remember(db: Database, user_id: str, prefs: Preferences) -> None:
    """Store the last server, channel, role and time zone used (the member row must exist)."""
    with db.session_scope() as session:
        row = session.scalars(
            select(UserPreference)
            .where(UserPreference.user_id == user_id)
            .order_by(UserPreference.id)
            .limit(1)
        ).first()
        if row is None:
            row = UserPreference(user_id=user_id)
            session.add(row)
        row.last_server_id, row.last_channel_id, row.last_role_id = (
            prefs.server_id,
            prefs.channel_id,
            prefs.role_id,
        )
        row.default_timezone, row.timezone_explicitly_set = prefs.timezone, True
