"""Decoding poll rows: the one corrupt-row rule, and immutable views of the rows that pass it.

The engine never holds ORM objects across a Discord call: it reads rows into :class:`PollView`
inside a short transaction and works with the view afterwards; the poll commands and the tolerant
bulk readers (:mod:`polly.db.queries`) decode through the same :func:`poll_view`. A row is corrupt
when it cannot be loaded at all (:data:`LOAD_ERRORS`: SQLite stores timestamps as text, MariaDB can
hold zero dates), when ``options_json`` / ``emojis_json`` is not a JSON list of strings, when it has
no options or fewer emojis than options, when its snowflakes are not numbers, or when a timestamp is
not one; :class:`~polly.errors.CorruptPollError` names the poll id and the column, and the caller
reports it and moves on to the next poll.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from polly.db.models import POLL_EMOJIS, Poll
from polly.db.transitions import is_claim
from polly.errors import CorruptPollError

__all__ = ["LOAD_ERRORS", "Decoded", "PollView", "load_poll", "poll_view"]

#: What loading a row with unparseable values raises (SQLite's datetime parser raises ValueError).
LOAD_ERRORS = (ValueError, TypeError, StatementError)


def _json_strings(poll_id: int, column: str, raw: str | None) -> list[str] | None:
    if raw is None or raw == "":
        return None
    try:
        value: Any = json.loads(raw)
    except ValueError as err:
        raise CorruptPollError(poll_id, column, f"is not valid JSON ({err})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CorruptPollError(poll_id, column, "is not a JSON list of strings")
    return value


def _snowflake(poll_id: int, column: str, raw: str | None, *, required: bool) -> int | None:
    if raw is None or raw == "":
        if required:
            raise CorruptPollError(poll_id, column, "is empty")
        return None
    try:
        return int(raw)
    except ValueError:
        raise CorruptPollError(poll_id, column, f"{raw!r} is not a Discord id") from None


def _naive_utc(poll_id: int, column: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CorruptPollError(poll_id, column, f"{value!r} is not a timestamp") from None
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    raise CorruptPollError(poll_id, column, f"{value!r} is not a timestamp")


@dataclass(frozen=True, slots=True)
class PollView:
    """What the engine needs of a poll. Times are naive UTC; ids are ints."""

    id: int
    name: str
    question: str
    options: tuple[str, ...]
    emojis: tuple[str, ...]
    server_id: int
    channel_id: int
    message_id: int | None
    claim: str | None
    status: str
    open_time: datetime
    close_time: datetime
    timezone: str
    anonymous: bool
    multiple_choice: bool
    max_choices: int | None
    ping_role_enabled: bool
    ping_role_id: int | None
    ping_role_on_close: bool
    image_message_text: str | None
    image_path: str | None = None
    created_at: datetime | None = None

    @property
    def removes_reactions(self) -> bool:
        """Upstream removes the voter's reaction after recording for anonymous and single-choice polls."""
        return self.anonymous or not self.multiple_choice

    def option_for(self, emoji: str) -> int | None:
        """The option index ``emoji`` stands for, or ``None``."""
        try:
            return self.emojis.index(emoji)
        except ValueError:
            return None


def poll_view(row: Any) -> PollView:
    """Decode an ORM ``Poll`` (or a row with the same attributes) into a :class:`PollView`."""
    poll_id = int(row.id)
    options = _json_strings(poll_id, "options_json", row.options_json)
    if not options:
        raise CorruptPollError(poll_id, "options_json", "has no options")
    emojis = _json_strings(poll_id, "emojis_json", row.emojis_json)
    if emojis is None:
        emojis = list(POLL_EMOJIS[: len(options)])
    if len(emojis) < len(options):
        raise CorruptPollError(poll_id, "emojis_json", f"has {len(emojis)} emojis for {len(options)} options")
    raw_message = row.message_id
    claim = raw_message if is_claim(raw_message) else None
    message_id = None if claim else _snowflake(poll_id, "message_id", raw_message, required=False)
    created_at = getattr(row, "created_at", None)
    return PollView(
        id=poll_id,
        name=str(row.name),
        question=str(row.question),
        options=tuple(options),
        emojis=tuple(emojis[: len(options)]),
        server_id=_snowflake(poll_id, "server_id", row.server_id, required=True) or 0,
        channel_id=_snowflake(poll_id, "channel_id", row.channel_id, required=True) or 0,
        message_id=message_id,
        claim=claim,
        status=str(row.status or "scheduled"),
        open_time=_naive_utc(poll_id, "open_time", row.open_time),
        close_time=_naive_utc(poll_id, "close_time", row.close_time),
        timezone=str(row.timezone or "UTC"),
        anonymous=bool(row.anonymous),
        multiple_choice=bool(row.multiple_choice),
        max_choices=int(row.max_choices) if row.max_choices is not None else None,
        ping_role_enabled=bool(row.ping_role_enabled),
        ping_role_id=_snowflake(poll_id, "ping_role_id", row.ping_role_id, required=False),
        ping_role_on_close=bool(row.ping_role_on_close),
        image_message_text=row.image_message_text or None,
        image_path=row.image_path or None,
        created_at=None if created_at is None else _naive_utc(poll_id, "created_at", created_at),
    )


class Decoded(NamedTuple):
    """A row that passed the corrupt-row rule, and its view."""

    row: Poll
    view: PollView


def load_poll(session: Session, poll_id: int) -> Decoded | None:
    """The row and its view, ``None`` if there is no such poll; :class:`CorruptPollError` for a row
    that cannot be loaded (column ``row``) or decoded."""
    try:
        row = session.get(Poll, poll_id, populate_existing=True)
    except LOAD_ERRORS as err:
        raise CorruptPollError(poll_id, "row", f"cannot be read ({err})") from err
    return None if row is None else Decoded(row, poll_view(row))
