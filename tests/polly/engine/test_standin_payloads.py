"""The loopback Discord's payloads, read by discord.py's own parsers: the stand-in is Discord-shaped
(as discord.py understands Discord), not shaped by what polly happens to read."""

from __future__ import annotations

import aiohttp
import discord
import discord.voice_client
import pytest
from discord.state import ConnectionState

from tests.discord_standin import DiscordStandin
from tests.discord_standin.model import Message


@pytest.fixture
def state() -> ConnectionState[discord.Client]:
    intents = discord.Intents.none()
    intents.guilds = intents.emojis = True
    discord.voice_client.VoiceClient.warn_nacl = discord.voice_client.VoiceClient.warn_dave = False
    return discord.Client(intents=intents)._connection


def test_guild_create_parses_with_channels_roles_and_the_bot_member(
    state: ConnectionState[discord.Client],
) -> None:
    standin = DiscordStandin()
    role = standin.add_role("voters")
    emoji = standin.add_emoji("party", animated=True)
    w = standin.world
    payload = standin.guild.payload(w.users, members=[standin.guild.members[w.bot.id]])
    guild = state._add_guild_from_data(payload)  # type: ignore[arg-type]
    assert guild.id == standin.guild.id
    assert guild.get_channel(standin.channel.id) is not None
    assert guild.get_role(role.id) is not None
    assert guild.default_role.id == guild.id
    assert str(guild.emojis[0]) == emoji
    me = discord.Member(data=standin.guild.members[w.bot.id].payload(), guild=guild, state=state)  # type: ignore[arg-type]
    assert me.id == w.bot.id
    assert me.bot


def test_messages_and_reaction_events_parse_as_discord_sends_them(
    state: ConnectionState[discord.Client],
) -> None:
    standin = DiscordStandin()
    voter = standin.add_member("voter")
    w = standin.world
    state._add_guild_from_data(standin.guild.payload(w.users, members=[]))  # type: ignore[arg-type]
    msg = Message(
        w.ids.next(), standin.channel.id, w.bot.id, "<@&1> hi", [{"title": "t"}], attachments=[("a.png", 3)]
    )
    msg.reactions["🇦"] = [w.bot.id, voter.id]
    w.messages[msg.id] = msg
    channel = state._get_guild(standin.guild.id).get_channel(standin.channel.id)  # type: ignore[union-attr]
    parsed = discord.Message(state=state, channel=channel, data=w.message_payload(msg))  # type: ignore[arg-type]
    assert parsed.id == msg.id
    assert parsed.embeds[0].title == "t"
    assert parsed.attachments[0].filename == "a.png"
    assert [(str(r.emoji), r.count, r.me) for r in parsed.reactions] == [("🇦", 2, True)]
    assert parsed.author.bot

    seen: list[discord.RawReactionActionEvent] = []
    state.dispatch = lambda event, *args: seen.append(args[0]) if event.startswith("raw_reaction") else None
    state.parse_message_reaction_add(w.reaction_event("add", msg, voter.id, "🇦"))  # type: ignore[arg-type]
    state.parse_message_reaction_remove(w.reaction_event("remove", msg, voter.id, "🇦"))  # type: ignore[arg-type]
    add, remove = seen
    assert (add.event_type, add.user_id, add.message_id, add.guild_id) == (
        "REACTION_ADD",
        voter.id,
        msg.id,
        standin.guild.id,
    )
    assert add.member is not None
    assert not add.member.bot
    assert add.message_author_id == w.bot.id
    assert (remove.event_type, remove.member, str(remove.emoji)) == ("REACTION_REMOVE", None, "🇦")


async def test_rest_answers_carry_discords_headers_and_guild_reads() -> None:
    async with DiscordStandin() as standin, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {standin.token}"}
        gid = standin.guild.id
        async with http.get(f"{standin.api_base}/guilds/{gid}/roles", headers=auth) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"  # exactly: discord.py compares it
            assert resp.headers["Via"] == "1.1 google"
            assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset-After"} <= set(
                resp.headers
            )
            roles = await resp.json()
        assert [r["name"] for r in roles] == ["@everyone"]
        for path in (
            f"/guilds/{gid}",
            f"/guilds/{gid}/channels",
            f"/guilds/{gid}/emojis",
            f"/channels/{standin.channel.id}",
        ):
            async with http.get(standin.api_base + path, headers=auth) as resp:
                assert resp.status == 200, path
        async with http.get(
            f"{standin.api_base}/guilds/{gid}/members/{standin.world.bot.id}", headers=auth
        ) as resp:
            assert (await resp.json())["user"]["bot"] is True
        async with http.get(f"{standin.api_base}/guilds/{gid}") as resp:
            assert resp.status == 401
        standin.rate_limit("GET /guilds", 1.5, via=True)
        async with http.get(f"{standin.api_base}/guilds/{gid}", headers=auth) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"
            assert await resp.json() == {
                "message": "You are being rate limited.",
                "retry_after": 1.5,
                "global": False,
            }
