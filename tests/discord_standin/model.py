"""The stand-in's world: users, guilds (channels, roles, members), messages and reactions, and the
JSON shapes Discord gives them (API v10), checked against discord.py's own parsers.

Everything is plain data in one process; the REST and gateway halves read and change it, and the
gateway turns changes into the dispatches Discord would send. A later dashboard's OAuth2 and
guild endpoints read the same objects.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Discord epoch (2015-01-01) in milliseconds: snowflakes carry their creation time.
DISCORD_EPOCH_MS = 1_420_070_400_000
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1  # privileged
INTENT_GUILD_PRESENCES = 1 << 8  # privileged
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15  # privileged
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
MAX_REACTIONS = 20  # distinct emojis per message


class SnowflakeFactory:
    """Increasing snowflakes whose timestamp part is now (worker, process and increment filled)."""

    def __init__(self) -> None:
        self._increment = itertools.count()

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (1 << 17) | (1 << 12) | (next(self._increment) & 0xFFF)


@dataclass
class User:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": None if self.bot else self.username.title(),
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class Member:
    user: User
    roles: list[int] = field(default_factory=list)
    joined_at: str = "2025-01-01T00:00:00.000000+00:00"

    def payload(self) -> dict[str, Any]:
        return {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
        }


@dataclass
class Channel:
    id: int
    guild_id: int | None
    name: str
    type: int = 0  # 0 guild text, 1 DM
    recipient: int | None = None

    def payload(self, users: dict[int, User]) -> dict[str, Any]:
        if self.type == 1:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [users[self.recipient].payload()],
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": 0,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    channels: dict[int, Channel] = field(default_factory=dict)
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    emojis: dict[int, tuple[str, bool]] = field(default_factory=dict)  # id -> (name, animated)

    def payload(self, users: dict[int, User], *, members: list[Member]) -> dict[str, Any]:
        """GUILD_CREATE's shape (and, without its gateway-only keys, GET /guilds/{id}'s)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [
                {
                    "id": str(i),
                    "name": n,
                    "animated": a,
                    "roles": [],
                    "require_colons": True,
                    "managed": False,
                    "available": True,
                }
                for i, (n, a) in self.emojis.items()
            ],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "stickers": [],
            "premium_progress_bar_enabled": False,
            # gateway-only
            "joined_at": "2025-01-01T00:00:00.000000+00:00",
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [],
            "members": [m.payload() for m in members],
            "channels": [c.payload(users) for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class Message:
    id: int
    channel_id: int
    author_id: int
    content: str
    embeds: list[dict[str, Any]]
    attachments: list[tuple[str, int]] = field(default_factory=list)  # (filename, size)
    allowed_mentions: dict[str, Any] | None = None
    mention_roles: list[int] = field(default_factory=list)
    # emoji key ("👍" or "name:id") -> user ids in the order they reacted
    reactions: dict[str, list[int]] = field(default_factory=dict)
    edits: int = 0
    edited_at: str | None = None


def emoji_payload(key: str, emojis: dict[int, tuple[str, bool]]) -> dict[str, Any]:
    """The emoji object for a reaction key: Unicode ``{"id": null, "name": "👍"}``, custom with id."""
    if ":" in key:
        name, raw_id = key.rsplit(":", 1)
        return {"id": raw_id, "name": name, "animated": emojis.get(int(raw_id), (name, False))[1]}
    return {"id": None, "name": key}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class World:
    """All state of the stand-in. ``bot`` is the application's bot user."""

    def __init__(self, *, bot_name: str = "polly") -> None:
        self.ids = SnowflakeFactory()
        self.bot = User(self.ids.next(), bot_name, bot=True)
        self.application_id = self.bot.id
        self.owner = User(self.ids.next(), "owner")
        self.users: dict[int, User] = {self.bot.id: self.bot, self.owner.id: self.owner}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.forbidden_channels: set[int] = set()
        self.closed_dms: set[int] = set()  # users who do not accept DMs (403 50007)

    # --- building the world ---------------------------------------------------------------------

    def add_guild(self, name: str = "guild") -> Guild:
        guild = Guild(self.ids.next(), name, self.owner.id)
        everyone = Role(guild.id, "@everyone", permissions=0x4000_0000_0000 | 0x40 | 0x800)
        guild.roles[everyone.id] = everyone
        guild.members[self.bot.id] = Member(self.bot)
        guild.members[self.owner.id] = Member(self.owner)
        self.guilds[guild.id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str = "polls", *, channel_id: int | None = None) -> Channel:
        channel = Channel(channel_id or self.ids.next(), guild.id, name)
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def add_role(self, guild: Guild, name: str) -> Role:
        role = Role(self.ids.next(), name)
        guild.roles[role.id] = role
        return role

    def add_member(self, guild: Guild, name: str, *, bot: bool = False, user_id: int | None = None) -> User:
        user = User(user_id or self.ids.next(), name, bot=bot)
        self.users[user.id] = user
        guild.members[user.id] = Member(user)
        return user

    def dm_channel(self, user_id: int) -> Channel:
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient == user_id:
                return channel
        channel = Channel(self.ids.next(), None, "", type=1, recipient=user_id)
        self.channels[channel.id] = channel
        return channel

    # --- payloads ---------------------------------------------------------------------------------

    def guild_of(self, channel_id: int) -> Guild | None:
        channel = self.channels.get(channel_id)
        return self.guilds.get(channel.guild_id) if channel and channel.guild_id else None

    def message_payload(self, msg: Message) -> dict[str, Any]:
        guild = self.guild_of(msg.channel_id)
        out: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "type": 0,
            "content": msg.content,
            "author": self.users[msg.author_id].payload(),
            "embeds": msg.embeds,
            "attachments": [
                {
                    "id": str(msg.id + i + 1),
                    "filename": name,
                    "size": size,
                    "url": f"https://cdn.discordapp.com/attachments/{msg.channel_id}/{msg.id}/{name}",
                    "proxy_url": f"https://media.discordapp.net/attachments/{msg.channel_id}/{msg.id}/{name}",
                    "content_type": "application/octet-stream",
                }
                for i, (name, size) in enumerate(msg.attachments)
            ],
            "mentions": [],
            "mention_roles": [str(r) for r in msg.mention_roles],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": snowflake_time(msg.id),
            "edited_timestamp": msg.edited_at,
            "flags": 0,
            "components": [],
        }
        if guild is not None:
            out["guild_id"] = str(guild.id)
        reactions = [
            {
                "emoji": emoji_payload(k, guild.emojis if guild else {}),
                "count": len(v),
                "count_details": {"burst": 0, "normal": len(v)},
                "burst_colors": [],
                "me_burst": False,
                "burst_me": False,
                "me": self.bot.id in v,
                "burst_count": 0,
            }
            for k, v in msg.reactions.items()
            if v
        ]
        if reactions:
            out["reactions"] = reactions
        return out

    def reaction_event(self, kind: str, msg: Message, user_id: int, key: str) -> dict[str, Any]:
        """``MESSAGE_REACTION_ADD`` / ``_REMOVE`` data as Discord sends it (``member`` on adds)."""
        guild = self.guild_of(msg.channel_id)
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "type": 0,
            "message_id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "emoji": emoji_payload(key, guild.emojis if guild else {}),
            "burst": False,
        }
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if kind == "add":
            data["message_author_id"] = str(msg.author_id)
            data["burst_colors"] = []
            if guild is not None and user_id in guild.members:
                data["member"] = guild.members[user_id].payload()
        return data

    def iter_guild_messages(self, guild_id: int) -> Iterator[Message]:
        return (m for m in self.messages.values() if self.guild_of(m.channel_id) is self.guilds.get(guild_id))


def snowflake_time(snowflake: int) -> str:
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")
