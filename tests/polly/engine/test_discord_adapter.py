"""The discord.py adapter against a loopback server answering Discord's REST routes, and raw
reaction events built by discord.py's own gateway parser."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import discord.http
import pytest
from pydantic import SecretStr

from polly.clock import Backoff, FakeClock
from polly.engine.discord_adapter import DiscordGateway, reaction_route_emoji, to_reaction_event
from polly.engine.gateway import AllowedMentions, Embed, EmbedField, Gateway, ReactionEvent, ShedReporter
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError, ServerError
from tests.polly.engine.fake_discord import BOT_ID, FakeDiscord

CHANNEL = 111
GUILD = 222
VOTER = 333
VIA = {"Via": "1.1 google"}  # discord.py treats a 429 without Via as Discord's edge, not a rate limit
PARTY = "<a:party:420000000000000042>"


class _RecordingAsyncio:
    """Stands in for the ``asyncio`` module inside discord.http: records sleeps, skips the wait."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: object = None) -> object:
        if delay > 0:  # discord.py also yields with sleep(0); only real waits matter here
            self.sleeps.append(delay)
        await asyncio.sleep(0)
        return result


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> _RecordingAsyncio:
    recorder = _RecordingAsyncio()
    monkeypatch.setattr(discord.http, "asyncio", recorder)
    return recorder


@pytest.fixture
async def gw(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordGateway]:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # restored afterwards
    gateway = DiscordGateway(SecretStr("t0ken-value"), api_base=fake.base, request_timeout_seconds=5.0)
    await gateway.login()
    yield gateway
    await gateway.close()


EMBED = Embed(
    title="Lunch?",
    description="pick one",
    fields=(EmbedField("🍕 Pizza", "0 votes", inline=True),),
    colour=0x00FF00,
    footer="closes soon",
    timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
)


async def test_an_unreachable_login_is_retried_on_the_injected_backoff_and_clock(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # restored afterwards
    clock = FakeClock()
    backoff = Backoff(initial=0.5, multiplier=3.0, cap=4.0)
    gateway = DiscordGateway(SecretStr("t0ken-value"), api_base=fake.base, backoff=backoff, clock=clock)
    fake.fail(503, match="/users/@me", times=3)  # discord.py does not retry a 503 itself
    try:
        await gateway._login_until_reachable()
        assert gateway.bot_user_id == BOT_ID
    finally:
        await gateway.close()
    assert list(clock.sleeps) == [0.5, 1.5, 4.0]
    assert gateway.stats().outages == 1


def test_the_adapter_satisfies_the_protocol(gw: DiscordGateway) -> None:
    assert isinstance(gw, Gateway)
    assert gw.bot_user_id == BOT_ID
    assert "t0ken" not in repr(gw)


async def test_login_sends_the_token_and_never_shows_it(fake: FakeDiscord) -> None:
    gateway = DiscordGateway(SecretStr("t0ken-value"), api_base=fake.base)
    with pytest.raises(GatewayError, match="not logged in"):
        _ = gateway.bot_user_id
    fake.fail(401, {"message": "401: Unauthorized", "code": 0})
    with pytest.raises(GatewayError, match="rejected the token") as info:
        await gateway.login()
    assert "t0ken" not in str(info.value)
    await gateway.close()


async def test_post_poll_message_sends_embed_then_each_reaction(
    gw: DiscordGateway, fake: FakeDiscord
) -> None:
    fake.custom_emojis[420000000000000042] = ("party", True)
    posted = await gw.post_poll_message(
        CHANNEL,
        embed=EMBED,
        emojis=["🍕", PARTY],
        content="<@&77> Vote Now!",
        allowed_mentions=AllowedMentions(roles=(77,)),
    )
    assert posted.missing_emojis == ()
    send = next(r for r in fake.requests if r.method == "POST")
    assert send.body["content"] == "<@&77> Vote Now!"
    assert send.body["allowed_mentions"] == {"parse": [], "roles": [77]}
    embed = send.body["embeds"][0]
    assert embed["title"] == "Lunch?"
    assert embed["color"] == 0x00FF00
    assert embed["footer"] == {"text": "closes soon"}
    assert embed["fields"] == [{"name": "🍕 Pizza", "value": "0 votes", "inline": True}]
    assert list(fake.messages[posted.message_id].reactions) == ["🍕", "party:420000000000000042"]
    fetched = await gw.fetch_message(CHANNEL, posted.message_id)
    assert [(r.emoji, r.count, r.me) for r in fetched.reactions] == [
        ("🍕", 1, True),
        ("<a:party:420000000000000042>", 1, True),
    ]


async def test_a_failed_reaction_is_reported_missing_not_raised(
    gw: DiscordGateway, fake: FakeDiscord
) -> None:
    fake.fail(403, {"message": "Missing Permissions", "code": 50013}, match="/reactions/")
    posted = await gw.post_poll_message(CHANNEL, embed=EMBED, emojis=["1️⃣", "2️⃣"])
    assert posted.missing_emojis == ("1️⃣",)
    assert list(fake.messages[posted.message_id].reactions) == ["2️⃣"]


async def test_a_message_carries_its_file(gw: DiscordGateway, fake: FakeDiscord, tmp_path: Path) -> None:
    image = tmp_path / "poll.png"
    image.write_bytes(b"\x89PNG" + bytes(2000))
    message_id = await gw.send_message(CHANNEL, content="Vote below!", attachment=image)
    assert fake.messages[message_id].files == ["poll.png"]
    assert fake.messages[message_id].content == "Vote below!"
    with pytest.raises(ValueError, match="cannot be read"):
        await gw.send_message(CHANNEL, content="x", attachment=tmp_path / "missing.png")


async def test_default_mentions_ping_nobody(gw: DiscordGateway, fake: FakeDiscord) -> None:
    await gw.send_message(CHANNEL, content="<@&77> results")
    assert fake.requests[-1].body["allowed_mentions"] == {"parse": []}


async def test_edit_changes_only_what_is_given(gw: DiscordGateway, fake: FakeDiscord) -> None:
    msg = fake.add_message(CHANNEL)
    await gw.edit_message(CHANNEL, msg.id, embed=EMBED)
    assert "content" not in fake.requests[-1].body
    assert fake.messages[msg.id].embeds[0]["title"] == "Lunch?"
    await gw.edit_message(CHANNEL, msg.id, content="closed")
    assert "embeds" not in fake.requests[-1].body
    assert fake.messages[msg.id].content == "closed"
    with pytest.raises(ValueError, match="neither"):
        await gw.edit_message(CHANNEL, msg.id)


async def test_reaction_operations(gw: DiscordGateway, fake: FakeDiscord) -> None:
    users = {VOTER + i for i in range(5)}
    msg = fake.add_message(CHANNEL, {"👍": set(users), "party:420000000000000042": {VOTER}})
    await gw.add_reaction(CHANNEL, msg.id, "👍")
    assert BOT_ID in msg.reactions["👍"]
    await gw.remove_reaction(CHANNEL, msg.id, "<:party:420000000000000042>", VOTER)
    assert fake.requests[-1].path.endswith(f"/reactions/party:420000000000000042/{VOTER}")
    assert msg.reactions["party:420000000000000042"] == set()
    await gw.clear_reactions(CHANNEL, msg.id)
    assert msg.reactions == {}


async def test_reaction_users_paginate(gw: DiscordGateway, fake: FakeDiscord) -> None:
    voters = list(range(VOTER, VOTER + 7))
    msg = fake.add_message(CHANNEL, {"👍": {*voters, BOT_ID}})
    seen: list[int] = []
    after = 0
    while True:
        page = await gw.list_reaction_users(CHANNEL, msg.id, "👍", after=after, limit=3)
        seen.extend(u.user_id for u in page)
        if len(page) < 3:
            break
        after = page[-1].user_id
    assert seen == [*voters, BOT_ID]
    assert fake.requests[-1].query == {"limit": "3", "after": str(voters[-2])}
    last = await gw.list_reaction_users(CHANNEL, msg.id, "👍", after=voters[-1])
    assert [(u.user_id, u.is_bot) for u in last] == [(BOT_ID, True)]
    with pytest.raises(ValueError, match="between 1 and 100"):
        await gw.list_reaction_users(CHANNEL, msg.id, "👍", limit=101)


async def test_send_dm_opens_a_channel_and_pings_nobody(gw: DiscordGateway, fake: FakeDiscord) -> None:
    msg_id = await gw.send_dm(VOTER, content="your vote counted")
    assert fake.messages[msg_id].channel_id == VOTER + 1
    assert fake.requests[-2].body == {"recipient_id": VOTER}
    fake.fail(403, {"message": "Cannot send messages to this user", "code": 50007}, match="/messages")
    with pytest.raises(ForbiddenError, match="50007"):
        await gw.send_dm(VOTER + 10, content="x")


def _operations(gw: DiscordGateway, mid: int) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """Every REST operation, named, as a thunk."""
    return [
        ("fetch", lambda: gw.fetch_message(CHANNEL, mid)),
        ("edit", lambda: gw.edit_message(CHANNEL, mid, content="x")),
        ("react", lambda: gw.add_reaction(CHANNEL, mid, "👍")),
        ("clear", lambda: gw.clear_reactions(CHANNEL, mid)),
        ("unreact", lambda: gw.remove_reaction(CHANNEL, mid, "👍", VOTER)),
        ("users", lambda: gw.list_reaction_users(CHANNEL, mid, "👍")),
        ("send", lambda: gw.send_message(CHANNEL, content="x")),
        ("dm", lambda: gw.send_dm(VOTER, content="x")),
    ]


async def test_404_is_not_found(gw: DiscordGateway, fake: FakeDiscord) -> None:
    for name, op in _operations(gw, 123456):
        if name in ("send", "dm"):
            fake.fail(404, {"message": "Unknown Channel", "code": 10003}, match="/messages")
        with pytest.raises(NotFoundError, match=r"404, Discord code 1000[38]"):
            await op()


async def test_403_is_forbidden(gw: DiscordGateway, fake: FakeDiscord) -> None:
    msg = fake.add_message(CHANNEL)
    for _, op in _operations(gw, msg.id):
        fake.fail(403, {"message": "Missing Permissions", "code": 50013}, match="/channels/")
        with pytest.raises(ForbiddenError, match="Missing Permissions"):
            await op()


async def test_long_429_surfaces_retry_after(
    gw: DiscordGateway, fake: FakeDiscord, sleeps: _RecordingAsyncio
) -> None:
    msg = fake.add_message(CHANNEL)
    for _, op in _operations(gw, msg.id):
        fake.fail(
            429, {"message": "slow", "retry_after": 120.5, "global": False}, headers=VIA, match="/channels/"
        )
        with pytest.raises(RateLimitedError) as info:
            await op()
        assert info.value.retry_after_seconds == 120.5
    assert sleeps.sleeps == []


async def test_short_429_is_waited_out_by_discord_py(
    gw: DiscordGateway, fake: FakeDiscord, sleeps: _RecordingAsyncio
) -> None:
    msg = fake.add_message(CHANNEL)
    fake.fail(
        429, {"message": "slow down", "retry_after": 0.25, "global": True}, headers={"Via": "1.1 google"}
    )
    await gw.add_reaction(CHANNEL, msg.id, "👍")
    assert sleeps.sleeps == [0.25]
    assert BOT_ID in msg.reactions["👍"]


async def test_edge_429_without_body_uses_retry_after_header(gw: DiscordGateway, fake: FakeDiscord) -> None:
    msg = fake.add_message(CHANNEL)
    fake.fail(429, "error code: 1015", headers={"Retry-After": "7"})
    with pytest.raises(RateLimitedError) as info:
        await gw.fetch_message(CHANNEL, msg.id)
    assert info.value.retry_after_seconds == 7.0


async def test_500_is_retried_then_a_server_error(
    gw: DiscordGateway, fake: FakeDiscord, sleeps: _RecordingAsyncio
) -> None:
    msg = fake.add_message(CHANNEL)
    fake.fail(500, times=5)
    before = len(fake.requests)
    with pytest.raises(ServerError, match="HTTP 500"):
        await gw.fetch_message(CHANNEL, msg.id)
    assert len(fake.requests) - before == 5
    assert sleeps.sleeps == [1, 3, 5, 7, 9]
    fake.fail(500, times=1)
    assert (await gw.fetch_message(CHANNEL, msg.id)).message_id == msg.id


async def test_503_and_every_operation_map_to_server_error(gw: DiscordGateway, fake: FakeDiscord) -> None:
    msg = fake.add_message(CHANNEL)
    for _, op in _operations(gw, msg.id):
        fake.fail(503, match="/channels/")
        with pytest.raises(ServerError, match="HTTP 503"):
            await op()


async def test_other_statuses_are_plain_gateway_errors(gw: DiscordGateway, fake: FakeDiscord) -> None:
    fake.fail(400, {"message": "Invalid Form Body", "code": 50035})
    with pytest.raises(GatewayError, match="HTTP 400 \\(code 50035\\)") as info:
        await gw.send_message(CHANNEL, content="x")
    assert type(info.value) is GatewayError


async def test_timeout_and_transport_failures_are_server_errors(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    gateway = DiscordGateway(SecretStr("t"), api_base=fake.base, request_timeout_seconds=0.2)
    await gateway.login()
    fake.delay_seconds = 1.0
    with pytest.raises(ServerError, match=r"0\.2 s request timeout"):
        await gateway.fetch_message(CHANNEL, 1)
    fake.delay_seconds = 0.0
    await fake.close()
    with pytest.raises(ServerError, match="transport failure"):
        await gateway.fetch_message(CHANNEL, 1)
    await gateway.close()


def test_reaction_route_emoji() -> None:
    assert reaction_route_emoji("👍") == "👍"
    assert reaction_route_emoji("<:yes:120000000000000012>") == "yes:120000000000000012"
    assert reaction_route_emoji("<a:dance:340000000000000034>") == "dance:340000000000000034"
    with pytest.raises(ValueError, match="non-empty"):
        reaction_route_emoji("")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 30"):
        DiscordGateway(SecretStr("t"), max_ratelimit_wait_seconds=5)
    with pytest.raises(ValueError, match="max_connections"):
        DiscordGateway(SecretStr("t"), max_connections=0)


# --- events ----------------------------------------------------------------------------------------


def _reaction_payload(emoji: dict[str, Any], *, user: int = VOTER, bot: bool = False) -> dict[str, Any]:
    return {
        "user_id": str(user),
        "channel_id": str(CHANNEL),
        "message_id": "555",
        "guild_id": str(GUILD),
        "emoji": emoji,
        "burst": False,
        "type": 0,
        "member": {
            "user": {"id": str(user), "username": "v", "discriminator": "0", "avatar": None, "bot": bot},
            "roles": [],
            "joined_at": "2025-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        },
    }


def _guild_payload() -> dict[str, Any]:
    return {
        "id": str(GUILD),
        "name": "g",
        "owner_id": "1",
        "roles": [],
        "emojis": [],
        "features": [],
        "channels": [],
        "members": [],
        "member_count": 2,
        "unavailable": False,
    }


async def _next(gw: DiscordGateway) -> ReactionEvent:
    return await asyncio.wait_for(gw.next_reaction_event(), timeout=5)


async def test_raw_gateway_events_become_reaction_events(gw: DiscordGateway) -> None:
    """discord.py's own parser builds the RawReactionActionEvent and dispatches it to the adapter."""
    state = gw._client._connection
    state._add_guild_from_data(_guild_payload())  # type: ignore[arg-type]
    state.parse_message_reaction_add(_reaction_payload({"id": None, "name": "🍕"}))  # type: ignore[arg-type]
    add = await _next(gw)
    assert add == ReactionEvent("add", GUILD, CHANNEL, 555, VOTER, "🍕", is_bot=False)
    custom = {"id": "420000000000000042", "name": "party", "animated": True}
    state.parse_message_reaction_add(_reaction_payload(custom, user=7, bot=True))  # type: ignore[arg-type]
    assert (await _next(gw)).emoji == "<a:party:420000000000000042>"
    remove = _reaction_payload({"id": "430000000000000043", "name": "yes"})
    del remove["member"]
    state.parse_message_reaction_remove(remove)  # type: ignore[arg-type]
    got = await _next(gw)
    assert (got.kind, got.emoji, got.is_bot) == ("remove", "<:yes:430000000000000043>", False)
    own = _reaction_payload({"id": None, "name": "🍕"}, user=BOT_ID)
    del own["member"]
    state.parse_message_reaction_remove(own)  # type: ignore[arg-type]
    assert (await _next(gw)).is_bot is True
    stats = gw.event_stats()
    assert (stats.accepted, stats.dropped, stats.depth) == (4, 0, 0)


async def test_member_bot_flag_is_used_on_adds(gw: DiscordGateway) -> None:
    state = gw._client._connection
    guild = state._add_guild_from_data(_guild_payload())  # type: ignore[arg-type]
    payload = _reaction_payload({"id": None, "name": "1️⃣"}, user=8, bot=True)
    raw = discord.RawReactionActionEvent(payload, discord.PartialEmoji(name="1️⃣"), "REACTION_ADD")  # type: ignore[arg-type]
    raw.member = discord.Member(data=payload["member"], guild=guild, state=state)
    assert to_reaction_event(raw, BOT_ID).is_bot is True
    raw.member = None
    assert to_reaction_event(raw, BOT_ID).is_bot is False


async def test_a_full_event_queue_sheds_and_counts(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    gateway = DiscordGateway(SecretStr("t"), api_base=fake.base, max_events=2)
    await gateway.login()
    state = gateway._client._connection
    for user in range(5):
        payload = _reaction_payload({"id": None, "name": "🍕"}, user=user + 1)
        del payload["guild_id"], payload["member"]
        state.parse_message_reaction_add(payload)  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)  # discord.py dispatches each event in its own task
    stats = gateway.event_stats()
    assert (stats.depth, stats.accepted, stats.dropped, stats.max_events) == (2, 2, 3, 2)
    first = await _next(gateway)
    assert (first.user_id, first.guild_id) == (1, None)
    # The engine learns which message lost events, so it repairs that poll rather than every one.
    assert isinstance(gateway, ShedReporter)
    shed = gateway.take_shed()
    assert (list(shed.messages), shed.overflow) == ([555], False)
    assert set(shed.messages[555] or ()) == {3, 4, 5}  # whose events: the users the full queue refused
    assert gateway.take_shed().messages == {}
    await gateway.close()
