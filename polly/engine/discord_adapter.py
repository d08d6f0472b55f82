"""The :class:`~polly.engine.gateway.Gateway` on discord.py.

The client asks only for the ``guilds`` and ``guild_reactions`` intents (no message content, no
members), keeps no message cache (``max_messages=None``), no member cache and no guild chunking:
the engine reads what it needs through REST and raw events, so nothing here grows with traffic.
Votes arrive through ``on_raw_reaction_add``/``on_raw_reaction_remove``, which Discord sends for
every message, cached or not, including messages posted before a restart.

Rate limits: discord.py keeps per-bucket limits and waits out a 429 itself when the wait is at
most ``max_ratelimit_wait_seconds`` (≥ 30, discord.py's floor); a longer wait, or a 429 from
Discord's edge without rate-limit data, becomes :class:`~polly.errors.RateLimitedError` with the
wait. discord.py retries 500/502/504/524 up to five times (1 + 3 + 5 + 7 + 9 s) before giving up;
every operation is also bounded by ``request_timeout_seconds``.

``api_base`` points discord.py's REST client elsewhere (tests, proxies) by setting
``discord.http.Route.BASE``, and ``gateway_url`` its gateway (or ``GET {api_base}/gateway/bot``
when only ``api_base`` is set); both are process-wide: one Discord per process. The connection's
health (state, latency, reconnects) is :attr:`DiscordGateway.health`, published to the stats
registry as a :class:`~polly.stats.GatewayStats` under kind ``"gateway"``. The REST operations are
:class:`~polly.engine.discord_rest.DiscordRest`'s; this module is the connection and its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC

import aiohttp
import discord
import discord.http
from pydantic import SecretStr

from polly.clock import SYSTEM_CLOCK, Backoff, Clock
from polly.engine.discord_connection import (
    GATEWAY_BACKOFF,
    DiscordRefusedError,
    PollyClient,
    refusal,
    set_gateway_url,
    silence_voice_warnings,
)
from polly.engine.discord_convert import reaction_route_emoji, to_reaction_event
from polly.engine.discord_health import (
    DISCORD_CLIENT_LOGGER,
    GatewayHealth,
    ReconnectLogFilter,
    describe_failure,
)
from polly.engine.discord_rest import DiscordRest
from polly.engine.gateway import ReactionEventQueue, ShedReportingEvents
from polly.errors import GatewayError, RateLimitedError, ServerError
from polly.stats import GatewayStats, StatsRegistry
from polly.stats import registry as default_registry

__all__ = ["DiscordGateway", "DiscordRefusedError", "reaction_route_emoji", "to_reaction_event"]

logger = logging.getLogger(__name__)

MIN_RATELIMIT_WAIT_SECONDS = 30.0  # discord.py raises max_ratelimit_timeout below this to 30


class DiscordGateway(DiscordRest, ShedReportingEvents):
    """The Discord gateway on discord.py. Construct it, ``await start()`` in a supervised task.

    ``max_events`` bounds the reaction event queue; ``max_connections`` the HTTP connection pool;
    ``request_timeout_seconds`` each REST operation (including discord.py's own retries and
    rate-limit waits); ``max_ratelimit_wait_seconds`` (≥ 30) the longest 429 wait absorbed silently.
    ``gateway_url`` overrides where the gateway connects (see :mod:`.discord_connection`).
    ``backoff`` is the wait between attempts while Discord is unreachable, slept on ``clock`` (which
    also times the health's outages).
    ``on_fatal`` (also settable later): called once with the :class:`DiscordRefusedError` when
    Discord refuses polly for good (the caller stops the process); without it :meth:`start` raises
    that error.
    """

    def __init__(
        self,
        token: SecretStr,
        *,
        api_base: str | None = None,
        gateway_url: str | None = None,
        max_events: int = 10_000,
        max_connections: int = 16,
        request_timeout_seconds: float = 60.0,
        max_ratelimit_wait_seconds: float = MIN_RATELIMIT_WAIT_SECONDS,
        on_fatal: Callable[[DiscordRefusedError], None] | None = None,
        registry: StatsRegistry | None = default_registry,
        backoff: Backoff = GATEWAY_BACKOFF,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_ratelimit_wait_seconds < MIN_RATELIMIT_WAIT_SECONDS:
            msg = (
                "max_ratelimit_wait_seconds must be at least 30 (discord.py's floor), "
                f"got {max_ratelimit_wait_seconds}"
            )
            raise ValueError(msg)
        if request_timeout_seconds <= 0 or max_connections < 1:
            msg = (
                f"request_timeout_seconds must be > 0 and max_connections >= 1, got "
                f"{request_timeout_seconds} and {max_connections}"
            )
            raise ValueError(msg)
        if api_base is not None:
            discord.http.Route.BASE = api_base.rstrip("/")
        if gateway_url is not None:
            set_gateway_url(gateway_url)
        self._ask_gateway_url = gateway_url is None and api_base is not None
        self._token = token
        self._max_connections = max_connections
        self._request_timeout_seconds = request_timeout_seconds
        self._max_wait = max_ratelimit_wait_seconds
        self.on_fatal = on_fatal
        self._backoff = backoff
        self._clock = clock
        self._events = ReactionEventQueue(max_events)
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        self._intents = intents
        silence_voice_warnings()
        wall = lambda: clock.now().replace(tzinfo=UTC).timestamp()  # noqa: E731 - POSIX seconds for the health
        self.health = GatewayHealth("discord", latency=lambda: self._client.latency, clock=wall)
        self._log_filter = ReconnectLogFilter(self.health)
        logging.getLogger(DISCORD_CLIENT_LOGGER).addFilter(self._log_filter)
        self._unregister = registry.register("gateway", "discord", self.health.snapshot) if registry else None
        self._client = PollyClient(
            self._ready,
            self._offer,
            self.health,
            intents=intents,
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_ratelimit_timeout=max_ratelimit_wait_seconds,
        )

    def __repr__(self) -> str:
        return f"DiscordGateway(base={discord.http.Route.BASE!r}, ready={self.is_ready()})"

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def bot_user_id(self) -> int:
        user = self._client.user
        if user is None:
            msg = "the bot is not logged in yet: start() must log in before bot_user_id is known"
            raise GatewayError(msg)
        return user.id

    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._client.is_closed()

    def stats(self) -> GatewayStats:
        return self.health.snapshot()

    async def login(self) -> None:
        """Log in over REST only (no gateway connection): enough for every REST operation.

        A failed attempt leaves no HTTP session behind. A rejected token (401) raises
        :class:`DiscordRefusedError`; anything else the transient errors of :meth:`_call`.
        """
        if self._client.user is not None:
            return
        self._client.http.connector = aiohttp.TCPConnector(limit=self._max_connections)
        try:
            async with self._call("log in"):
                await self._client.login(self._token.get_secret_value())
        except discord.LoginFailure as err:
            await self._client.http.close()
            refused = refusal(err, self._intents)
            assert refused is not None
            raise refused from None
        except GatewayError:
            await self._client.http.close()
            raise

    async def start(self) -> None:
        """Log in and hold the gateway connection until :meth:`close`.

        While Discord is unreachable, log-in and the first connection are retried with ``backoff``
        (by default 1 s doubling to 60 s), the outage said once (:class:`GatewayHealth`); later drops are
        discord.py's to resume. A final refusal goes to ``on_fatal`` (then this waits for
        :meth:`close`) or is raised.
        """
        try:
            await self._login_until_reachable()
            if self._ask_gateway_url:
                async with self._call("ask for the gateway URL"):
                    _shards, url, _limits = await self._client.http.get_bot_gateway()
                set_gateway_url(url)
            await self._connect_until_closed()
        except DiscordRefusedError as err:
            await self._client.close()
            if self.on_fatal is None:
                raise
            self.on_fatal(err)
            await self._closed.wait()
        finally:
            self._ready.clear()

    async def _login_until_reachable(self) -> None:
        failures = 0
        while True:
            try:
                await self.login()
            except DiscordRefusedError:
                raise
            except (ServerError, RateLimitedError) as err:
                failures += 1
                self.health.attempt_failed(
                    describe_failure(err.__cause__) if err.__cause__ else type(err).__name__
                )
                await self._clock.sleep(self._backoff.delay(failures))
                continue
            return

    async def _connect_until_closed(self) -> None:
        failures = 0
        while not self._client.is_closed():
            try:
                await self._client.connect(reconnect=True)
            except AttributeError:
                # discord.py 2.7 fails this way when its very first connection fails (it reads the
                # sequence of a websocket that never existed): an unreachable gateway, retried here.
                if self._client.ws is not None:
                    raise
            except (
                discord.GatewayNotFound,
                discord.ConnectionClosed,
                discord.PrivilegedIntentsRequired,
            ) as err:
                refused = refusal(err, self._intents)
                if refused is not None:
                    raise refused from None
                self.health.attempt_failed(describe_failure(err))
            else:
                return
            failures += 1
            await self._clock.sleep(self._backoff.delay(failures))

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    async def close(self) -> None:
        self._ready.clear()
        self._closed.set()
        await self._client.close()
        logging.getLogger(DISCORD_CLIENT_LOGGER).removeFilter(self._log_filter)
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    # --- events ------------------------------------------------------------------------------------

    def _offer(self, payload: discord.RawReactionActionEvent) -> None:
        user = self._client.user
        if not self._events.offer(to_reaction_event(payload, user.id if user else None)):
            logger.debug("reaction event queue full (%d): dropped one", self._events.max_events)

    def sessions_started(self) -> int:
        """READYs so far: a new session after the first missed the events sent between them."""
        return self.health.identifies
