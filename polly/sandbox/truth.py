"""The sandbox's ground truth: what users did with reactions, as immutable snapshots.

Per message and user the sandbox keeps one small tally per emoji (adds, the user's own removes,
whether the user's last act was an add, and when). Removals *by the bot* never change a tally: the
tally is the user's intent, which is what a vote must reflect. Expected votes follow from it:

- single choice: the user's :attr:`VoterTruth.last_added` emoji (upstream replaces the vote);
- multiple choice: :attr:`VoterTruth.held`, the emojis whose last user act was an add.

Memory is bounded by the sandbox's ``max_tracked_voters`` (message, user) pairs, each with at most
20 emojis (Discord's per-message reaction limit); reactions beyond the cap are refused and counted,
so the truth is complete for everything the sandbox accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polly.engine.gateway import AllowedMentions, Embed


@dataclass(slots=True)
class Tally:
    """A user's acts with one emoji on one message (mutable, internal to the sandbox)."""

    adds: int = 0
    removes: int = 0
    held: bool = False
    last_add_seq: int = 0


@dataclass(frozen=True, slots=True)
class VoterTruth:
    """One user's acts on one message. ``adds``/``removes`` count the user's own acts per emoji."""

    user_id: int
    adds: Mapping[str, int]
    removes: Mapping[str, int]
    held: frozenset[str]
    last_added: str | None

    @classmethod
    def of(cls, user_id: int, tallies: Mapping[str, Tally]) -> VoterTruth:
        last = max(tallies.items(), key=lambda kv: kv[1].last_add_seq, default=None)
        return cls(
            user_id=user_id,
            adds={e: t.adds for e, t in tallies.items()},
            removes={e: t.removes for e, t in tallies.items()},
            held=frozenset(e for e, t in tallies.items() if t.held),
            last_added=last[0] if last is not None and last[1].adds else None,
        )


@dataclass(frozen=True, slots=True)
class MessageTruth:
    """A message as the sandbox holds it: its last content and embed, who it may ping, the name of
    the file sent with it, whether it was deleted, the current reactions (emoji → user ids, the bot
    included) and every user's acts."""

    message_id: int
    channel_id: int
    guild_id: int
    content: str | None
    embed: Embed | None
    allowed_mentions: AllowedMentions
    attachment: str | None
    deleted: bool
    reactions: Mapping[str, frozenset[int]]
    voters: Mapping[int, VoterTruth]


@dataclass(frozen=True, slots=True)
class SandboxCounters:
    """Totals since the sandbox was built.

    ``user_adds``/``user_removes``: reaction acts by (simulated) users that were accepted;
    ``refused``: user acts refused at a cap (never part of the truth); ``bot_adds``/``bot_removals``/
    ``clears``: the engine's reaction calls that succeeded; ``faults``: injected failures by kind;
    ``rate_limit_violations``: calls made to a channel while its injected retry-after was running;
    ``calls``: REST calls made; ``messages``/``deleted_messages``/``evicted_messages``/``channels``:
    what is held; ``dms``: direct messages sent.
    """

    user_adds: int
    user_removes: int
    refused: int
    bot_adds: int
    bot_removals: int
    clears: int
    calls: int
    faults: Mapping[str, int]
    rate_limit_violations: int
    messages: int
    deleted_messages: int
    evicted_messages: int
    channels: int
    tracked_voters: int
    dms: int
