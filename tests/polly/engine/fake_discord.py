"""A loopback HTTP server answering the Discord REST routes the discord.py adapter uses.

It keeps messages and their reactions, records every request, and answers queued failures
(status, JSON body, headers) before the real handler when a request matches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

BOT_ID = 900_000_000_000_000_001
API_PREFIX = "/api/v10"


class _UnknownMessageError(Exception):
    pass


@dataclass
class Fault:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str]
    match: str | None
    times: int


@dataclass
class FakeMessage:
    id: int
    channel_id: int
    content: str | None
    embeds: list[dict[str, Any]]
    # emoji route key ("👍" or "name:id") -> user ids, in insertion order
    reactions: dict[str, set[int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any


async def _multipart(request: web.Request) -> dict[str, Any]:
    """A message sent with files: ``payload_json`` plus ``_files`` = [(filename, size)]."""
    body: dict[str, Any] = {"_files": []}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        if part.name == "payload_json":
            body.update(json.loads(await part.text()))
        else:
            body["_files"].append((part.filename, len(await part.read())))
    return body


class FakeDiscord:
    """State and handlers; ``base`` is the API base to give the adapter once started."""

    def __init__(self) -> None:
        self.messages: dict[int, FakeMessage] = {}
        self.requests: list[Seen] = []
        self.faults: deque[Fault] = deque()
        self.custom_emojis: dict[int, tuple[str, bool]] = {}  # id -> (name, animated)
        self.bots: set[int] = {BOT_ID}
        self.delay_seconds = 0.0
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self._server: TestServer | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        return str(self._server.make_url(API_PREFIX))

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        p = API_PREFIX + "/channels/{cid}/messages"
        app.router.add_get(API_PREFIX + "/users/@me", self._me)
        app.router.add_get(API_PREFIX + "/oauth2/applications/@me", self._application)
        app.router.add_post(API_PREFIX + "/users/@me/channels", self._dm_channel)
        app.router.add_post(p, self._send)
        app.router.add_get(p + "/{mid}", self._fetch)
        app.router.add_patch(p + "/{mid}", self._edit)
        app.router.add_delete(p + "/{mid}/reactions", self._clear)
        app.router.add_put(p + "/{mid}/reactions/{emoji}/@me", self._react)
        app.router.add_delete(p + "/{mid}/reactions/{emoji}/{uid}", self._unreact)
        app.router.add_get(p + "/{mid}/reactions/{emoji}", self._users)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    def fail(
        self,
        status: int,
        body: dict[str, Any] | str | None = None,
        *,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests whose ``METHOD path`` contains ``match`` with ``status``."""
        default = {"message": f"fake {status}", "code": 0}
        self.faults.append(Fault(status, body if body is not None else default, headers or {}, match, times))

    def add_message(self, channel_id: int, reactions: dict[str, set[int]] | None = None) -> FakeMessage:
        msg = FakeMessage(next(self._ids), channel_id, "", [], dict(reactions or {}))
        self.messages[msg.id] = msg
        return msg

    # --- plumbing ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.content_type.startswith("multipart/"):
            body = await _multipart(request)
        elif request.can_read_body:
            body = await request.json()
        self.requests.append(Seen(request.method, request.path, dict(request.query), body))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        key = f"{request.method} {request.path}"
        for fault in self.faults:
            if fault.match is None or fault.match in key:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                if isinstance(fault.body, str):
                    return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
                return _json(fault.body, status=fault.status, headers=fault.headers)
        try:
            response: web.StreamResponse = await handler(request)
        except _UnknownMessageError:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return response

    def _emoji_payload(self, key: str) -> dict[str, Any]:
        if ":" in key:
            name, raw_id = key.rsplit(":", 1)
            animated = self.custom_emojis.get(int(raw_id), (name, False))[1]
            return {"id": raw_id, "name": name, "animated": animated}
        return {"id": None, "name": key}

    def _message_payload(self, msg: FakeMessage) -> dict[str, Any]:
        return {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "type": 0,
            "content": msg.content or "",
            "author": _user(BOT_ID, bot=True),
            "embeds": msg.embeds,
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "tts": False,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": 0,
            "reactions": [
                {"emoji": self._emoji_payload(k), "count": len(v), "me": BOT_ID in v, "count_details": {}}
                for k, v in msg.reactions.items()
                if v
            ],
        }

    def _get(self, request: web.Request) -> FakeMessage:
        msg = self.messages.get(int(request.match_info["mid"]))
        if msg is None or msg.channel_id != int(request.match_info["cid"]):
            raise _UnknownMessageError
        return msg

    # --- routes ------------------------------------------------------------------------------------

    async def _me(self, request: web.Request) -> web.Response:
        return _json(_user(BOT_ID, bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(BOT_ID),
                "name": "polly",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": _user(1),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _dm_channel(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        uid = int(body["recipient_id"])
        return _json({"id": str(uid + 1), "type": 1, "recipients": [_user(uid)], "last_message_id": None})

    async def _send(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        msg = FakeMessage(
            next(self._ids), int(request.match_info["cid"]), body.get("content"), body.get("embeds") or []
        )
        msg.files = [name for name, _ in body.get("_files", [])]
        self.messages[msg.id] = msg
        return _json(self._message_payload(msg))

    async def _fetch(self, request: web.Request) -> web.Response:
        return _json(self._message_payload(self._get(request)))

    async def _edit(self, request: web.Request) -> web.Response:
        msg, body = self._get(request), self.requests[-1].body
        if "content" in body:
            msg.content = body["content"]
        if "embeds" in body:
            msg.embeds = body["embeds"]
        return _json(self._message_payload(msg))

    async def _clear(self, request: web.Request) -> web.Response:
        self._get(request).reactions.clear()
        return web.Response(status=204)

    async def _react(self, request: web.Request) -> web.Response:
        self._get(request).reactions.setdefault(request.match_info["emoji"], set()).add(BOT_ID)
        return web.Response(status=204)

    async def _unreact(self, request: web.Request) -> web.Response:
        users = self._get(request).reactions.get(request.match_info["emoji"], set())
        users.discard(int(request.match_info["uid"]))
        return web.Response(status=204)

    async def _users(self, request: web.Request) -> web.Response:
        users = sorted(self._get(request).reactions.get(request.match_info["emoji"], set()))
        after = int(request.query.get("after", "0"))
        limit = int(request.query["limit"])
        page = [u for u in users if u > after][:limit]
        return _json([_user(u, bot=u in self.bots) for u in page])


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py decodes JSON only when Content-Type is exactly application/json (no charset)
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _user(uid: int, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": f"u{uid}", "discriminator": "0", "avatar": None, "bot": bot}
