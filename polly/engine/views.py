"""Immutable views of poll rows, decoded once and checked, so a corrupt row fails in one place.

The engine never holds ORM objects across a Discord call: it reads rows into :class:`PollView`
inside a short transaction and works with the view afterwards. A row whose ``options_json`` /
``emojis_json`` is not a JSON list of strings, whose option and emoji counts disagree, or whose
snowflakes are not numbers raises :class:`CorruptPollError` naming the poll id and the column; the
caller reports it and moves on to the next poll.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from polly.db.models import POLL_EMOJIS
from polly.errors import PollyError

#: ``message_id`` holds a claim token while a replica posts a poll: ``claim:<replica>:<epoch s>``.
CLAIM_PREFIX = "claim:"


class CorruptPollError(PollyError):
    """A poll row that cannot be used; ``poll_id`` and ``column`` say which and where."""

    def __init__(self, poll_id: int, column: str, problem: str) -> None:
        self.poll_id = poll_id
        self.column = column
        super().__init__(f"poll {poll_id}: {column}: {problem}")


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
        raise CorruptPollError(poll_id, "emojis_json", f"{len(emojis)} emojis for {len(options)} options")
    raw_message = row.message_id
    claim = raw_message if isinstance(raw_message, str) and raw_message.startswith(CLAIM_PREFIX) else None
    message_id = None if claim else _snowflake(poll_id, "message_id", raw_message, required=False)
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
    )
