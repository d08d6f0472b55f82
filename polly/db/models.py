"""The ORM models: upstream Polly's schema, column for column, in SQLAlchemy 2.x typed style.

Tables, column names, types, lengths and nullability are upstream's (``polls``, ``votes``, ``users``,
``user_preferences``, ``guilds``, ``channels``, ``schema_migrations``), so an existing deployment's
database is read unchanged and rows polly writes keep upstream's conventions:

* timestamps are **naive UTC** (``*_aware`` properties give aware views);
* ``options_json`` / ``emojis_json`` are JSON text lists;
* ``status`` is one of ``scheduled``, ``active``, ``closed``;
* no column upstream lacks and no new NOT NULL column.

Defaults are client-side as upstream's; the same defaults are also declared server-side (what upstream's
SQLite migrations create: ``DEFAULT CURRENT_TIMESTAMP`` on ``created_at``, ``voted_at``, ``updated_at`` and
``applied_at``, rendered as UTC on every dialect by :class:`UtcNow`), so raw inserts that omit a column get
upstream's value too. The only additions are five indexes on the columns the hot paths filter by (see
:data:`HOT_PATH_INDEXES`).

Model behaviour is upstream's, including its edges: :meth:`Poll.get_winner` gives every option index when
nobody voted and ``None`` with no options; :attr:`Poll.emojis` is ``[]`` when ``emojis_json`` is NULL;
:attr:`Poll.options` raises on non-JSON ``options_json``; :func:`get_poll_emoji` gives ``❓`` out of range.
The engine never relies on these properties: it reads rows through checked views.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from polly.clock import utcnow_naive as utcnow_naive  # noqa: PLC0414 - re-exported for callers

logger = logging.getLogger(__name__)

#: Regional-indicator letters 🇦…🇯, upstream's default reaction per option.
POLL_EMOJIS: Final[list[str]] = [chr(0x1F1E6 + i) for i in range(10)]

STATUS_SCHEDULED: Final = "scheduled"
STATUS_ACTIVE: Final = "active"
STATUS_CLOSED: Final = "closed"
STATUSES: Final = frozenset({STATUS_SCHEDULED, STATUS_ACTIVE, STATUS_CLOSED})

#: The indexes upstream lacked that polly adds: (table, index name, columns).
HOT_PATH_INDEXES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("polls", "ix_polls_status", ("status",)),
    ("polls", "ix_polls_message_id", ("message_id",)),
    # the dashboard's list: a server's polls in one status, newest first, one page at a time
    ("polls", "ix_polls_server_id_status_id", ("server_id", "status", "id")),
    ("votes", "ix_votes_poll_id_user_id", ("poll_id", "user_id")),
    ("user_preferences", "ix_user_preferences_user_id", ("user_id",)),
)


def as_aware_utc(value: datetime) -> datetime:
    """A naive value read as UTC (upstream's convention); an aware one converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


#: What :func:`get_poll_emoji` gives for an index without a default letter (upstream's choice).
UNKNOWN_EMOJI: Final = "\u2753"


def get_poll_emoji(index: int) -> str:
    """The default emoji for option ``index`` (0-based): 🇦…🇯; out of range ``❓``, as upstream."""
    if 0 <= index < len(POLL_EMOJIS):
        return POLL_EMOJIS[index]
    return UNKNOWN_EMOJI


class UtcNow(FunctionElement[datetime]):
    """``CURRENT_TIMESTAMP`` as a server default, in UTC on every dialect (timestamps are naive UTC).

    SQLite's ``CURRENT_TIMESTAMP`` is UTC already (upstream's DDL); PostgreSQL's and MariaDB's follow
    the session time zone, so they get ``now() AT TIME ZONE 'utc'`` and ``UTC_TIMESTAMP()``.
    """

    type = DateTime()
    inherit_cache = True


@compiles(UtcNow)
def _utc_now_default(_element: UtcNow, _compiler: SQLCompiler, **_kw: object) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(UtcNow, "postgresql")
def _utc_now_postgresql(_element: UtcNow, _compiler: SQLCompiler, **_kw: object) -> str:
    return "(now() AT TIME ZONE 'utc')"


@compiles(UtcNow, "mysql")
@compiles(UtcNow, "mariadb")
def _utc_now_mysql(_element: UtcNow, _compiler: SQLCompiler, **_kw: object) -> str:
    return "(UTC_TIMESTAMP())"


class TypeSafeColumn:
    """Upstream's defensive readers: a column value coerced to the expected type, else the default."""

    @staticmethod
    def get_string(obj: object, column: str, default: str = "") -> str:
        value = getattr(obj, column, None)
        return default if value is None else str(value)

    @staticmethod
    def get_int(obj: object, column: str, default: int = 0) -> int:
        value = getattr(obj, column, None)
        if value is None:
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            return default

    @staticmethod
    def get_bool(obj: object, column: str, default: bool = False) -> bool:
        """SQLite stores 0/1 and raw SQL may store text: ``"1"``, ``"true"``, ``"yes"`` count as true."""
        value = getattr(obj, column, None)
        if value is None:
            return default
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)

    @staticmethod
    def get_datetime(obj: object, column: str, default: object = None) -> Any:
        """A datetime as an aware one (naive values are UTC by convention); any other value as it is
        (upstream: a raw string stays a string); ``None`` or a missing attribute gives ``default``."""
        value = getattr(obj, column, None)
        if isinstance(value, datetime):
            return as_aware_utc(value)
        return default if value is None else value


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base of polly's (and upstream's) tables; ``AsyncAttrs`` as upstream's models have
    (``await poll.awaitable_attrs.votes`` loads a relationship from async code)."""


def _json_list(raw: str | None, what: str, row_id: int | None, *, strict: bool = False) -> list[str] | None:
    """The JSON list in ``raw``; ``None`` when absent or (with a warning) not a list.

    Not JSON at all: ``None`` with a warning, or with ``strict`` the :class:`json.JSONDecodeError`.
    """
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        if strict:
            raise
        logger.warning("poll %s: %s is not valid JSON", row_id, what)
        return None
    if not isinstance(value, list):
        logger.warning("poll %s: %s is not a JSON list", row_id, what)
        return None
    return [str(v) for v in value]


class Poll(Base):
    __tablename__ = "polls"
    __table_args__ = (
        Index("ix_polls_status", "status"),
        Index("ix_polls_message_id", "message_id"),
        Index("ix_polls_server_id_status_id", "server_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    question: Mapped[str] = mapped_column(Text)
    options_json: Mapped[str] = mapped_column(Text)
    emojis_json: Mapped[str | None] = mapped_column(Text)
    image_path: Mapped[str | None] = mapped_column(String(500))
    image_message_text: Mapped[str | None] = mapped_column(Text)
    server_id: Mapped[str] = mapped_column(String(50))
    server_name: Mapped[str | None] = mapped_column(String(255))
    channel_id: Mapped[str] = mapped_column(String(50))
    channel_name: Mapped[str | None] = mapped_column(String(255))
    creator_id: Mapped[str] = mapped_column(String(50))
    message_id: Mapped[str | None] = mapped_column(String(50))
    ping_role_id: Mapped[str | None] = mapped_column(String(50))
    ping_role_name: Mapped[str | None] = mapped_column(String(255))
    ping_role_enabled: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    ping_role_on_close: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    ping_role_on_update: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    open_time: Mapped[datetime] = mapped_column(DateTime)
    close_time: Mapped[datetime] = mapped_column(DateTime)
    timezone: Mapped[str | None] = mapped_column(String(50), default="UTC", server_default=text("'UTC'"))
    anonymous: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    multiple_choice: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    max_choices: Mapped[int | None] = mapped_column(Integer)
    open_immediately: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, server_default=UtcNow()
    )
    status: Mapped[str | None] = mapped_column(
        String(20), default=STATUS_SCHEDULED, server_default=text("'scheduled'")
    )

    votes: Mapped[list[Vote]] = relationship(
        back_populates="poll", cascade="all, delete-orphan", order_by="Vote.voted_at.desc()"
    )

    @property
    def options(self) -> list[str]:
        """The option texts; ``[]`` when ``options_json`` is NULL or empty.

        Non-JSON ``options_json`` raises :class:`json.JSONDecodeError`, as upstream (a caller that
        gets ``[]`` would take a corrupt poll for one without options); a JSON non-list gives ``[]``.
        """
        if not self.options_json:
            return []
        return _json_list(self.options_json, "options_json", self.id, strict=True) or []

    @options.setter
    def options(self, value: list[str]) -> None:
        self.options_json = json.dumps(list(value))

    @property
    def emojis(self) -> list[str]:
        """The stored emojis; ``[]`` when ``emojis_json`` is NULL, empty or not a JSON list (upstream).

        Callers that need one emoji per option fall back to :data:`POLL_EMOJIS` themselves, as
        upstream's do.
        """
        return _json_list(self.emojis_json, "emojis_json", self.id) or []

    @emojis.setter
    def emojis(self, value: list[str]) -> None:
        self.emojis_json = json.dumps(list(value))

    def get_results(self) -> dict[int, int]:
        """Votes per option index, every option present (0 when unvoted); out-of-range votes ignored."""
        results = dict.fromkeys(range(len(self.options)), 0)
        for vote in self.votes:
            if vote.option_index in results:
                results[vote.option_index] += 1
        return results

    def get_total_votes(self) -> int:
        """Voters: distinct users for multiple choice, else the number of votes."""
        if TypeSafeColumn.get_bool(self, "multiple_choice"):
            return len({vote.user_id for vote in self.votes})
        return len(self.votes)

    def get_total_vote_count(self) -> int:
        """Every vote row, counting each choice of a multiple-choice voter."""
        return len(self.votes)

    def get_winner(self) -> list[int] | None:
        """The option indexes with the most votes (ties give several), as upstream: with no votes every
        option ties at 0, so every index; with no options ``None``."""
        results = self.get_results()
        if not results:
            return None
        top = max(results.values())
        return [index for index, count in results.items() if count == top]

    def should_show_results(self) -> bool:
        """Results are public unless the poll is anonymous and still open."""
        return self.status == STATUS_CLOSED or not TypeSafeColumn.get_bool(self, "anonymous")

    @property
    def open_time_aware(self) -> datetime:
        return as_aware_utc(self.open_time)

    @property
    def close_time_aware(self) -> datetime:
        return as_aware_utc(self.close_time)

    def __repr__(self) -> str:
        return f"<Poll id={self.id} status={self.status!r}>"


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (Index("ix_votes_poll_id_user_id", "poll_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    poll_id: Mapped[int] = mapped_column(Integer, ForeignKey("polls.id"))
    user_id: Mapped[str] = mapped_column(String(50))
    option_index: Mapped[int] = mapped_column(Integer)
    voted_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive, server_default=UtcNow())

    poll: Mapped[Poll] = relationship(back_populates="votes")

    def __repr__(self) -> str:
        return f"<Vote id={self.id} poll_id={self.poll_id} option_index={self.option_index}>"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    avatar: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, server_default=UtcNow()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, onupdate=utcnow_naive, server_default=UtcNow()
    )


class UserPreference(Base):
    """Not unique per user in upstream's schema: readers take the first row."""

    __tablename__ = "user_preferences"
    __table_args__ = (Index("ix_user_preferences_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    user_id: Mapped[str] = mapped_column(String(50), ForeignKey("users.id"))
    last_server_id: Mapped[str | None] = mapped_column(String(50))
    last_channel_id: Mapped[str | None] = mapped_column(String(50))
    last_role_id: Mapped[str | None] = mapped_column(String(50))
    default_timezone: Mapped[str | None] = mapped_column(
        String(50), default="US/Eastern", server_default=text("'US/Eastern'")
    )
    timezone_explicitly_set: Mapped[bool | None] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, onupdate=utcnow_naive, server_default=UtcNow()
    )

    user: Mapped[User] = relationship()


class Guild(Base):
    __tablename__ = "guilds"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    icon: Mapped[str | None] = mapped_column(String(500))
    owner_id: Mapped[str] = mapped_column(String(50))
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, onupdate=utcnow_naive, server_default=UtcNow()
    )


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    guild_id: Mapped[str] = mapped_column(String(50), ForeignKey("guilds.id"))
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(50))
    position: Mapped[int | None] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, onupdate=utcnow_naive, server_default=UtcNow()
    )

    guild: Mapped[Guild] = relationship()


class SchemaMigration(Base):
    """Upstream's migration ledger: one row per applied version (1..11)."""

    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    applied_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, server_default=UtcNow()
    )
