"""Both gateways, the discord.py adapter (on the REST fake and on the loopback Discord) and the
sandbox, behave alike for every operation the engine uses."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import discord.http
import pytest
from pydantic import SecretStr

from polly.engine.discord_adapter import DiscordGateway, reaction_route_emoji
from polly.engine.gateway import Embed, EmbedField, Gateway
from polly.errors import NotFoundError, PollValidationError
from polly.sandbox.gateway import SandboxGateway
from tests.discord_standin import DiscordStandin
from tests.polly.engine.fake_discord import FakeDiscord

CHANNEL = 4242
CUSTOM = "<:yes:777000000000000001>"


class _React(Protocol):
    def __call__(self, message_id: int, user_id: int, emoji: str) -> None: ...


@dataclass
class Subject:
    gateway: Gateway
    react: _React  # a user reacts, out of band (as on Discord)


@pytest.fixture(params=["discord", "standin", "sandbox"])
async def subject(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Subject]:
    if request.param == "sandbox":
        sandbox = SandboxGateway(rng=random.Random(1))

        def sandbox_react(message_id: int, user_id: int, emoji: str) -> None:
            assert sandbox.user_add_reaction(message_id, user_id, emoji)

        yield Subject(sandbox, sandbox_react)
        return
    if request.param == "standin":
        standin = DiscordStandin()
        standin.add_channel("conformance", channel_id=CHANNEL)
        standin.add_emoji("yes", emoji_id=int(CUSTOM.rsplit(":", 1)[1].rstrip(">")))
        await standin.start()
        monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
        via_standin = DiscordGateway(SecretStr(standin.token), api_base=standin.api_base, registry=None)
        await via_standin.login()

        def standin_react(message_id: int, user_id: int, emoji: str) -> None:
            assert standin.react(user_id, message_id, emoji)

        yield Subject(via_standin, standin_react)
        await via_standin.close()
        await standin.close()
        return
    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    gateway = DiscordGateway(SecretStr("token"), api_base=fake.base)
    await gateway.login()

    def fake_react(message_id: int, user_id: int, emoji: str) -> None:
        fake.messages[message_id].reactions.setdefault(reaction_route_emoji(emoji), set()).add(user_id)

    yield Subject(gateway, fake_react)
    await gateway.close()
    await fake.close()


EMBED = Embed(title="Q?", fields=(EmbedField("A", "0"), EmbedField("B", "0")))


async def test_is_a_gateway(subject: Subject) -> None:
    assert isinstance(subject.gateway, Gateway)
    assert subject.gateway.bot_user_id > 0


async def test_post_then_fetch_shows_the_bot_reactions_in_order(subject: Subject) -> None:
    gw = subject.gateway
    posted = await gw.post_poll_message(CHANNEL, embed=EMBED, emojis=["🇦", CUSTOM])
    assert posted.missing_emojis == ()
    fetched = await gw.fetch_message(CHANNEL, posted.message_id)
    assert fetched.message_id == posted.message_id
    assert fetched.channel_id == CHANNEL
    assert [(r.emoji, r.count, r.me) for r in fetched.reactions] == [("🇦", 1, True), (CUSTOM, 1, True)]


async def test_users_paginate_ascending_and_removal_works(subject: Subject) -> None:
    gw = subject.gateway
    mid = (await gw.post_poll_message(CHANNEL, embed=EMBED, emojis=[CUSTOM])).message_id
    voters = [10**17 + i for i in (5, 1, 9, 3, 7)]
    for v in voters:
        subject.react(mid, v, CUSTOM)
    first = await gw.list_reaction_users(CHANNEL, mid, CUSTOM, limit=2)
    rest = await gw.list_reaction_users(CHANNEL, mid, CUSTOM, after=first[-1].user_id, limit=100)
    ids = [u.user_id for u in (*first, *rest)]
    assert ids == [*sorted(voters), gw.bot_user_id]
    assert [u.is_bot for u in (*first, *rest)] == [False] * 5 + [True]
    await gw.remove_reaction(CHANNEL, mid, CUSTOM, voters[0])
    await gw.remove_reaction(CHANNEL, mid, CUSTOM, voters[0])  # absent: not an error
    assert (await gw.fetch_message(CHANNEL, mid)).reactions[0].count == 5
    await gw.clear_reactions(CHANNEL, mid)
    assert (await gw.fetch_message(CHANNEL, mid)).reactions == ()


async def test_edit_send_and_dm(subject: Subject) -> None:
    gw = subject.gateway
    mid = await gw.send_message(CHANNEL, content="hello")
    await gw.edit_message(CHANNEL, mid, embed=EMBED, content="")
    assert await gw.send_dm(10**17, embed=EMBED) > 0


async def test_missing_messages_are_not_found(subject: Subject) -> None:
    gw = subject.gateway
    with pytest.raises(NotFoundError):
        await gw.fetch_message(CHANNEL, 123)
    with pytest.raises(NotFoundError):
        await gw.add_reaction(CHANNEL, 123, "🇦")
    with pytest.raises(NotFoundError):
        await gw.edit_message(CHANNEL, 123, content="x")


async def test_bad_input_is_refused_before_any_call(subject: Subject) -> None:
    gw = subject.gateway
    with pytest.raises(PollValidationError, match="at most 2000"):
        await gw.send_message(CHANNEL, content="x" * 2001)
    with pytest.raises(PollValidationError, match="content, an embed or a file; got none"):
        await gw.send_message(CHANNEL)
    with pytest.raises(ValueError, match="at most 20 reactions"):
        await gw.post_poll_message(CHANNEL, embed=EMBED, emojis=[str(i) for i in range(21)])
    with pytest.raises(ValueError, match="between 1 and 100"):
        await gw.list_reaction_users(CHANNEL, 1, "🇦", limit=0)


def test_embed_limits_list_every_problem() -> None:
    with pytest.raises(PollValidationError) as info:
        Embed(title="t" * 257, fields=tuple(EmbedField(f"n{i}", "v") for i in range(26)), colour=0x1000000)
    assert len(info.value.problems) == 3
    assert "at most 256" in str(info.value)
    assert "at most 25" in str(info.value)
