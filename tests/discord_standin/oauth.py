"""Discord's OAuth2 as the dashboard uses it: the authorize page, the token endpoint, and the
member's ``/users/@me`` and ``/users/@me/guilds`` with a Bearer token; plus the bot's
``GET /users/@me/guilds`` (the guilds it is in).

The authorize page consents at once for :attr:`OAuthApi.signed_in` (a test picks who signs in) and
redirects to the ``redirect_uri`` with a one-time code; the token endpoint checks the client id,
secret, code and redirect URI as Discord does. A member's ``permissions`` in a guild are computed
as Discord does: the owner has all; otherwise @everyone's and their roles' bits, all of them with
Administrator.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.discord_standin.model import Guild, User, World
from tests.discord_standin.rest import API_PREFIX, json_response

CLIENT_SECRET = "standin.client-secret.for-tests"
ALL_PERMISSIONS = (1 << 50) - 1
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OAuthApi:
    """OAuth2 on the stand-in's application. ``client_id`` is the application's id."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.client_id = str(world.application_id)
        self.client_secret = CLIENT_SECRET
        self.signed_in: User | None = None
        self._codes: dict[str, tuple[int, str]] = {}  # code -> (user id, redirect uri)
        self.tokens: dict[str, int] = {}  # access token -> user id
        self.token_requests = 0

    def install(self, app: web.Application) -> None:
        # Ahead of the REST middleware, which accepts only the bot token.
        app.middlewares.insert(0, self._middleware)
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_get(API_PREFIX + "/users/@me/guilds", self._bot_guilds)

    def revoke(self, user: User) -> None:
        """Invalidate every token of ``user`` (their next call gets 401)."""
        for token in [t for t, uid in self.tokens.items() if uid == user.id]:
            del self.tokens[token]

    # --- permissions -------------------------------------------------------------------------------

    @staticmethod
    def permissions(guild: Guild, user_id: int) -> int:
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        bits = guild.roles[guild.id].permissions if guild.id in guild.roles else 0
        for role_id in member.roles:
            role = guild.roles.get(role_id)
            if role is not None:
                bits |= role.permissions
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def _guilds_of(self, user_id: int) -> list[dict[str, Any]]:
        return [
            {
                "id": str(g.id),
                "name": g.name,
                "icon": None,
                "owner": g.owner_id == user_id,
                "permissions": str(self.permissions(g, user_id)),
                "features": [],
            }
            for g in self.world.guilds.values()
            if user_id in g.members
        ]

    # --- routes ---------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == API_PREFIX + "/oauth2/token" and request.method == "POST":
            return await self._token(request)
        auth = request.headers.get("Authorization", "")
        if not (path.startswith(API_PREFIX) and auth.startswith("Bearer ")):
            return await handler(request)
        user_id = self.tokens.get(auth.removeprefix("Bearer "))
        if user_id is None:
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        if path == API_PREFIX + "/users/@me" and request.method == "GET":
            return json_response(self.world.users[user_id].payload())
        if path == API_PREFIX + "/users/@me/guilds" and request.method == "GET":
            return json_response(self._guilds_of(user_id))
        return json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.Response(status=400, text="invalid client_id or response_type")
        if "identify" not in q.get("scope", "").split():
            return web.Response(status=400, text="scope must include identify")
        redirect_uri = q.get("redirect_uri", "")
        if self.signed_in is None:
            return web.Response(status=400, text="nobody is signed in to the stand-in")
        code = secrets.token_urlsafe(16)
        self._codes[code] = (self.signed_in.id, redirect_uri)
        params = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        raise web.HTTPFound(f"{redirect_uri}?{urlencode(params)}")

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests += 1
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return json_response({"error": "invalid_client"}, status=401)
        code = str(form.get("code", ""))
        found = self._codes.pop(code, None)
        if form.get("grant_type") != "authorization_code" or found is None:
            return json_response({"error": "invalid_grant"}, status=400)
        user_id, redirect_uri = found
        if form.get("redirect_uri") != redirect_uri:
            return json_response({"error": "invalid_grant", "error_description": "redirect_uri"}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = user_id
        return json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 604800,
                "refresh_token": secrets.token_urlsafe(24),
                "scope": "identify guilds",
            }
        )

    async def _bot_guilds(self, request: web.Request) -> web.Response:
        """With the bot token (the REST middleware checked it): the guilds the bot is in."""
        return json_response(
            [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "icon": None,
                    "owner": False,
                    "permissions": "0",
                    "features": [],
                }
                for g in self.world.guilds.values()
                if self.world.bot.id in g.members
            ]
        )
