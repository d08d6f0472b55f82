"""The dashboard in-process (httpx over ASGI) against the loopback Discord: a world with a
manager (Manage Server), a plain member, a guild the manager cannot manage and one without the bot,
and helpers to sign in and to read CSRF tokens off pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette

from polly.config import Settings, load_settings
from polly.db.engine import Database
from polly.db.schema import create_schema
from polly.web.app import create_app
from tests.discord_standin import DiscordStandin
from tests.discord_standin.model import Guild, Member, User
from tests.discord_standin.oauth import MANAGE_GUILD

SECRET_KEY = "web-tests-secret-key-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class World:
    discord: DiscordStandin
    manager: User
    member: User
    other: Guild  # the manager has no rights here
    botless: Guild  # the manager manages it, the bot is not in it
    emoji: str


def build_world(discord: DiscordStandin) -> World:
    manager = discord.add_member("manager")
    member = discord.add_member("member")
    mods = discord.add_role("mods")
    mods.permissions = MANAGE_GUILD
    discord.guild.members[manager.id].roles.append(mods.id)
    other = discord.world.add_guild("other guild")
    discord.world.add_channel(other, "general")
    other.members[manager.id] = Member(manager)
    botless = discord.world.add_guild("no bot here")
    del botless.members[discord.world.bot.id]
    botless.owner_id = manager.id
    emoji = discord.add_emoji("partyblob")
    return World(discord, manager, member, other, botless, emoji)


def web_settings(discord: DiscordStandin, db_url: str, image_root: Path, **extra: str) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "DISCORD_TOKEN": discord.token,
        "POLLY_DISCORD__API_BASE": discord.api_base,
        "POLLY_WEB__OAUTH_AUTHORIZE_URL": f"{discord.base_url}/oauth2/authorize",
        "DISCORD_CLIENT_ID": discord.oauth.client_id,
        "DISCORD_CLIENT_SECRET": discord.oauth.client_secret,
        "DISCORD_REDIRECT_URI": "http://testserver/auth/callback",
        "SECRET_KEY": SECRET_KEY,
        "POLLY_ENGINE__IMAGE_ROOT": str(image_root),
        "POLLY_REDIS__ENABLED": "false",
        **extra,
    }
    return load_settings(environ=env, cwd=image_root)


@asynccontextmanager
async def dashboard(
    settings: Settings, redis: object = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, Database]]:
    database = Database(settings.database)
    create_schema(database.sync_engine)
    database.open()
    app = create_app(settings, database, redis)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, database
    finally:
        await app.state.web.api.aclose()
        await database.dispose()


async def sign_in(client: httpx.AsyncClient, discord: DiscordStandin, user: User) -> None:
    """The whole OAuth2 dance: the app's redirect, Discord's consent, the callback."""
    discord.oauth.signed_in = user
    start = await client.get("/login")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(start.headers["location"])
    assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["location"])
    done = await client.get(f"{back.path}?{back.query}")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/servers"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def poll_form(channel_id: int, **fields: str) -> dict[str, str]:
    return {
        "name": "Lunch", "question": "Where do we eat?", "option_0": "Pizza", "option_1": "Tacos",
        "channel_id": str(channel_id), "open_immediately": "on", "timezone": "UTC", **fields,
    }  # fmt: skip
