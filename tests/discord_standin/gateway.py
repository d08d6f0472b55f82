"""Discord's gateway websocket (API v10, JSON, optional ``zlib-stream`` transport compression).

The conversation, as Discord holds it: HELLO (op 10, ``heartbeat_interval`` in ms); heartbeats
(op 1) answered by ACK (op 11); IDENTIFY (op 2) → READY (with ``session_id`` and
``resume_gateway_url``; guilds unavailable at first) then one GUILD_CREATE per guild; RESUME (op 6)
→ the dispatches missed since ``seq`` replayed, then RESUMED; RECONNECT (op 7) and INVALID SESSION
(op 9, ``d`` says whether to resume) on demand. A wrong token closes with 4004; a privileged intent
not enabled for the bot with 4014; a bad ``v`` with 4012. Dispatches reach a session only for the
intents it identified with, and each session keeps the last ``replay_max`` of them (by sequence
number) for RESUME, whether or not it was connected when they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.discord_standin.model import INTENT_GUILDS, PRIVILEGED_INTENTS, World

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME, OP_RECONNECT = 0, 1, 2, 6, 7
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 9, 10, 11
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_INVALID_API_VERSION = 4012
CLOSE_DISALLOWED_INTENTS = 4014


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    compressor: Any | None  # zlib compressobj for zlib-stream
    outbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    session: Session | None = None


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    seq: int = 0
    replay: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    connection: _Connection | None = None
    resumable: bool = True


@dataclass
class GatewayCounters:
    connections: int = 0
    identifies: int = 0
    resumes: int = 0  # RESUME accepted
    resume_refused: int = 0
    heartbeats: int = 0
    dispatched: int = 0
    replayed: int = 0


class GatewayServer:
    """The gateway half. ``base_url`` (``ws://host:port``) is set once the server listens."""

    def __init__(self, world: World, token: str, *, heartbeat_ms: int = 41_250) -> None:
        self.world = world
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.base_url = ""
        self.sessions: dict[str, Session] = {}
        self.connections: set[_Connection] = set()
        self.counters = GatewayCounters()
        self.accepting = True  # False: the websocket upgrade is refused with 503 (an outage)
        self.close_on_identify: int | None = None  # e.g. 4014, whatever IDENTIFY carries
        self.allowed_privileged = 0  # privileged intents enabled for the bot in the portal
        self._writers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"{self.base_url}/gateway"

    def install(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self._handle)
        app.router.add_get("/resume", self._handle)  # resume_gateway_url

    # --- what tests do --------------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any], intent: int) -> None:
        for session in self.sessions.values():
            if session.intents & intent:
                self._send_dispatch(session, event, data)

    async def drop(self, *, abrupt: bool = True) -> None:
        """Cut every connection: abruptly (TCP closed, as a network failure) or with close code 4000."""
        for conn in list(self.connections):
            if abrupt:
                transport = conn.ws._req.transport if conn.ws._req is not None else None
                if transport is not None:
                    transport.abort()
            else:
                await conn.ws.close(code=4000, message=b"Unknown error")

    def request_reconnect(self) -> None:
        """Op 7 on every connection: the client reconnects and resumes."""
        for conn in self.connections:
            conn.outbox.put_nowait({"op": OP_RECONNECT, "d": None})

    def invalidate(self, *, resumable: bool = False) -> None:
        """Op 9 on every connection; not resumable: the sessions end, the client identifies anew."""
        for conn in self.connections:
            if conn.session is not None and not resumable:
                conn.session.resumable = False
                self.sessions.pop(conn.session.id, None)
            conn.outbox.put_nowait({"op": OP_INVALID_SESSION, "d": resumable})

    @property
    def connected(self) -> int:
        return sum(1 for c in self.connections if c.session is not None)

    # --- the websocket --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="upstream connect error")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=4096 * 1024)
        await ws.prepare(request)
        self.counters.connections += 1
        if request.query.get("v") != "10" or request.query.get("encoding", "json") != "json":
            await ws.close(code=CLOSE_INVALID_API_VERSION, message=b"Invalid API version")
            return ws
        compressor = zlib.compressobj() if request.query.get("compress") == "zlib-stream" else None
        conn = _Connection(ws, compressor)
        self.connections.add(conn)
        writer = asyncio.get_running_loop().create_task(self._write(conn))
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)
        try:
            conn.outbox.put_nowait({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_ms,
                                                           "_trace": ['["standin-gateway"]']}})  # fmt: skip
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                if not await self._receive(conn, json.loads(msg.data)):
                    break
        finally:
            self.connections.discard(conn)
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            conn.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: _Connection) -> None:
        while (frame := await conn.outbox.get()) is not None:
            text = json.dumps(frame)
            try:
                if conn.compressor is not None:
                    await conn.ws.send_bytes(
                        conn.compressor.compress(text.encode()) + conn.compressor.flush(zlib.Z_SYNC_FLUSH)
                    )
                else:
                    await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _receive(self, conn: _Connection, frame: dict[str, Any]) -> bool:
        op, data = frame.get("op"), frame.get("d")
        if op == OP_HEARTBEAT:
            self.counters.heartbeats += 1
            conn.outbox.put_nowait({"op": OP_HEARTBEAT_ACK})
            return True
        if op == OP_IDENTIFY:
            return await self._identify(conn, data or {})
        if op == OP_RESUME:
            return await self._resume(conn, data or {})
        return True  # presence updates and the like: accepted, ignored

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> bool:
        self.counters.identifies += 1
        if data.get("token") != self.token:
            await conn.ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return False
        intents = int(data.get("intents", 0))
        code = self.close_on_identify
        if code is None and intents & PRIVILEGED_INTENTS & ~self.allowed_privileged:
            code = CLOSE_DISALLOWED_INTENTS
        if code is not None:
            await conn.ws.close(code=code, message=b"Disallowed intent(s)." if code == 4014 else b"closed")
            return False
        session = Session(secrets.token_hex(16), intents, connection=conn)
        self.sessions[session.id] = session
        conn.session = session
        w = self.world
        self._send_dispatch(session, "READY", {
            "v": 10,
            "user": {**w.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in w.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": f"{self.base_url}/resume",
            "application": {"id": str(w.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": ["standin"],
            "guild_join_requests": [],
            "user_settings": {},
            "_trace": ['["standin-gateway"]'],
        })  # fmt: skip
        if intents & INTENT_GUILDS:
            for guild in w.guilds.values():
                # Without the privileged members intent Discord sends the bot's own member only.
                me = [guild.members[w.bot.id]]
                self._send_dispatch(session, "GUILD_CREATE", guild.payload(w.users, members=me))
        return True

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> bool:
        if data.get("token") != self.token:
            await conn.ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return False
        session = self.sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        oldest = session.replay[0]["s"] if session is not None and session.replay else None
        if session is None or not session.resumable or (oldest is not None and seq < oldest - 1):
            self.counters.resume_refused += 1
            conn.outbox.put_nowait({"op": OP_INVALID_SESSION, "d": False})
            return True
        if session.connection is not None and session.connection is not conn:
            with contextlib.suppress(Exception):
                await session.connection.ws.close(code=4000)
        self.counters.resumes += 1
        session.connection = conn
        conn.session = session
        for frame in session.replay:
            if frame["s"] > seq:
                self.counters.replayed += 1
                conn.outbox.put_nowait(frame)
        self._send_dispatch(session, "RESUMED", {"_trace": ['["standin-gateway"]']})
        return True

    def _send_dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": OP_DISPATCH, "s": session.seq, "t": event, "d": data}
        session.replay.append(frame)
        self.counters.dispatched += 1
        if session.connection is not None:
            session.connection.outbox.put_nowait(frame)

    async def close(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
