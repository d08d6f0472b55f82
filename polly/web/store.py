"""The dashboard's reads and writes of upstream's tables: the poll list page, polls created from the
dashboard (with their image and the names Discord gave), members and their preferences.

Writes follow :mod:`polly.polls.service`'s conventions (naive UTC, ``scheduled`` for the engine to
open); the list reads only the columns it shows, one page at a time, newest first, so a page costs
the same with 10 polls or 10 000.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update

from polly.db.engine import Database
from polly.db.models import STATUS_SCHEDULED, Poll, User, UserPreference
from polly.polls.definition import PollDefinition
from polly.polls.service import poll_row

PAGE_SIZE = 25
STATUSES = ("scheduled", "active", "closed")
MAX_SEARCH_CHARS = 100


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
    """One page of the list; ``page`` counts from 1, ``total`` counts every match."""

    polls: list[ListedPoll]
    page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def list_page(db: Database, *, server_id: str | None, status: str | None, search: str, page: int) -> PollPage:
    """Polls of ``server_id`` (``None``: every server) in ``status`` whose name or question contains
    ``search`` (case-insensitive, at most :data:`MAX_SEARCH_CHARS` used), page ``page`` (from 1)."""
    conditions = []
    if server_id is not None:
        conditions.append(Poll.server_id == server_id)
    if status in STATUSES:
        conditions.append(Poll.status == status)
    term = search.strip()[:MAX_SEARCH_CHARS]
    if term:
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped.lower()}%"
        conditions.append(
            or_(
                func.lower(Poll.name).like(like, escape="\\"),
                func.lower(Poll.question).like(like, escape="\\"),
            )
        )
    page = max(1, page)
    columns = (
        Poll.id,
        Poll.name,
        Poll.status,
        Poll.channel_name,
        Poll.open_time,
        Poll.close_time,
        Poll.timezone,
    )
    with db.session_scope() as session:
        total = int(session.scalar(select(func.count()).select_from(Poll).where(*conditions)) or 0)
        stmt = select(*columns).where(*conditions).order_by(Poll.id.desc())
        rows = session.execute(stmt.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    polls = [
        ListedPoll(int(r[0]), str(r[1]), str(r[2] or STATUS_SCHEDULED), r[3], r[4], r[5], str(r[6] or "UTC"))
        for r in rows
    ]
    return PollPage(polls, page, total)


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
