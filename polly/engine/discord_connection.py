"""The discord.py client polly runs, and what its gateway connection's failures mean.

Where the gateway is: ``gateway_url`` when set; else, when a REST ``api_base`` is set,
``GET {api_base}/gateway/bot`` says (as discord.py's sharded client asks); else discord.py's own
``wss://gateway.discord.gg/``. discord.py dials ``DiscordWebSocket.DEFAULT_GATEWAY`` (and after an
invalid session goes back to it), so the URL is set there, process-wide, as ``api_base`` is on
``discord.http.Route.BASE``.

Final failures (:class:`DiscordRefusedError`): a token Discord rejects (HTTP 401 on log-in, close
code 4004), a privileged intent the bot is not allowed (4014), and the other close codes discord.py
does not reconnect after (4010 to 4013). Everything else (unreachable, 5xx, a dropped connection)
is transient and retried, on :data:`GATEWAY_BACKOFF`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import discord
import discord.gateway
import discord.voice_client
import yarl

from polly.clock import Backoff
from polly.engine.discord_health import GatewayHealth
from polly.errors import GatewayError

BAD_LOGIN_MESSAGE = (
    "Discord rejected the token ({how}): set DISCORD_TOKEN to the bot's token "
    "(Developer Portal → your application → Bot → Reset Token)"
)
_FINAL_CLOSE_CODES = {
    4010: "invalid shard",
    4011: "sharding required",
    4012: "invalid API version",
    4013: "invalid intents",
}
_PRIVILEGED = ("members", "presences", "message_content")


class DiscordRefusedError(GatewayError):
    """Discord refused polly for a reason retrying cannot fix (the token, the intents): final."""


def silence_voice_warnings() -> None:
    """polly never uses voice: discord.py's "PyNaCl/davey is not installed" warnings say nothing useful."""
    discord.voice_client.VoiceClient.warn_nacl = False
    discord.voice_client.VoiceClient.warn_dave = False


def set_gateway_url(url: str) -> None:
    """Point discord.py's gateway connections at ``url`` (``wss://`` or ``ws://``), process-wide."""
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


def refusal(err: BaseException, intents: discord.Intents) -> DiscordRefusedError | None:
    """The final failure ``err`` stands for, or ``None`` when it is worth retrying."""
    if isinstance(err, discord.LoginFailure):
        return DiscordRefusedError(BAD_LOGIN_MESSAGE.format(how="HTTP 401 on log in"))
    if isinstance(err, discord.PrivilegedIntentsRequired):
        asked = [name for name, on in intents if on]
        privileged = [name for name in asked if name in _PRIVILEGED] or ["none of them privileged"]
        return DiscordRefusedError(
            "Discord refused the gateway intents polly asks for (close code 4014, disallowed intents): "
            f"{', '.join(asked)} ({', '.join(privileged)}); enable them for the bot under Developer "
            "Portal → Bot → Privileged Gateway Intents"
        )
    if isinstance(err, discord.ConnectionClosed):
        if err.code == 4004:
            return DiscordRefusedError(
                BAD_LOGIN_MESSAGE.format(how="gateway close code 4004, authentication failed")
            )
        if err.code in _FINAL_CLOSE_CODES:
            return DiscordRefusedError(
                f"the Discord gateway closed the connection with code {err.code} "
                f"({_FINAL_CLOSE_CODES[err.code]}); discord.py cannot continue after it"
            )
    return None


class PollyClient(discord.Client):
    """discord.Client whose ready, connection and raw reaction hooks call back into the gateway."""

    def __init__(
        self,
        ready: asyncio.Event,
        offer: Callable[[discord.RawReactionActionEvent], None],
        health: GatewayHealth,
        **options: Any,  # discord.Client's own keyword options
    ) -> None:
        super().__init__(**options)
        self._polly_ready = ready
        self._polly_offer = offer
        self._polly_health = health

    async def on_ready(self) -> None:
        self._polly_ready.set()

    async def on_connect(self) -> None:  # READY parsed: a new session
        self._polly_health.connected(resumed=False)

    async def on_resumed(self) -> None:
        self._polly_health.connected(resumed=True)

    async def on_disconnect(self) -> None:
        self._polly_health.disconnected()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self._polly_offer(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self._polly_offer(payload)


#: Waits between attempts to log in or connect while Discord is unreachable: 1 s doubling to 60 s.
GATEWAY_BACKOFF = Backoff(initial=1.0, multiplier=2.0, cap=60.0)
