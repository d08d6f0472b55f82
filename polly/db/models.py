"""The ORM models: upstream Polly's schema, column for column, in SQLAlchemy 2.x typed style.

Tables, column names, types, lengths and nullability are upstream's (``polls``, ``votes``, ``users``,
``user_preferences``, ``guilds``, ``channels``, ``schema_migrations``), so an existing deployment's
database is read unchanged and rows polly writes keep upstream's conventions:

* timestamps are **naive UTC** (``*_aware`` properties give aware views);
* ``options_json`` / ``emojis_json`` are JSON text lists;
* ``status`` is one of ``scheduled``, ``active``, ``closed``;
* no column upstream lacks and no new NOT NULL column.

Defaults are client-side as upstream's; the same defaults are also declared server-side (what upstream's
SQLite migrations create), so raw inserts that omit a column get upstream's value too. The only additions
are four indexes on the columns the hot paths filter by (see :data:`HOT_PATH_INDEXES`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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
    ("votes", "ix_votes_poll_id_user_id", ("poll_id", "user_id")),
    ("user_preferences", "ix_user_preferences_user_id", ("user_id",)),
)


def utcnow_naive() -> datetime:
    """Now in UTC without tzinfo: the form upstream stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_aware_utc(value: datetime) -> datetime:
    """A naive value read as UTC (upstream's convention); an aware one converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def get_poll_emoji(index: int) -> str:
    """The default emoji for option ``index`` (0-based); out of range gives the first letter, as upstream."""
    if 0 <= index < len(POLL_EMOJIS):
        return POLL_EMOJIS[index]
    return POLL_EMOJIS[0]


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
    def get_datetime(obj: object, column: str, default: datetime | None = None) -> datetime | None:
        """The value as an aware UTC datetime (naive values are UTC by convention), else ``default``."""
        value = getattr(obj, column, None)
        if isinstance(value, datetime):
            return as_aware_utc(value)
        return default


class Base(DeclarativeBase):
    """Declarative base of polly's (and upstream's) tables."""


def _json_list(raw: str | None, what: str, row_id: int | None) -> list[str] | None:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
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
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive)
    status: Mapped[str | None] = mapped_column(
        String(20), default=STATUS_SCHEDULED, server_default=text("'scheduled'")
    )

    votes: Mapped[list[Vote]] = relationship(
        back_populates="poll", cascade="all, delete-orphan", order_by="Vote.voted_at.desc()"
    )

    @property
    def options(self) -> list[str]:
        """The option texts; ``[]`` (and a warning) when ``options_json`` is not a JSON list."""
        return _json_list(self.options_json, "options_json", self.id) or []

    @options.setter
    def options(self, value: list[str]) -> None:
        self.options_json = json.dumps(list(value))

    @property
    def emojis(self) -> list[str]:
        """One emoji per option: the stored list, else upstream's default letters for the options."""
        stored = _json_list(self.emojis_json, "emojis_json", self.id)
        if stored is not None:
            return stored
        return [get_poll_emoji(i) for i in range(min(len(self.options), len(POLL_EMOJIS)))]

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

    def get_winner(self) -> list[int]:
        """The option indexes with the most votes (ties give several); ``[]`` with no votes."""
        results = self.get_results()
        top = max(results.values(), default=0)
        if top == 0:
            return []
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
    voted_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive)

    poll: Mapped[Poll] = relationship(back_populates="votes")

    def __repr__(self) -> str:
        return f"<Vote id={self.id} poll_id={self.poll_id} option_index={self.option_index}>"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    avatar: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive, onupdate=utcnow_naive)


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
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive, onupdate=utcnow_naive)


class Guild(Base):
    __tablename__ = "guilds"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    icon: Mapped[str | None] = mapped_column(String(500))
    owner_id: Mapped[str] = mapped_column(String(50))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive, onupdate=utcnow_naive)


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    guild_id: Mapped[str] = mapped_column(String(50), ForeignKey("guilds.id"))
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(50))
    position: Mapped[int | None] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive, onupdate=utcnow_naive)


class SchemaMigration(Base):
    """Upstream's migration ledger: one row per applied version (1..11)."""

    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive)
