"""One loopback Discord: REST under ``/api/v10`` and the gateway at ``/gateway``, on one port.

Tests build the world (a guild, channels, roles, members), point a client at :attr:`api_base` and
:attr:`gateway_url`, act as users (:meth:`react`, :meth:`unreact`), inject failures (:meth:`fail`,
:meth:`rate_limit`, the gateway's ``drop``/``request_reconnect``/``invalidate``) and read what
happened (``world.messages``, ``rest.log``, ``gateway.counters``). New Discord surfaces (OAuth2,
more guild routes) are new modules installing their routes on the same application.
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.discord_standin.gateway import GatewayServer
from tests.discord_standin.limits import Fault
from tests.discord_standin.model import Channel, Guild, Message, Role, User, World
from tests.discord_standin.oauth import OAuthApi
from tests.discord_standin.rest import API_PREFIX, RestApi

DEFAULT_TOKEN = "standin.bot-token.for-tests"
_CUSTOM = re.compile(r"^<a?:(?P<name>\w+):(?P<id>\d+)>$")


def reaction_key(emoji: str) -> str:
    """``"👍"`` stays; ``"<:name:id>"`` / ``"<a:name:id>"`` become ``"name:id"`` (Discord's route form)."""
    m = _CUSTOM.match(emoji)
    return f"{m['name']}:{m['id']}" if m else emoji


class DiscordStandin:
    """The loopback Discord. ``port=0`` picks a free port; ``heartbeat_ms`` is HELLO's interval."""

    def __init__(self, *, token: str = DEFAULT_TOKEN, port: int = 0, heartbeat_ms: int = 41_250) -> None:
        self.world = World()
        self.gateway = GatewayServer(self.world, token, heartbeat_ms=heartbeat_ms)
        self.rest = RestApi(self.world, token, self.gateway.dispatch, lambda: self.gateway.url)
        self.oauth = OAuthApi(self.world)
        self.token = token
        self.port = port
        self._runner: web.AppRunner | None = None
        self.guild: Guild = self.world.add_guild("polly test guild")
        self.channel: Channel = self.world.add_channel(self.guild, "polls")

    async def __aenter__(self) -> DiscordStandin:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        self.rest.install(app)
        self.oauth.install(app)
        self.gateway.install(app)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.gateway.base_url = f"ws://127.0.0.1:{self.port}"

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    # --- the world ------------------------------------------------------------------------------

    def add_member(self, name: str, *, bot: bool = False, user_id: int | None = None) -> User:
        return self.world.add_member(self.guild, name, bot=bot, user_id=user_id)

    def add_channel(self, name: str, *, channel_id: int | None = None) -> Channel:
        return self.world.add_channel(self.guild, name, channel_id=channel_id)

    def add_role(self, name: str) -> Role:
        return self.world.add_role(self.guild, name)

    def add_emoji(self, name: str, *, animated: bool = False, emoji_id: int | None = None) -> str:
        """A custom guild emoji; returns its ``<:name:id>`` form."""
        emoji_id = emoji_id or self.world.ids.next()
        self.guild.emojis[emoji_id] = (name, animated)
        return f"<{'a' if animated else ''}:{name}:{emoji_id}>"

    def messages_in(self, channel_id: int | None = None) -> list[Message]:
        cid = channel_id or self.channel.id
        return sorted((m for m in self.world.messages.values() if m.channel_id == cid), key=lambda m: m.id)

    # --- users acting -----------------------------------------------------------------------------

    def react(self, user: User | int, message_id: int, emoji: str) -> bool:
        """A user adds a reaction (dispatching MESSAGE_REACTION_ADD); ``False`` if it was there.
        An unknown user id joins the guild first."""
        uid = user if isinstance(user, int) else user.id
        if uid not in self.world.users:
            self.add_member(f"user{uid}", user_id=uid)
        return self.rest.world_react(self.world.messages[message_id], uid, reaction_key(emoji))

    def unreact(self, user: User | int, message_id: int, emoji: str) -> bool:
        uid = user if isinstance(user, int) else user.id
        return self.rest.world_unreact(self.world.messages[message_id], uid, reaction_key(emoji))

    def reactors(self, message_id: int, emoji: str) -> list[int]:
        return list(self.world.messages[message_id].reactions.get(reaction_key(emoji), []))

    # --- failures -----------------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        match: str,
        *,
        times: int = 1,
        body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose ``"METHOD /path"`` contains ``match`` with ``status``."""
        self.rest.faults.append(Fault(status, body, headers or {}, match, times))

    def rate_limit(
        self,
        match: str,
        retry_after: float,
        *,
        times: int = 1,
        via: bool = True,
        scope: str = "shared",
        is_global: bool = False,
    ) -> None:
        """Answer Discord's 429 (body, ``Retry-After``, scope; ``via=False``: as Cloudflare's edge)."""
        self.rest.faults.append(
            Fault(
                429,
                None,
                {},
                match,
                times,
                retry_after=retry_after,
                via=via,
                scope=scope,
                is_global=is_global,
            )
        )
