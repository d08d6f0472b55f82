"""One sandbox Discord shared by replica *processes*, over a loopback socket (``polly soak --crash-cycles``).

:class:`SandboxServer` serves a :class:`~polly.sandbox.gateway.SandboxGateway` on ``127.0.0.1``:
every connection is one replica process, with its own
:class:`~polly.sandbox.soak_check.ReplicaGateway` (its own event queue, fed with every sandbox
event while it is connected, and its own count of calls inside retry-after windows it was given).
:class:`RemoteGateway` is the replica's side: a :class:`~polly.engine.gateway.Gateway` whose REST
calls are requests over the socket and whose events arrive on it.

Frames are a 4-byte big-endian length and a pickled tuple. Pickle is safe here only because both
ends are the soak's own processes on loopback; nothing else may connect (the server binds to
127.0.0.1 and the soak passes its port to the replicas it starts). Errors travel as (class name,
message, retry-after) and are raised again as polly's own errors.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from polly.engine.gateway import (
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    FetchedMessage,
    KnownBotReadiness,
    PostedMessage,
    ReactionEventQueue,
    ReactionUser,
    ShedReportingEvents,
)
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError, ServerError
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.soak_check import ReplicaGateway

_HEADER = struct.Struct(">I")
_MAX_FRAME = 16 * 1024 * 1024
_ERRORS: dict[str, type[GatewayError]] = {
    c.__name__: c for c in (GatewayError, NotFoundError, ForbiddenError, RateLimitedError, ServerError)
}
REST_METHODS = frozenset({
    "post_poll_message", "edit_message", "add_reaction", "clear_reactions", "remove_reaction",
    "fetch_message", "list_reaction_users", "send_message", "send_dm",
})  # fmt: skip


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > _MAX_FRAME:
        msg = f"frame of {size} bytes; at most {_MAX_FRAME} allowed"
        raise GatewayError(msg)
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - the soak's own processes, loopback only


def write_frame(writer: asyncio.StreamWriter, value: object) -> None:
    data = pickle.dumps(value)
    writer.write(_HEADER.pack(len(data)) + data)


class SandboxServer:
    """Serves ``sandbox`` to replica processes; ``on_report`` receives their notes (transitions, stats)."""

    def __init__(
        self, sandbox: SandboxGateway, *, max_events: int, on_report: Callable[[str, Any], None]
    ) -> None:
        self._sb = sandbox
        self._max_events = max_events
        self._on_report = on_report
        self._replicas: list[ReplicaGateway] = []
        self._server: asyncio.Server | None = None
        self.past_violations = 0
        self.connections = 0

    @property
    def window_violations(self) -> int:
        """Calls made inside a retry-after window the calling replica had been given, in all."""
        return self.past_violations + sum(r.window_violations for r in self._replicas)

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def fan_out(self) -> None:
        """Copy every sandbox event to each connected replica (the owner runs and cancels this)."""
        await ReplicaGateway.fan_out(self._sb, self._replicas)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replica = ReplicaGateway(self._sb, self._max_events)
        self._replicas.append(replica)
        self.connections += 1
        lock = asyncio.Lock()

        async def send(value: object) -> None:
            async with lock:
                write_frame(writer, value)
                await writer.drain()

        async def pump() -> None:
            while True:
                await send(("ev", await replica.next_reaction_event()))

        async def requests() -> None:
            while True:
                rid, op, args, kwargs, acked = await read_frame(reader)
                if op == "report":
                    self._on_report(args[0], args[1])
                    continue
                if op not in REST_METHODS:
                    await send(("err", rid, ("GatewayError", f"unknown operation {op!r}", 0.0)))
                    continue
                replica.context = (rid, acked)
                try:
                    result = await getattr(replica, op)(*args, **kwargs)
                except GatewayError as err:
                    retry = err.retry_after_seconds if isinstance(err, RateLimitedError) else 0.0
                    await send(("err", rid, (type(err).__name__, str(err), retry)))
                except ValueError as err:
                    await send(("err", rid, ("GatewayError", str(err), 0.0)))
                else:
                    await send(("ok", rid, result))
                finally:
                    replica.context = None

        try:
            await asyncio.gather(pump(), requests())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the replica died or stopped: its events stop with it, as with Discord
        finally:
            self._replicas.remove(replica)
            self.past_violations += replica.window_violations
            writer.close()


class RemoteGateway(KnownBotReadiness, ShedReportingEvents):
    """A replica's gateway on a :class:`SandboxServer` at ``127.0.0.1:port``."""

    def __init__(self, port: int, *, bot_user_id: int, max_events: int = 50_000) -> None:
        self._port = port
        self._bot = bot_user_id
        self._events = ReactionEventQueue(max_events)
        self._ids = itertools.count(1)
        self._acked = 0  # the highest request number whose answer has been read
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._ready.set()
        try:
            while True:
                kind, *rest = await read_frame(reader)
                if kind == "ev":
                    self._events.offer(rest[0])
                    continue
                future = self._waiting.pop(rest[0], None)
                if future is None or future.done():
                    continue
                if kind == "ok":
                    future.set_result(rest[1])
                else:
                    name, text, retry = rest[1]
                    cls = _ERRORS.get(name, GatewayError)
                    future.set_exception(
                        RateLimitedError(text, retry) if cls is RateLimitedError else cls(text)
                    )
        finally:
            self._ready.clear()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ServerError("sandbox connection closed"))
            self._waiting.clear()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def report(self, kind: str, value: object) -> None:
        """Send a note to the soak (no answer)."""
        if self._writer is not None and self._ready.is_set():
            write_frame(self._writer, (0, "report", (kind, value), {}, self._acked))

    async def _request(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if self._writer is None or not self._ready.is_set():
            msg = f"{op}: not connected to the sandbox"
            raise ServerError(msg)
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        write_frame(self._writer, (rid, op, args, kwargs, self._acked))
        await self._writer.drain()
        try:
            return await future
        finally:
            # Known once the caller has it (a 429 reaches the rate gate with no await in between).
            self._acked = max(self._acked, rid)

    # The REST operations, each one request (see :class:`~polly.engine.gateway.Gateway`).

    async def post_poll_message(
        self, channel_id: int, *, embed: Embed, emojis: Sequence[str], content: str | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS,
    ) -> PostedMessage:  # fmt: skip
        return cast("PostedMessage", await self._request(
            "post_poll_message", channel_id, embed=embed, emojis=list(emojis), content=content,
            allowed_mentions=allowed_mentions,
        ))  # fmt: skip

    async def edit_message(
        self, channel_id: int, message_id: int, *, embed: Embed | None = None, content: str | None = None
    ) -> None:
        await self._request("edit_message", channel_id, message_id, embed=embed, content=content)

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._request("add_reaction", channel_id, message_id, emoji)

    async def clear_reactions(self, channel_id: int, message_id: int) -> None:
        await self._request("clear_reactions", channel_id, message_id)

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
        await self._request("remove_reaction", channel_id, message_id, emoji, user_id)

    async def fetch_message(self, channel_id: int, message_id: int) -> FetchedMessage:
        return cast("FetchedMessage", await self._request("fetch_message", channel_id, message_id))

    async def list_reaction_users(
        self, channel_id: int, message_id: int, emoji: str, *, after: int = 0, limit: int = 100
    ) -> tuple[ReactionUser, ...]:
        return cast("tuple[ReactionUser, ...]", await self._request(
            "list_reaction_users", channel_id, message_id, emoji, after=after, limit=limit
        ))  # fmt: skip

    async def send_message(
        self, channel_id: int, *, content: str | None = None, embed: Embed | None = None,
        allowed_mentions: AllowedMentions = NO_MENTIONS, attachment: Path | None = None,
    ) -> int:  # fmt: skip
        return int(await self._request(
            "send_message", channel_id, content=content, embed=embed, allowed_mentions=allowed_mentions,
            attachment=attachment,
        ))  # fmt: skip

    async def send_dm(self, user_id: int, *, content: str | None = None, embed: Embed | None = None) -> int:
        return int(await self._request("send_dm", user_id, content=content, embed=embed))
