"""The dashboard's Discord REST calls: a member's guilds (with their OAuth2 token), and the bot's
guilds, a guild's channels, roles and emojis (with the bot token).

Every answer is cached (:class:`cachetools.TTLCache`, ``web.discord_cache_ttl_seconds`` and
``web.discord_cache_max_entries`` each), so a page load costs no Discord call while the cache is
warm (upstream fetched every guild's member on every load). Rate limits are honoured: a 429 records
its ``Retry-After`` window for the route (or for everything when ``global``); a call inside a window
waits it out before calling, never sooner, and a 429 is retried at most :data:`MAX_ATTEMPTS` times.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from cachetools import TTLCache
from pydantic import SecretStr

DEFAULT_API_BASE = "https://discord.com/api/v10"
MAX_ATTEMPTS = 3
#: The longest Retry-After waited for in a page request; longer ones fail the request at once.
MAX_WAIT_SECONDS = 10.0
TEXT_CHANNEL = 0
ANNOUNCEMENT_CHANNEL = 5


class DiscordApiError(Exception):
    """A Discord answer that is not a success; ``status`` 0 means Discord could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Discord answered {status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True, slots=True)
class GuildInfo:
    """What the dashboard shows of a guild; ``permissions`` are the member's (0 for the bot's view)."""

    id: str
    name: str
    icon: str | None
    permissions: int = 0


@dataclass(frozen=True, slots=True)
class GuildDetails:
    """Channels (text and announcement, by position), roles (without @everyone) and custom emojis
    (their ``<:name:id>`` forms)."""

    channels: tuple[tuple[str, str], ...]
    roles: tuple[tuple[str, str], ...]
    emojis: tuple[str, ...]


class DiscordApi:
    """Cached, rate-limit-aware Discord REST for the dashboard. ``client`` is closed by :meth:`aclose`."""

    def __init__(
        self,
        *,
        api_base: str | None,
        bot_token: SecretStr | None,
        ttl_seconds: float,
        max_entries: int,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self._bot = bot_token
        self._client = client or httpx.AsyncClient(timeout=10.0)
        self._sleep = sleep
        self._clock = clock
        self._user_guilds: TTLCache[str, tuple[GuildInfo, ...]] = TTLCache(max_entries, ttl_seconds)
        self._details: TTLCache[str, GuildDetails] = TTLCache(max_entries, ttl_seconds)
        self._bot_guilds: TTLCache[str, dict[str, GuildInfo]] = TTLCache(1, ttl_seconds)
        # route -> monotonic time its rate-limit window ends ("*" for a global limit)
        self._blocked: TTLCache[str, float] = TTLCache(max_entries, MAX_WAIT_SECONDS * 6)
        self.calls = 0  # requests sent (tests and the benchmark read it)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _get(self, path: str, route: str, authorization: str) -> Any:
        for _ in range(MAX_ATTEMPTS):
            until = max(self._blocked.get(route, 0.0), self._blocked.get("*", 0.0))
            wait = until - self._clock()
            if wait > MAX_WAIT_SECONDS:
                raise DiscordApiError(429, f"rate limited for {wait:.0f} s more; try again later")
            if wait > 0:
                await self._sleep(wait)
            self.calls += 1
            try:
                response = await self._client.get(
                    self.api_base + path, headers={"Authorization": authorization}
                )
            except httpx.HTTPError as err:
                raise DiscordApiError(0, f"Discord could not be reached ({type(err).__name__})") from None
            if response.status_code == 429:
                retry = _retry_after(response)
                is_global = response.headers.get("X-RateLimit-Global", "").lower() == "true"
                self._blocked["*" if is_global else route] = self._clock() + retry
                continue
            if response.status_code >= 400:
                raise DiscordApiError(response.status_code, _message(response))
            return response.json()
        raise DiscordApiError(429, "rate limited; try again later")

    def _bot_auth(self) -> str:
        if self._bot is None:
            raise DiscordApiError(0, "DISCORD_TOKEN is not set: the dashboard cannot read servers")
        return f"Bot {self._bot.get_secret_value()}"

    # --- calls ----------------------------------------------------------------------------------

    async def user_guilds(
        self, user_id: str, access_token: str, *, fresh: bool = False
    ) -> tuple[GuildInfo, ...]:
        """The member's guilds with their permissions (``GET /users/@me/guilds``), cached per user."""
        key = f"{user_id}:{hashlib.sha256(access_token.encode()).hexdigest()[:16]}"
        if not fresh and key in self._user_guilds:
            return self._user_guilds[key]
        data = await self._get("/users/@me/guilds", "GET /users/@me/guilds", f"Bearer {access_token}")
        guilds = tuple(
            GuildInfo(str(g["id"]), str(g.get("name", "")), g.get("icon"), int(g.get("permissions") or 0))
            for g in data
        )
        self._user_guilds[key] = guilds
        return guilds

    async def bot_guilds(self) -> dict[str, GuildInfo]:
        """The guilds the bot is in (``GET /users/@me/guilds`` with the bot token), by id, cached."""
        if "bot" in self._bot_guilds:
            return self._bot_guilds["bot"]
        data = await self._get("/users/@me/guilds", "GET /users/@me/guilds (bot)", self._bot_auth())
        guilds = {str(g["id"]): GuildInfo(str(g["id"]), str(g.get("name", "")), g.get("icon")) for g in data}
        self._bot_guilds["bot"] = guilds
        return guilds

    async def bot_guild_ids(self) -> frozenset[str]:
        return frozenset(await self.bot_guilds())

    async def guild_details(self, guild_id: str) -> GuildDetails:
        """Channels, roles and custom emojis of a guild, cached per guild."""
        if guild_id in self._details:
            return self._details[guild_id]
        auth = self._bot_auth()
        guild = await self._get(f"/guilds/{guild_id}", "GET /guilds/{id}", auth)
        channels = await self._get(f"/guilds/{guild_id}/channels", "GET /guilds/{id}/channels", auth)
        text = sorted(
            (c for c in channels if c.get("type") in (TEXT_CHANNEL, ANNOUNCEMENT_CHANNEL)),
            key=lambda c: (c.get("position", 0), int(c["id"])),
        )
        roles = tuple(
            (str(r["id"]), str(r["name"])) for r in guild.get("roles", []) if str(r["id"]) != guild_id
        )
        emojis = tuple(
            f"<{'a' if e.get('animated') else ''}:{e['name']}:{e['id']}>"
            for e in guild.get("emojis", [])
            if e.get("id") and e.get("available", True)
        )
        details = GuildDetails(tuple((str(c["id"]), str(c["name"])) for c in text), roles, emojis)
        self._details[guild_id] = details
        return details


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait: the body's ``retry_after`` (Discord's, fractional), else the header."""
    try:
        return max(0.0, float(response.json().get("retry_after")))
    except (ValueError, TypeError, AttributeError):
        try:
            return max(0.0, float(response.headers.get("Retry-After", "1")))
        except ValueError:
            return 1.0


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.reason_phrase))
    except (ValueError, AttributeError):
        return response.reason_phrase
