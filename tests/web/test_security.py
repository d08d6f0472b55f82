"""Authorisation on every page and action (URL tampering too), CSRF on every POST, forged and
expired sessions, uploads, and secrets kept out of pages and logs."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner
from starlette.applications import Starlette
from starlette.routing import Route

from polly.db.engine import Database
from tests.web.support import PNG, SECRET_KEY, World, csrf_of, dashboard, poll_form, sign_in, web_settings

Web = tuple[Starlette, httpx.AsyncClient, Database]


async def _create(client: httpx.AsyncClient, world: World, **fields: str) -> int:
    gid = world.discord.guild.id
    token = csrf_of((await client.get(f"/servers/{gid}/polls/new")).text)
    resp = await client.post(
        f"/servers/{gid}/polls/new",
        data={"csrf_token": token, **poll_form(world.discord.channel.id, **fields)},
    )
    assert resp.status_code == 303, resp.text
    return int(resp.headers["location"].rsplit("/", 1)[1])


def _poll_urls(gid: int, poll_id: int) -> list[tuple[str, str]]:
    return [
        ("GET", f"/servers/{gid}/polls"),
        ("GET", f"/servers/{gid}/polls/new"),
        ("POST", f"/servers/{gid}/polls/new"),
        ("GET", f"/servers/{gid}/import"),
        ("POST", f"/servers/{gid}/import"),
        ("GET", f"/polls/{poll_id}"),
        ("GET", f"/polls/{poll_id}/results"),
        ("GET", f"/polls/{poll_id}/edit"),
        ("POST", f"/polls/{poll_id}/edit"),
        ("POST", f"/polls/{poll_id}/close"),
        ("POST", f"/polls/{poll_id}/reopen"),
        ("GET", f"/polls/{poll_id}/delete"),
        ("POST", f"/polls/{poll_id}/delete"),
        ("GET", f"/polls/{poll_id}/export"),
    ]


async def test_a_member_without_manage_server_gets_403_everywhere(world: World, web: Web) -> None:
    app, client, _ = web
    await sign_in(client, world.discord, world.manager)
    poll_id = await _create(client, world)
    client.cookies.clear()
    await sign_in(client, world.discord, world.member)
    token = csrf_of((await client.get("/servers")).text)
    urls = _poll_urls(world.discord.guild.id, poll_id)
    # every route of the app that concerns a guild or a poll is in the list
    templated = {
        (m, r.path) for r in app.routes if isinstance(r, Route) and "{" in r.path for m in r.methods or ()
    }
    assert len([m for m, _ in templated if m != "HEAD"]) == len(urls)
    for method, url in urls:
        resp = await client.request(method, url, data={"csrf_token": token} if method == "POST" else None)
        assert resp.status_code == 403, (method, url, resp.status_code)
        assert "cannot manage polls in this server" in resp.text
    assert (await client.get(f"/polls/{poll_id}")).status_code == 403


async def test_url_tampering_reaches_no_other_guild(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    token = csrf_of((await client.get("/servers")).text)
    for guild in (world.other, world.botless):  # no right there / the bot is absent
        assert (await client.get(f"/servers/{guild.id}/polls")).status_code == 403
        resp = await client.post(f"/servers/{guild.id}/polls/new", data={"csrf_token": token, **poll_form(1)})
        assert resp.status_code == 403
    # a poll of the other guild, opened by its id
    from polly.polls.definition import validate_poll
    from polly.web.store import create_poll

    data = {
        "name": "Elsewhere",
        "question": "Not yours?",
        "options": ["a", "b"],
        "server_id": str(world.other.id),
        "channel_id": str(next(iter(world.other.channels))),
    }
    definition, problems = validate_poll(data, "t", now=datetime(2020, 1, 1))
    assert definition is not None, problems
    foreign = create_poll(
        database,
        definition,
        creator_id="1",
        image_path=None,
        server_name=None,
        channel_name=None,
        ping_role_name=None,
    )
    for method, url in _poll_urls(world.other.id, foreign)[5:]:
        resp = await client.request(method, url, data={"csrf_token": token} if method == "POST" else None)
        assert resp.status_code == 403, (method, url)
    assert (await client.get("/polls/999999")).status_code == 404


async def test_every_post_needs_the_sessions_csrf_token(world: World, web: Web) -> None:
    app, client, _ = web
    await sign_in(client, world.discord, world.manager)
    poll_id = await _create(client, world)
    gid = world.discord.guild.id
    posts = [u for m, u in _poll_urls(gid, poll_id) if m == "POST"] + ["/logout"]
    declared = {r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())}
    assert len(declared) == len(posts)  # a new POST route must be added here
    for url in posts:
        for data in (None, {"csrf_token": "forged"}):
            resp = await client.post(url, data=data)
            assert resp.status_code == 403, (url, data)
            assert "security token" in resp.text
    assert (await client.get(f"/polls/{poll_id}")).status_code == 200  # not deleted, still signed in


@pytest.mark.parametrize("how", ["re-signed (control)", "forged", "expired", "unknown session"])
async def test_forged_or_expired_session_cookies_are_no_session(world: World, web: Web, how: str) -> None:
    _, client, _ = web
    await sign_in(client, world.discord, world.manager)
    cookie = client.cookies["polly_session"]
    payload, _, _ = cookie.rpartition(".")  # data.timestamp.signature
    data = json.loads(base64.b64decode(payload.split(".")[0]))
    if how == "forged":
        value = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
    else:
        if how == "unknown session":
            data["sid"] = "not-a-live-session"
        signer = TimestampSigner(SECRET_KEY)
        past = int(time.time()) - 8 * 24 * 3600 if how == "expired" else int(time.time())
        signer.get_timestamp = lambda: past  # type: ignore[method-assign]
        value = signer.sign(base64.b64encode(json.dumps(data).encode())).decode()
    client.cookies.clear()
    client.cookies.set("polly_session", value)
    resp = await client.get("/servers")
    if how.endswith("(control)"):  # the cookie is built right: re-signed now, it still signs in
        assert resp.status_code == 200
        return
    assert resp.status_code == 303
    assert resp.headers["location"] == "/"
    assert (await client.get(f"/servers/{world.discord.guild.id}/polls")).status_code == 303


async def test_oversized_and_non_image_uploads_are_refused(world: World, web: Web, tmp_path: object) -> None:
    app, client, _ = web
    await sign_in(client, world.discord, world.manager)
    gid = world.discord.guild.id
    limit = app.state.web.settings.web.upload_max_bytes
    cases = [
        (("big.png", PNG + b"\x00" * limit, "image/png"), "larger than"),
        (("evil.png", b"<?php echo 1; ?>" * 10, "image/png"), "not a PNG, JPEG, GIF or WebP"),
    ]
    for upload, message in cases:
        token = csrf_of((await client.get(f"/servers/{gid}/polls/new")).text)
        resp = await client.post(
            f"/servers/{gid}/polls/new",
            data={"csrf_token": token, **poll_form(world.discord.channel.id)},
            files={"image": upload},
        )
        assert resp.status_code == 400
        assert message in resp.text
    assert "No active polls" in (await client.get(f"/servers/{gid}/polls")).text


async def test_no_secret_in_any_page_or_log(world: World, web: Web, caplog: pytest.LogCaptureFixture) -> None:
    _, client, _ = web
    caplog.set_level(logging.DEBUG)
    bodies = [(await client.get("/")).text]
    await sign_in(client, world.discord, world.manager)
    poll_id = await _create(client, world)
    gid = world.discord.guild.id
    urls = (
        "/servers",
        f"/servers/{gid}/polls",
        f"/servers/{gid}/polls/new",
        f"/polls/{poll_id}",
        f"/polls/{poll_id}/results",
        f"/polls/{poll_id}/export",
        "/polls/424242",
        "/auth/callback?error=x",
    )
    bodies += [(await client.get(url)).text for url in urls]
    world.discord.fail(500, "GET /guilds/", times=5)
    world.discord.fail(500, "GET /users/@me/guilds", times=5)
    bodies.append((await client.get(f"/servers/{world.other.id}/polls/new")).text)
    secrets = (world.discord.oauth.client_secret, world.discord.token, SECRET_KEY)
    text = "\n".join(bodies) + caplog.text
    for secret in secrets:
        assert secret not in text
    assert "Traceback" not in text


async def test_a_body_beyond_the_upload_limit_is_refused_before_it_is_read(world: World, web: Web) -> None:
    app, client, _ = web
    await sign_in(client, world.discord, world.manager)
    gid = world.discord.guild.id
    token = csrf_of((await client.get(f"/servers/{gid}/polls/new")).text)
    limit = app.state.web.settings.web.upload_max_bytes
    body = b"x" * (limit + 2 * 1024 * 1024)
    resp = await client.post(
        f"/servers/{gid}/polls/new",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": token},
    )
    assert resp.status_code == 413
    assert "larger than" in resp.text


async def test_super_admins_see_every_server_the_bot_is_in(
    world: World, sqlite_url: str, tmp_path: Path
) -> None:
    settings = web_settings(world.discord, sqlite_url, tmp_path, SUPER_ADMIN_IDS=f"1, {world.member.id}")
    async with dashboard(settings) as (_, client, _db):
        await sign_in(client, world.discord, world.member)  # no Manage Server anywhere
        page = await client.get("/servers")
        assert "super admin" in page.text
        assert world.other.name in page.text
        assert world.botless.name not in page.text  # the bot is not there
        assert (await client.get(f"/servers/{world.other.id}/polls")).status_code == 200
        assert (await client.get(f"/servers/{world.botless.id}/polls")).status_code == 403
        client.cookies.clear()
        await sign_in(client, world.discord, world.manager)  # not a super admin: control
        assert world.other.name not in (await client.get("/servers")).text
        assert (await client.get(f"/servers/{world.other.id}/polls")).status_code == 403
