"""The dashboard's Discord calls: cached (TTL and size cap) and waiting out rate limits."""

from __future__ import annotations

import asyncio
import time

from pydantic import SecretStr

from polly.web.discord_api import DiscordApi
from tests.discord_standin import DiscordStandin


def _api(discord: DiscordStandin, *, ttl: float = 60.0, entries: int = 10) -> DiscordApi:
    return DiscordApi(
        api_base=discord.api_base, bot_token=SecretStr(discord.token), ttl_seconds=ttl, max_entries=entries
    )


async def test_guild_details_are_cached_until_the_ttl_and_capped() -> None:
    async with DiscordStandin() as discord:
        emoji = discord.add_emoji("blob")
        role = discord.add_role("mods")
        api = _api(discord, ttl=0.3, entries=1)
        try:
            details = await api.guild_details(str(discord.guild.id))
            assert details.channels == ((str(discord.channel.id), "polls"),)
            assert details.emojis == (emoji,)
            assert (str(role.id), "mods") in details.roles
            assert all(name != "@everyone" for _, name in details.roles)
            calls = api.calls
            await api.guild_details(str(discord.guild.id))
            assert api.calls == calls  # warm: no Discord call
            other = discord.world.add_guild("second")
            await api.guild_details(str(other.id))
            assert len(api._details) == 1  # the cap evicts
            await asyncio.sleep(0.35)
            await api.guild_details(str(other.id))
            assert api.calls == calls + 4  # expired: fetched again
        finally:
            await api.aclose()


async def test_a_429_is_waited_out_and_no_call_is_made_inside_the_window() -> None:
    async with DiscordStandin() as discord:
        api = _api(discord)
        try:
            discord.rate_limit(f"GET /guilds/{discord.guild.id}", 0.4, times=1)
            started = time.monotonic()
            await api.guild_details(str(discord.guild.id))
            assert time.monotonic() - started >= 0.4
            seen = [s for s in discord.rest.log.matching("GET") if s.path == f"/guilds/{discord.guild.id}"]
            assert [s.status for s in seen] == [429, 200]
            assert seen[1].at - seen[0].at >= 0.4  # the retry waited the whole Retry-After
        finally:
            await api.aclose()
