"""Signing in with Discord, the session cookie's properties, and signing out."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from starlette.applications import Starlette

from polly.db.engine import Database
from polly.db.models import User as UserRow
from tests.web.support import World, csrf_of, sign_in


async def test_sign_in_lists_the_servers_the_member_manages_where_the_bot_is(
    world: World, web: tuple[Starlette, httpx.AsyncClient, Database]
) -> None:
    _, client, database = web
    assert (await client.get("/servers")).headers["location"] == "/"
    await sign_in(client, world.discord, world.manager)
    page = await client.get("/servers")
    assert page.status_code == 200
    assert world.discord.guild.name in page.text
    assert world.other.name not in page.text  # no Manage Server there
    assert world.botless.name not in page.text  # owner, but the bot is absent
    with database.session_scope() as session:
        assert (
            session.scalar(select(UserRow.username).where(UserRow.id == str(world.manager.id))) == "Manager"
        )


async def test_the_session_cookie_is_signed_httponly_lax_and_expires(
    world: World, web: tuple[Starlette, httpx.AsyncClient, Database]
) -> None:
    _, client, _ = web
    await sign_in(client, world.discord, world.manager)
    raw = (await client.get("/login")).headers["set-cookie"].lower()
    assert "httponly" in raw
    assert "samesite=lax" in raw
    assert "max-age=604800" in raw
    assert "secure" not in raw  # the redirect URI is http here


async def test_sign_out_ends_the_session(
    world: World, web: tuple[Starlette, httpx.AsyncClient, Database]
) -> None:
    _, client, _ = web
    await sign_in(client, world.discord, world.manager)
    token = csrf_of((await client.get("/servers")).text)
    out = await client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await client.get("/servers")).headers["location"] == "/"


async def test_a_callback_with_a_forged_state_is_refused(
    world: World, web: tuple[Starlette, httpx.AsyncClient, Database]
) -> None:
    _, client, _ = web
    world.discord.oauth.signed_in = world.manager
    await client.get("/login")
    page = await client.get("/auth/callback?code=x&state=forged")
    assert page.status_code == 400
    assert "sign-in failed" in page.text
    assert world.discord.oauth.token_requests == 0
