"""Discord's REST API v10, as much of it as polly (and discord.py's login) calls, on aiohttp.

Routes: ``GET /gateway``, ``/gateway/bot``, ``/users/@me``, ``/oauth2/applications/@me``;
``POST /users/@me/channels`` (DM channel); messages (``POST`` JSON or multipart with
``payload_json`` and files, ``GET``, ``PATCH``); reactions (``PUT``/``DELETE`` ``@me``, ``DELETE``
another user's, ``DELETE`` all, ``GET`` users with ``limit``/``after`` paging by ascending user id);
read-only ``GET /channels/{id}``, ``/guilds/{id}``, ``/guilds/{id}/channels``, ``/roles``,
``/emojis``, ``/members/{uid}``. Errors carry Discord's JSON ``{"message", "code"}`` and codes
(401 0, 403 50013 / 50007, 404 10003 / 10008 / 10014, 400 50006 / 30010 / 50035). Every answer is
``Content-Type: application/json`` exactly (discord.py decodes JSON only then).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from tests.discord_standin.limits import VIA, Fault, Limiter, RequestLog, Seen, rate_limited
from tests.discord_standin.model import (
    INTENT_GUILD_MESSAGE_REACTIONS,
    INTENT_GUILD_MESSAGES,
    MAX_REACTIONS,
    Channel,
    Message,
    User,
    World,
    now_iso,
)

API_PREFIX = "/api/v10"
Dispatch = Callable[[str, dict[str, Any], int], None]  # (event, data, intent it needs)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY = web.RequestKey("standin_body", dict[str, Any])  # the decoded JSON body, read once


class DiscordHTTPError(Exception):
    def __init__(self, status: int, message: str, code: int) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**VIA, **(headers or {}), "Content-Type": "application/json"},
    )


def _no_content(headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=204, headers={**VIA, **(headers or {})})


class RestApi:
    """The REST half. ``token`` is the only bot token accepted; ``dispatch`` sends gateway events."""

    def __init__(self, world: World, token: str, dispatch: Dispatch, gateway_url: Callable[[], str]) -> None:
        self.world = world
        self.token = token
        self.dispatch = dispatch
        self.gateway_url = gateway_url
        self.limiter = Limiter()
        self.log = RequestLog()
        self.faults: list[Fault] = []
        self.delay_seconds = 0.0

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        p, m = API_PREFIX, API_PREFIX + "/channels/{cid}/messages"
        r = app.router
        r.add_get(p + "/gateway", self._gateway)
        r.add_get(p + "/gateway/bot", self._gateway_bot)
        r.add_get(p + "/users/@me", self._me)
        r.add_get(p + "/oauth2/applications/@me", self._application)
        r.add_post(p + "/users/@me/channels", self._dm_channel)
        r.add_get(p + "/channels/{cid}", self._channel)
        r.add_post(m, self._send)
        r.add_get(m + "/{mid}", self._fetch)
        r.add_patch(m + "/{mid}", self._edit)
        r.add_delete(m + "/{mid}/reactions", self._clear)
        r.add_put(m + "/{mid}/reactions/{emoji}/@me", self._react)
        r.add_delete(m + "/{mid}/reactions/{emoji}/{uid}", self._unreact)
        r.add_get(m + "/{mid}/reactions/{emoji}", self._users)
        r.add_get(p + "/guilds/{gid}", self._guild)
        r.add_get(p + "/guilds/{gid}/channels", self._guild_channels)
        r.add_get(p + "/guilds/{gid}/roles", self._guild_roles)
        r.add_get(p + "/guilds/{gid}/members/{uid}", self._guild_member)
        r.add_get(p + "/guilds/{gid}/emojis", self._guild_emojis)

    # --- plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        template = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        route = f"{request.method} {template.removeprefix(API_PREFIX)}"
        body = await _read_body(request)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        response, retry = await self._answer(request, handler, route, body)
        self.log.add(Seen(time.monotonic(), request.method, request.path.removeprefix(API_PREFIX), route,
                          response.status, retry, body))  # fmt: skip
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, route: str, body: Any
    ) -> tuple[web.StreamResponse, float | None]:
        key = f"{request.method} {request.path.removeprefix(API_PREFIX)}"
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401), None
        bucket = "reactions" if "/reactions" in route and request.method != "GET" else route
        major = request.match_info.get("cid") or request.match_info.get("gid") or ""
        headers, retry = self.limiter.check(bucket, major)
        fault = next((f for f in self.faults if f.match in key), None)
        if fault is not None:
            return self._injected(fault, headers)
        if retry is not None:
            data, extra = rate_limited(retry)
            return json_response(data, status=429, headers={**headers, **extra}), retry
        request[BODY] = body if isinstance(body, dict) else {}
        try:
            response = await handler(request)
        except DiscordHTTPError as err:
            return json_response({"message": err.message, "code": err.code}, status=err.status), None
        response.headers.update(headers)
        return response, None

    def _injected(self, fault: Fault, headers: dict[str, str]) -> tuple[web.StreamResponse, float | None]:
        fault.times -= 1
        if fault.times <= 0:
            self.faults.remove(fault)
        if fault.retry_after is not None:
            data, extra = rate_limited(fault.retry_after, scope=fault.scope, is_global=fault.is_global)
            extra = {**headers, **extra, **fault.headers}
            if not fault.via:  # Cloudflare's edge: no Via header
                body = json.dumps(data).encode()
                raw = web.Response(
                    status=429, body=body, headers={**extra, "Content-Type": "application/json"}
                )
                return raw, fault.retry_after
            return json_response(data, status=429, headers=extra), fault.retry_after
        if isinstance(fault.body, str):
            text = web.Response(status=fault.status, text=fault.body, headers={**VIA, **fault.headers})
            return text, None
        data = fault.body or {"message": f"{fault.status}: injected", "code": 0}
        return json_response(data, status=fault.status, headers={**headers, **fault.headers}), None

    def _channel_of(self, request: web.Request) -> Channel:
        channel = self.world.channels.get(int(request.match_info["cid"]))
        if channel is None:
            raise DiscordHTTPError(404, "Unknown Channel", 10003)
        if channel.id in self.world.forbidden_channels:
            raise DiscordHTTPError(403, "Missing Permissions", 50013)
        return channel

    def _message_of(self, request: web.Request) -> Message:
        channel = self._channel_of(request)
        msg = self.world.messages.get(int(request.match_info["mid"]))
        if msg is None or msg.channel_id != channel.id:
            raise DiscordHTTPError(404, "Unknown Message", 10008)
        return msg

    def _emoji_key(self, request: web.Request) -> str:
        key = request.match_info["emoji"]
        if ":" in key:
            guild = self.world.guild_of(int(request.match_info["cid"]))
            if guild is None or int(key.rsplit(":", 1)[1]) not in guild.emojis:
                raise DiscordHTTPError(400, "Unknown Emoji", 10014)
        return key

    # --- gateway discovery, identity ------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url()})

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return json_response({
            "url": self.gateway_url(),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000,
                                    "max_concurrency": 1},
        })  # fmt: skip

    async def _me(self, request: web.Request) -> web.Response:
        return json_response({**self.world.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:
        w = self.world
        return json_response({
            "id": str(w.application_id), "name": w.bot.username, "description": "", "icon": None,
            "bot_public": False, "bot_require_code_grant": False, "owner": w.owner.payload(),
            "verify_key": "0" * 64, "flags": 0, "team": None, "summary": "",
        })  # fmt: skip

    async def _dm_channel(self, request: web.Request) -> web.Response:
        uid = int(request[BODY]["recipient_id"])
        if uid <= 0:
            raise DiscordHTTPError(400, "Invalid Recipient(s)", 50033)
        if uid not in self.world.users:  # any Discord user can be DMed, guild member or not
            self.world.users[uid] = User(uid, f"user{uid}")
        return json_response(self.world.dm_channel(uid).payload(self.world.users))

    async def _channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel_of(request).payload(self.world.users))

    # --- messages -----------------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        channel = self._channel_of(request)
        body = request[BODY]
        if channel.type == 1 and channel.recipient in self.world.closed_dms:
            raise DiscordHTTPError(403, "Cannot send messages to this user", 50007)
        content, embeds, files = body.get("content") or "", body.get("embeds") or [], body.get("_files", [])
        if not content and not embeds and not files:
            raise DiscordHTTPError(400, "Cannot send an empty message", 50006)
        _check_form(content, embeds)
        mentions = body.get("allowed_mentions")
        msg = Message(self.world.ids.next(), channel.id, self.world.bot.id, content, embeds,
                      attachments=list(files), allowed_mentions=mentions,
                      mention_roles=_pinged_roles(content, mentions))  # fmt: skip
        self.world.messages[msg.id] = msg
        payload = self.world.message_payload(msg)
        self.dispatch("MESSAGE_CREATE", payload, INTENT_GUILD_MESSAGES)
        return json_response(payload)

    async def _fetch(self, request: web.Request) -> web.Response:
        return json_response(self.world.message_payload(self._message_of(request)))

    async def _edit(self, request: web.Request) -> web.Response:
        msg, body = self._message_of(request), request[BODY]
        _check_form(body.get("content", msg.content) or "", body.get("embeds", msg.embeds) or [])
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = body["embeds"] or []
        msg.edits += 1
        msg.edited_at = now_iso()
        payload = self.world.message_payload(msg)
        self.dispatch("MESSAGE_UPDATE", payload, INTENT_GUILD_MESSAGES)
        return json_response(payload)

    # --- reactions ----------------------------------------------------------------------------------

    async def _react(self, request: web.Request) -> web.Response:
        msg, key = self._message_of(request), self._emoji_key(request)
        self.world_react(msg, self.world.bot.id, key)
        return _no_content()

    def world_react(self, msg: Message, user_id: int, key: str) -> bool:
        """``user_id`` reacts with ``key``; dispatches the ADD when it is new. Raises 30010 at 20."""
        users = msg.reactions.get(key)
        if users is None:
            if sum(1 for v in msg.reactions.values() if v) >= MAX_REACTIONS:
                raise DiscordHTTPError(400, "Maximum number of reactions reached (20)", 30010)
            users = msg.reactions[key] = []
        if user_id in users:
            return False
        users.append(user_id)
        event = self.world.reaction_event("add", msg, user_id, key)
        self.dispatch("MESSAGE_REACTION_ADD", event, INTENT_GUILD_MESSAGE_REACTIONS)
        return True

    def world_unreact(self, msg: Message, user_id: int, key: str) -> bool:
        users = msg.reactions.get(key, [])
        if user_id not in users:
            return False
        users.remove(user_id)
        if not users:
            msg.reactions.pop(key, None)
        event = self.world.reaction_event("remove", msg, user_id, key)
        self.dispatch("MESSAGE_REACTION_REMOVE", event, INTENT_GUILD_MESSAGE_REACTIONS)
        return True

    async def _unreact(self, request: web.Request) -> web.Response:
        msg, key = self._message_of(request), self._emoji_key(request)
        raw = request.match_info["uid"]
        self.world_unreact(msg, self.world.bot.id if raw == "@me" else int(raw), key)
        return _no_content()

    async def _clear(self, request: web.Request) -> web.Response:
        msg = self._message_of(request)
        msg.reactions.clear()
        data = {"channel_id": str(msg.channel_id), "message_id": str(msg.id)}
        guild = self.world.guild_of(msg.channel_id)
        if guild is not None:
            data["guild_id"] = str(guild.id)
        self.dispatch("MESSAGE_REACTION_REMOVE_ALL", data, INTENT_GUILD_MESSAGE_REACTIONS)
        return _no_content()

    async def _users(self, request: web.Request) -> web.Response:
        msg, key = self._message_of(request), self._emoji_key(request)
        try:
            limit = int(request.query.get("limit", "25"))
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise DiscordHTTPError(400, "Invalid Form Body", 50035) from None
        if not 1 <= limit <= 100:
            raise DiscordHTTPError(400, "Invalid Form Body", 50035)
        page = [u for u in sorted(msg.reactions.get(key, [])) if u > after][:limit]
        return json_response([self.world.users[u].payload() for u in page])

    # --- guilds (read-only, for dashboards) -------------------------------------------------------

    def _guild_of(self, request: web.Request) -> Any:
        guild = self.world.guilds.get(int(request.match_info["gid"]))
        if guild is None:
            raise DiscordHTTPError(404, "Unknown Guild", 10004)
        return guild

    async def _guild(self, request: web.Request) -> web.Response:
        g = self._guild_of(request)
        data = g.payload(self.world.users, members=[])
        for gateway_only in ("joined_at", "large", "unavailable", "member_count", "voice_states", "members",
                             "channels", "threads", "presences", "stage_instances", "guild_scheduled_events",
                             "soundboard_sounds"):  # fmt: skip
            data.pop(gateway_only)
        return json_response(data)

    async def _guild_channels(self, request: web.Request) -> web.Response:
        return json_response([c.payload(self.world.users) for c in self._guild_of(request).channels.values()])

    async def _guild_roles(self, request: web.Request) -> web.Response:
        return json_response([r.payload() for r in self._guild_of(request).roles.values()])

    async def _guild_emojis(self, request: web.Request) -> web.Response:
        guild = self._guild_of(request)
        return json_response(guild.payload(self.world.users, members=[])["emojis"])

    async def _guild_member(self, request: web.Request) -> web.Response:
        member = self._guild_of(request).members.get(int(request.match_info["uid"]))
        if member is None:
            raise DiscordHTTPError(404, "Unknown Member", 10007)
        return json_response(member.payload())


async def _read_body(request: web.Request) -> Any:
    if request.content_type.startswith("multipart/"):
        body: dict[str, Any] = {"_files": []}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.name == "payload_json":
                body.update(json.loads(await part.text()))
            else:
                body["_files"].append((part.filename, len(await part.read())))
        return body
    if request.can_read_body:
        return await request.json()
    return None


def _check_form(content: str, embeds: list[dict[str, Any]]) -> None:
    def chars(e: dict[str, Any]) -> int:
        fields = e.get("fields") or []
        return (len(e.get("title") or "") + len(e.get("description") or "")
                + len((e.get("footer") or {}).get("text") or "")
                + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields))  # fmt: skip

    if len(content) > 2000 or len(embeds) > 10 or sum(chars(e) for e in embeds) > 6000:
        raise DiscordHTTPError(400, "Invalid Form Body", 50035)


def _pinged_roles(content: str, mentions: dict[str, Any] | None) -> list[int]:
    """Roles the message actually pings: mentioned in the text and allowed by ``allowed_mentions``."""
    named = [int(r) for r in re.findall(r"<@&(\d+)>", content)]
    if mentions is None:
        return named
    allowed = {int(r) for r in mentions.get("roles", [])}
    parse = mentions.get("parse", [])
    return [r for r in named if "roles" in parse or r in allowed]
