"""An in-process Discord stand-in implementing :class:`~polly.engine.gateway.Gateway`.

The world it serves (guilds, channels, messages, reactions, the simulated users' acts and the ground
truth) is :class:`~polly.sandbox.world.SandboxWorld`; this adds the lifecycle, the raw event
methods and the REST operations, each of which draws its faults first.

Faults (:class:`FaultRates`) are drawn per REST call from the injected RNG: at most one of
not found, forbidden, 429, 5xx or "message deleted" (the message really goes, for good), plus
latency slept with the injected ``sleep``. A 429 blocks the channel for its retry-after on the
injected clock; a call inside that window fails again and counts as a rate-limit violation.

Like Discord: the bot's own reactions raise ``add`` events; removing a user's reaction raises a
``remove`` event naming that user; clearing reactions raises none.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Unpack

from polly.clock import Monotonic, Sleep
from polly.engine.gateway import (
    MAX_REACTIONS_PER_MESSAGE,
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    KnownBotReadiness,
    PostedMessage,
    ReactionCount,
    ReactionUser,
    ShedReportingEvents,
    check_edit,
    check_message,
    check_page_limit,
    check_poll_emojis,
)
from polly.errors import GatewayError, RateLimitedError
from polly.sandbox.faults import FaultInjector, FaultRates
from polly.sandbox.truth import SandboxCounters
from polly.sandbox.world import SANDBOX_BOT_ID, SandboxWorld, WorldOptions

__all__ = ["SANDBOX_BOT_ID", "FaultRates", "SandboxGateway"]

_DM_BUCKET = -1  # rate-limit key shared by every DM


class SandboxGateway(KnownBotReadiness, ShedReportingEvents, SandboxWorld):
    """The sandbox gateway. ``rng``, ``clock`` (monotonic seconds) and ``sleep`` are injected, and so
    is the world's ``wall_clock`` (naive UTC, when events are taken in; default the real one); the
    other keywords are :class:`~polly.sandbox.world.SandboxWorld`'s."""

    def __init__(
        self,
        *,
        rng: random.Random,
        clock: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        faults: FaultRates | None = None,
        **world: Unpack[WorldOptions],
    ) -> None:
        super().__init__(**world)
        self._injector = FaultInjector(faults or FaultRates(), rng=rng, clock=clock, sleep=sleep)
        self.recent_dms: deque[tuple[int, str | None, Embed | None]] = deque(maxlen=100)
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed.clear()
        self._ready.set()
        await self._closed.wait()

    async def close(self) -> None:
        self._ready.clear()
        self._closed.set()

    def set_faults(self, faults: FaultRates) -> None:
        """Change the fault rates from now on (storms in a soak)."""
        self._injector.rates = faults

    def counters(self) -> SandboxCounters:
        c = self._count
        return SandboxCounters(
            user_adds=c["user_adds"],
            user_removes=c["user_removes"],
            refused=c["refused"],
            bot_adds=c["bot_adds"],
            bot_removals=c["bot_removals"],
            clears=c["clears"],
            calls=c["calls"],
            faults=dict(self._injector.injected),
            rate_limit_violations=self._injector.violations,
            messages=len(self._messages),
            deleted_messages=c["deleted"],
            evicted_messages=c["evicted"],
            channels=len(self._channels),
            tracked_voters=self._tracked,
            dms=c["dms"],
        )

    # --- the Gateway operations --------------------------------------------------------------------

    async def _enter(self, what: str, channel_id: int, message_id: int | None = None) -> None:
        self._count["calls"] += 1
        if await self._injector.draw(
            what, channel_id, message_id is not None and message_id in self._messages
        ):
            assert message_id is not None
            self.delete_message(message_id)

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Sequence[str], content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        check_poll_emojis(emojis)
        message_id = await self.send_message(
            channel_id, content=content, embed=embed, allowed_mentions=allowed_mentions
        )
        missing: list[str] = []
        last: GatewayError | None = None
        for emoji in emojis:
            if missing and isinstance(last, RateLimitedError):
                missing.append(emoji)  # inside the retry-after window: not called
                continue
            try:
                await self.add_reaction(channel_id, message_id, emoji)
            except GatewayError as err:
                missing.append(emoji)
                last = err
        return PostedMessage(message_id, tuple(missing))

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        check_edit(embed, content)
        what = f"edit message {message_id} in channel {channel_id}"
        await self._enter(what, channel_id, message_id)
        target = self._live(what, channel_id, message_id)
        if content is not None:
            check_message(content, embed)
            target.content = content
        if embed is not None:
            target.embed = embed

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        what = f"add reaction {emoji} to message {message_id}"
        await self._enter(what, channel_id, message_id)
        msg = self._live(what, channel_id, message_id)
        users = msg.reactions.get(emoji)
        if users is None:
            if len(msg.reactions) >= MAX_REACTIONS_PER_MESSAGE:
                text = f"{what}: HTTP 400 (30010): at most {MAX_REACTIONS_PER_MESSAGE} reactions per message"
                raise GatewayError(text)
            users = msg.reactions[emoji] = set()
        if self._bot not in users:
            users.add(self._bot)
            self._count["bot_adds"] += 1
            self._set_votable(msg)
            self._emit("add", msg, self._bot, emoji)

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        what = f"clear reactions of message {message_id}"
        await self._enter(what, channel_id, message_id)
        msg = self._live(what, channel_id, message_id)
        msg.reactions.clear()
        self._count["clears"] += 1
        self._set_votable(msg)

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        what = f"remove reaction {emoji} of user {user_id} from message {message_id}"
        await self._enter(what, channel_id, message_id)
        msg = self._live(what, channel_id, message_id)
        users = msg.reactions.get(emoji)
        if users is not None and user_id in users:
            users.discard(user_id)
            self._count["bot_removals"] += 1
            self._set_votable(msg)
            self._emit("remove", msg, user_id, emoji)

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        what = f"fetch message {message_id} in channel {channel_id}"
        await self._enter(what, channel_id, message_id)
        msg = self._live(what, channel_id, message_id)
        counts = tuple(ReactionCount(e, len(u), self._bot in u) for e, u in msg.reactions.items() if u)
        return FetchedMessage(msg.id, msg.channel_id, counts)

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        check_page_limit(limit)
        what = f"list users of reaction {emoji} on message {message_id}"
        await self._enter(what, channel_id, message_id)
        users = sorted(
            u for u in self._live(what, channel_id, message_id).reactions.get(emoji, ()) if u > after
        )
        return tuple(ReactionUser(u, u in self._bots) for u in users[:limit])

    async def send_message(
        self, channel_id: int, *, content: str | None = None, embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS, attachment: Path | None = None,
    ) -> int:  # fmt: skip
        check_message(content, embed, attachment)
        await self._enter(f"send a message to channel {channel_id}", channel_id)
        message = self._store(channel_id, content, embed, allowed_mentions)
        message.attachment = attachment.name if attachment is not None else None
        return message.id

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        check_message(content, embed)
        await self._enter(f"send a DM to user {user_id}", _DM_BUCKET)
        self._count["dms"] += 1
        self.recent_dms.append((user_id, content, embed))
        return next(self._ids)
