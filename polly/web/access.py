"""Who may manage polls where, decided as upstream decides it, on the server for every request.

A member manages the polls of a guild when their permissions there (from ``GET /users/@me/guilds``)
include Administrator or Manage Server, and the bot is in that guild. Super admins
(``SUPER_ADMIN_IDS``) manage every guild's polls. Both answers come from :class:`DiscordApi`'s TTL
caches, so a check is a dictionary look-up while the cache is warm.
"""

from __future__ import annotations

from dataclasses import dataclass

from polly.web.discord_api import DiscordApi, GuildInfo

ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5


class ForbiddenError(Exception):
    """The member may not manage this guild's polls (a 403 page)."""


@dataclass(frozen=True, slots=True)
class Member:
    """The signed-in member, as the session carries them."""

    id: str
    name: str
    access_token: str


def can_manage(permissions: int) -> bool:
    """Administrator or Manage Server."""
    return bool(permissions & (ADMINISTRATOR | MANAGE_GUILD))


class Access:
    """Answers "may this member manage polls in this guild?" and lists the guilds they may."""

    def __init__(self, api: DiscordApi, super_admins: frozenset[str]) -> None:
        self.api = api
        self.super_admins = super_admins

    def is_super_admin(self, member: Member) -> bool:
        return member.id in self.super_admins

    async def guilds(self, member: Member) -> dict[str, GuildInfo]:
        """The guilds the member manages and the bot is in, by id (name order kept)."""
        mine = await self.api.user_guilds(member.id, member.access_token)
        bot = await self.api.bot_guild_ids()
        return {
            g.id: g
            for g in sorted(mine, key=lambda g: g.name.lower())
            if can_manage(g.permissions) and g.id in bot
        }

    async def all_guilds(self, member: Member) -> list[GuildInfo]:
        """For a super admin, every guild the bot is in (name order); nobody else gets any."""
        if not self.is_super_admin(member):
            return []
        return sorted((await self.api.bot_guilds()).values(), key=lambda g: g.name.lower())

    async def require(self, member: Member, guild_id: str) -> GuildInfo:
        """The guild, or :class:`ForbiddenError`; super admins pass for any guild the bot is in."""
        allowed = await self.guilds(member)
        if guild_id in allowed:
            return allowed[guild_id]
        if self.is_super_admin(member):
            every = await self.api.bot_guilds()
            if guild_id in every:
                return every[guild_id]
        raise ForbiddenError(guild_id)
