"""The scheduler's permanent and not-so-permanent failures: Discord's 400s are final for a poll and
reported once; a final edit answered 404 is retried until 404s have lasted the orphan period; a
poll closed elsewhere pings its role once."""

from __future__ import annotations

import logging
import random

import pytest

from polly.engine.finalizer import FINAL_RETRY_INITIAL_SECONDS
from polly.errors import GatewayError, NotFoundError
from polly.polls.service import close_poll
from polly.sandbox.gateway import SandboxGateway
from tests.polly.engine.harness import harness

EMOJIS = [chr(0x1F1E6 + i) for i in range(22)]  # 🇦..🇻: 22 options, 2 over Discord's cap
ROLE = 555


class Recording(SandboxGateway):
    """The sandbox, counting reaction adds and failing final edits with 404 while ``gone``."""

    gone = 0  # edits still to fail with 404 (-1: forever)
    adds = 0
    edits = 0

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        self.adds += 1
        await super().add_reaction(channel_id, message_id, emoji)

    async def edit_message(self, channel_id: int, message_id: int, **kwargs: object) -> None:
        self.edits += 1
        if self.gone:
            self.gone -= 1 if self.gone > 0 else 0
            msg = f"edit message {message_id}: not found (404, Discord code 10008)"
            raise NotFoundError(msg)
        await super().edit_message(channel_id, message_id, **kwargs)  # type: ignore[arg-type]


def _gateway(clock: object) -> Recording:
    return Recording(rng=random.Random(3), clock=clock.monotonic)  # type: ignore[attr-defined]


async def test_more_than_20_options_get_20_reactions_and_one_report(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "polly.engine.scheduler")
    async with harness(sqlite_url) as h:
        gateway = _gateway(h.clock)
        engine = h.engine(gateway)
        poll_id = await h.add_poll(options=[f"o{i}" for i in range(22)], emojis=EMOJIS)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        assert set(gateway.truth(message).reactions) == set(EMOJIS[:20])
        assert gateway.adds == 20
        for _ in range(5):
            h.clock.advance(seconds=5)
            await engine.scheduler.tick()
        assert gateway.adds == 20  # nothing retried on later ticks
        reports = [r for r in caplog.records if "refused by Discord for good" in r.getMessage()]
        assert len(reports) == 1, [r.getMessage() for r in reports]
        assert "22 options" in reports[0].getMessage()


async def test_a_permanent_400_on_a_reaction_is_not_retried(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "polly.engine.scheduler")
    bad = "<:gone:123456789012345678>"

    class UnknownEmoji(Recording):
        async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
            if emoji == bad:
                self.adds += 1
                msg = f"add reaction {emoji}: Discord answered HTTP 400 (code 10014): Unknown Emoji"
                raise GatewayError(msg)
            await super().add_reaction(channel_id, message_id, emoji)

    async with harness(sqlite_url) as h:
        gateway = UnknownEmoji(rng=random.Random(3), clock=h.clock.monotonic)
        engine = h.engine(gateway)
        poll_id = await h.add_poll(emojis=["🇦", bad, "🇨"])
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        assert set(gateway.truth(message).reactions) == {"🇦", "🇨"}  # the others still added
        assert gateway.adds == 3
        for _ in range(3):
            h.clock.advance(seconds=5)
            await engine.scheduler.tick()
        assert gateway.adds == 3
        assert sum("refused by Discord for good" in r.getMessage() for r in caplog.records) == 1


async def test_a_final_edit_answered_404_once_is_retried(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        gateway = _gateway(h.clock)
        engine = h.engine(gateway)
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        gateway.gone = 1
        h.clock.advance(hours=2)
        await engine.scheduler.tick()  # closes; the final edit gets a 404
        assert (await h.poll(poll_id)).status == "closed"
        await engine.scheduler.tick()  # within the backoff: not tried again yet
        assert gateway.edits == 1
        h.clock.advance(seconds=FINAL_RETRY_INITIAL_SECONDS)
        await engine.scheduler.tick()
        assert gateway.edits == 2
        embed = gateway.truth(message).embed
        assert embed is not None
        assert "Closed" in embed.fields[0].value
        assert gateway.truth(message).reactions == {}


async def test_only_404s_over_the_orphan_period_mean_the_message_is_gone(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "polly.engine.scheduler")
    async with harness(sqlite_url, orphan_after_seconds=60) as h:
        gateway = _gateway(h.clock)
        engine = h.engine(gateway)
        await h.add_poll()
        await engine.scheduler.tick()
        gateway.gone = -1
        h.clock.advance(hours=2)
        await engine.scheduler.tick()
        for _ in range(40):  # 80 s in 2 s steps: retried with backoff, then given up on
            h.clock.advance(seconds=2)
            await engine.scheduler.tick()
        edits = gateway.edits
        assert 3 <= edits <= 8, edits  # backoff 2, 4, 8, 16, 32 s, not one per tick
        gone = [r for r in caplog.records if "its message is gone" in r.getMessage()]
        assert len(gone) == 1
        h.clock.advance(minutes=10)
        await engine.scheduler.tick()
        assert gateway.edits == edits  # given up: no more calls


async def test_a_poll_closed_elsewhere_pings_its_role_once_across_replicas(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        first, second = h.engine(replica="r1"), h.engine(replica="r2")
        poll_id = await h.add_poll(ping_role_enabled=True, ping_role_id=str(ROLE), ping_role_on_close=True)
        await first.scheduler.tick()
        await second.scheduler.tick()
        await first.scheduler.tick()
        await second.scheduler.tick()
        message = await h.message_of(poll_id)
        before = set(h.sandbox.message_ids())
        assert close_poll(h.database, poll_id) == "active"
        await first.scheduler.tick()
        await second.scheduler.tick()
        new = [m for m in h.sandbox.message_ids() if m not in before]
        assert len(new) == 1, new
        ping = h.sandbox.truth(new[0])
        assert ping.content is not None
        assert ping.content.startswith(f"<@&{ROLE}> 📊 **Colours** has closed.")
        assert ping.allowed_mentions.roles == (ROLE,)
        assert h.sandbox.truth(message).reactions == {}
