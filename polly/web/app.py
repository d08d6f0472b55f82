"""The dashboard as a Starlette application: :func:`create_app` assembles it from the settings, the
process's one :class:`~polly.db.engine.Database` and its Redis client.

Pages are server-rendered Jinja2 templates (autoescaped) with one small script for live results; no
build step. Every page and action behind sign-in checks, on the server and for every request, that
the member may manage the guild it concerns (:mod:`polly.web.access`): a tampered URL gets 403.
Errors are one line on a page, never a traceback, and never a secret.

Installed ``polly.web_app_hooks`` entry points are called with the application once it is built
(the OpenTelemetry instrumentation adds its HTTP metrics that way; polly never imports it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polly.config import Settings
from polly.db.engine import Database
from polly.errors import ConfigError
from polly.web import pages
from polly.web.access import Access, ForbiddenError, Member
from polly.web.auth import (
    SignIn,
    SignInError,
    checked_form,
    csrf_token,
    discord_failure,
    redirect,
    require_member,
)
from polly.web.discord_api import DiscordApi, DiscordApiError
from polly.web.serve import missing_settings
from polly.web.store import save_member

logger = logging.getLogger("polly.web")
HERE = Path(__file__).parent
HOOK_GROUP = "polly.web_app_hooks"


@dataclass
class WebState:
    """What every handler reads: ``request.app.state.web``."""

    settings: Settings
    database: Database
    redis: Any
    api: DiscordApi
    signin: SignIn
    access: Access
    templates: Jinja2Templates

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        member = self.signin.member(request)
        base = {"member": member, "csrf_token": csrf_token(request) if member else ""}
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    async def member_guild(self, request: Request, guild_id: str) -> tuple[Member, Any]:
        """The member and the guild, after checking they may manage it (401/403 otherwise)."""
        member = require_member(self.signin, request)
        try:
            return member, await self.access.require(member, guild_id)
        except ForbiddenError:
            raise HTTPException(403, "you cannot manage polls in this server") from None
        except DiscordApiError as err:
            raise discord_failure(err) from None


def create_app(
    settings: Settings, database: Database, redis: Any = None, *, api: DiscordApi | None = None
) -> Starlette:
    """The dashboard application; :class:`ConfigError` when sign-in is not configured."""
    missing = missing_settings(settings)
    if missing:
        raise ConfigError(
            [f"{name} is not set: the dashboard needs it to sign members in" for name in missing],
            source="web settings",
        )
    web = settings.web
    assert web.secret_key is not None
    api = api or DiscordApi(
        api_base=settings.discord.api_base,
        bot_token=settings.discord.token,
        ttl_seconds=web.discord_cache_ttl_seconds,
        max_entries=web.discord_cache_max_entries,
    )
    signin = SignIn(web, api, redis)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    state = WebState(settings, database, redis, api, signin, Access(api, web.super_admins()), templates)
    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=web.secret_key.get_secret_value(),
                session_cookie="polly_session",
                max_age=web.session_max_age_seconds,
                same_site="lax",
                https_only=web.redirect_uri.startswith("https://"),
            ),
            Middleware(_ContainErrors),
            Middleware(_ResolveMember),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.web = state
    for ep in entry_points(group=HOOK_GROUP):
        try:
            ep.load()(app)
        except Exception:
            logger.exception("web app hook %s failed; serving without it", ep.name)
    return app


def _routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/login", login),
        Route("/auth/callback", callback),
        Route("/logout", logout, methods=["POST"]),
        Route("/servers", servers),
        *pages.routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


def state_of(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


async def home(request: Request) -> Response:
    web = state_of(request)
    if web.signin.member(request) is not None:
        return redirect("/servers")
    return web.render(request, "login.html", {})


async def login(request: Request) -> Response:
    return await state_of(request).signin.login(request)


async def callback(request: Request) -> Response:
    web = state_of(request)
    try:
        member, avatar = await web.signin.callback(request)
    except SignInError as err:
        return web.render(request, "error.html", {"status": 400, "message": str(err)}, status=400)
    await run_in_threadpool(save_member, web.database, member.id, member.name, avatar)
    logger.info("dashboard: %s signed in", member.id)
    return redirect("/servers")


async def logout(request: Request) -> Response:
    await checked_form(request)
    await state_of(request).signin.logout(request)
    return redirect("/")


async def servers(request: Request) -> Response:
    web = state_of(request)
    member = require_member(web.signin, request)
    try:
        guilds = await web.access.guilds(member)
        others = [g for g in await web.access.all_guilds(member) if g.id not in guilds]
    except DiscordApiError as err:
        raise discord_failure(err) from None
    return web.render(
        request,
        "servers.html",
        {"guilds": list(guilds.values()), "others": others, "super_admin": web.access.is_super_admin(member)},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (301, 302, 303, 307) and exc.headers:
        return Response(status_code=exc.status_code, headers=exc.headers)
    web = state_of(request)
    return web.render(
        request, "error.html", {"status": exc.status_code, "message": exc.detail}, status=exc.status_code
    )


class _ContainErrors:
    """An unexpected failure becomes a 500 page and one log line naming its type and route; its text
    (which may quote a secret-bearing value) and traceback go nowhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of every page
            logger.error(  # noqa: TRY400 - no traceback: it may quote secrets
                "dashboard: %s %s failed: %s", scope["method"], _route_of(scope), type(exc).__name__
            )
            if started:
                return
            request = Request(scope)
            web = state_of(request)
            message = "something went wrong; it was logged"
            page = web.render(request, "error.html", {"status": 500, "message": message}, status=500)
            await page(scope, receive, send)


class _ResolveMember:
    """Looks up the session's member (an await: the token may be in Redis) before the handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            await state_of(request).signin.resolve(request)
        await self.app(scope, receive, send)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "?"))
