"""The sandbox's Discord world: guilds, channels, messages and reactions in memory, and its ground truth.

Channels are created on first use (``default_guild_id`` unless :meth:`SandboxWorld.ensure_channel`
named the guild), so any guild and channel a database's polls refer to can be served. Simulated
users act through :meth:`SandboxWorld.user_add_reaction` / :meth:`~SandboxWorld.user_remove_reaction`
(see :class:`polly.sandbox.voters.SandboxVoters`), which feed both the raw event queue and the ground
truth (:mod:`polly.sandbox.truth`). Every bound is explicit (``max_messages``, ``max_channels``,
``max_tracked_voters``, ``max_events``); a full store evicts an old message without votes.

The operations Discord's API offers on this world (and their faults) are
:class:`polly.sandbox.gateway.SandboxGateway`'s.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from polly.engine.gateway import (
    MAX_REACTIONS_PER_MESSAGE,
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    ReactionEvent,
    ReactionEventQueue,
)
from polly.errors import GatewayError, NotFoundError
from polly.sandbox.truth import MessageTruth, Tally, VoterTruth

SANDBOX_BOT_ID = 1_100_000_000_000_000_001
_FIRST_MESSAGE_ID = 1_300_000_000_000_000_000
_EVICTION_SCAN = 64  # how many of the oldest messages eviction looks at for one without votes


@dataclass(slots=True)
class _Message:
    id: int
    channel_id: int
    guild_id: int
    content: str | None
    embed: Embed | None
    allowed_mentions: AllowedMentions
    attachment: str | None = None
    deleted: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    voters: dict[int, dict[str, Tally]] = field(default_factory=dict)


class WorldOptions(TypedDict, total=False):
    """:class:`SandboxWorld`'s keyword arguments, for a subclass to pass on."""

    bot_user_id: int
    other_bot_ids: Iterable[int]
    default_guild_id: int
    max_events: int
    max_messages: int
    max_channels: int
    max_tracked_voters: int
    wall_clock: Callable[[], datetime] | None


class SandboxWorld:
    """What the sandbox's Discord holds, and what its users do to it (no API calls, no faults)."""

    def __init__(
        self,
        *,
        bot_user_id: int = SANDBOX_BOT_ID,
        other_bot_ids: Iterable[int] = (),
        default_guild_id: int = 1,
        max_events: int = 10_000,
        max_messages: int = 50_000,
        max_channels: int = 10_000,
        max_tracked_voters: int = 500_000,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        if min(max_messages, max_channels, max_tracked_voters) < 1:
            msg = "max_messages, max_channels and max_tracked_voters must each be at least 1"
            raise ValueError(msg)
        self._bot = bot_user_id
        self._bots = frozenset({bot_user_id, *other_bot_ids})
        self._default_guild = default_guild_id
        self._max_messages, self._max_channels, self._max_voters = (
            max_messages,
            max_channels,
            max_tracked_voters,
        )
        self._events = ReactionEventQueue(max_events, clock=wall_clock)
        self._channels: dict[int, int] = {}  # channel -> guild
        self._messages: OrderedDict[int, _Message] = OrderedDict()
        self._votable: list[int] = []  # messages carrying bot reactions: what voters pick from
        self._votable_at: dict[int, int] = {}
        self._ids = itertools.count(_FIRST_MESSAGE_ID)
        self._seq = itertools.count(1)
        self._count: Counter[str] = Counter()
        self._tracked = 0

    # --- world -------------------------------------------------------------------------------------

    def ensure_channel(self, channel_id: int, guild_id: int) -> None:
        """Make ``channel_id`` a channel of ``guild_id`` (what a database's poll rows say)."""
        if channel_id not in self._channels:
            self._guild_of(channel_id)
        self._channels[channel_id] = guild_id

    def _guild_of(self, channel_id: int) -> int:
        guild = self._channels.get(channel_id)
        if guild is None:
            if len(self._channels) >= self._max_channels:
                msg = f"channel {channel_id}: not found (the sandbox holds its limit of {self._max_channels})"
                raise NotFoundError(msg)
            guild = self._channels[channel_id] = self._default_guild
        return guild

    def continue_after(self, last_message_id: int) -> None:
        """Give new messages ids above ``last_message_id`` (what a database continued from holds)."""
        nxt = next(self._ids)
        self._ids = itertools.count(max(nxt, last_message_id + 1))

    def adopt_message(self, message_id: int, channel_id: int, emojis: Sequence[str]) -> bool:
        """Recreate a poll message a previous run posted (same id, the bot's reactions ``emojis``),
        so its voters can vote on it again; ``False`` if it exists or the message cap is reached."""
        if message_id in self._messages or len(self._messages) >= self._max_messages:
            return False
        message = _Message(message_id, channel_id, self._guild_of(channel_id), None, None, NO_MENTIONS)
        message.reactions = {e: {self._bot} for e in emojis[:MAX_REACTIONS_PER_MESSAGE]}
        self._messages[message_id] = message
        self._set_votable(message)
        self.continue_after(message_id)
        return True

    def delete_message(self, message_id: int) -> None:
        """Delete a message as a moderator would; its truth is kept."""
        msg = self._messages.get(message_id)
        if msg is not None and not msg.deleted:
            msg.deleted = True
            msg.reactions.clear()
            self._count["deleted"] += 1
            self._set_votable(msg)

    def pick_votable(self, rng: random.Random) -> tuple[int, list[str]] | None:
        """A random live message with bot reactions and those emojis, or ``None`` if there is none."""
        if not self._votable:
            return None
        msg = self._messages[self._votable[rng.randrange(len(self._votable))]]
        return msg.id, [e for e, users in msg.reactions.items() if self._bot in users]

    def has_reaction(self, message_id: int, user_id: int, emoji: str) -> bool:
        msg = self._messages.get(message_id)
        return msg is not None and user_id in msg.reactions.get(emoji, ())

    def user_add_reaction(self, message_id: int, user_id: int, emoji: str) -> bool:
        """A user reacts. Returns ``False`` (no event, no truth) if the message is gone, the user
        already reacted so, or a cap refuses it (20 emojis per message, ``max_tracked_voters``)."""
        msg = self._messages.get(message_id)
        if msg is None or msg.deleted or user_id in msg.reactions.get(emoji, ()):
            return False
        new_pair = user_id not in msg.voters
        if (emoji not in msg.reactions and len(msg.reactions) >= MAX_REACTIONS_PER_MESSAGE) or (
            new_pair and self._tracked >= self._max_voters
        ):
            self._count["refused"] += 1
            return False
        if new_pair:
            self._tracked += 1
        tally = msg.voters.setdefault(user_id, {}).setdefault(emoji, Tally())
        tally.adds, tally.held, tally.last_add_seq = tally.adds + 1, True, next(self._seq)
        msg.reactions.setdefault(emoji, set()).add(user_id)
        self._count["user_adds"] += 1
        self._emit("add", msg, user_id, emoji)
        return True

    def user_remove_reaction(self, message_id: int, user_id: int, emoji: str) -> bool:
        """A user takes a reaction back; ``False`` if they had none of that emoji there."""
        msg = self._messages.get(message_id)
        if msg is None or user_id not in msg.reactions.get(emoji, ()):
            return False
        msg.reactions[emoji].discard(user_id)
        tally = msg.voters.get(user_id, {}).get(emoji)
        if tally is not None:  # a bot's reaction (e.g. our own) has no tally
            tally.removes, tally.held = tally.removes + 1, False
        self._count["user_removes"] += 1
        self._emit("remove", msg, user_id, emoji)
        return True

    # --- ground truth ------------------------------------------------------------------------------

    def truth(self, message_id: int) -> MessageTruth:
        """Everything known about one message, deleted or not (``KeyError`` if never posted or evicted)."""
        m = self._messages[message_id]
        return MessageTruth(
            message_id=m.id,
            channel_id=m.channel_id,
            guild_id=m.guild_id,
            content=m.content,
            embed=m.embed,
            allowed_mentions=m.allowed_mentions,
            attachment=m.attachment,
            deleted=m.deleted,
            reactions={e: frozenset(u) for e, u in m.reactions.items() if u},
            voters={uid: VoterTruth.of(uid, t) for uid, t in m.voters.items()},
        )

    def message_ids(self) -> list[int]:
        """Every message held, oldest first (at most ``max_messages``)."""
        return list(self._messages)

    # --- plumbing ----------------------------------------------------------------------------------

    def _emit(self, kind: str, msg: _Message, user_id: int, emoji: str) -> None:
        self._events.offer(
            ReactionEvent(
                "add" if kind == "add" else "remove",
                msg.guild_id,
                msg.channel_id,
                msg.id,
                user_id,
                emoji,
                is_bot=user_id in self._bots,
            )
        )

    def _set_votable(self, msg: _Message) -> None:
        votable = not msg.deleted and any(self._bot in u for u in msg.reactions.values())
        if votable and msg.id not in self._votable_at:
            self._votable_at[msg.id] = len(self._votable)
            self._votable.append(msg.id)
        elif not votable and msg.id in self._votable_at:
            i = self._votable_at.pop(msg.id)
            last = self._votable.pop()
            if last != msg.id:
                self._votable[i], self._votable_at[last] = last, i

    def _live(self, what: str, channel_id: int, message_id: int) -> _Message:
        msg = self._messages.get(message_id)
        if msg is None or msg.deleted or msg.channel_id != channel_id:
            text = f"{what}: not found (404, Unknown Message)"
            raise NotFoundError(text)
        return msg

    def _store(
        self, channel_id: int, content: str | None, embed: Embed | None, mentions: AllowedMentions
    ) -> _Message:
        guild = self._guild_of(channel_id)
        if len(self._messages) >= self._max_messages:
            oldest = itertools.islice(self._messages.values(), _EVICTION_SCAN)
            victim = next((m for m in oldest if not m.voters), None)
            if victim is None:
                msg = (
                    f"the sandbox holds its limit of {self._max_messages} messages and the "
                    f"{_EVICTION_SCAN} oldest have votes; raise max_messages"
                )
                raise GatewayError(msg)
            victim.reactions.clear()
            self._set_votable(victim)
            del self._messages[victim.id]
            self._count["evicted"] += 1
        message = _Message(next(self._ids), channel_id, guild, content, embed, mentions)
        self._messages[message.id] = message
        return message
