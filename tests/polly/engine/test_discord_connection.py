"""The discord.py adapter's gateway connection, in process, against the loopback Discord: where it
connects, its health and stats, resume and re-identify, and the refusals that are final."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import discord.gateway
import discord.http
import discord.voice_client
import pytest
from pydantic import SecretStr

from polly.clock import Backoff, FakeClock
from polly.engine.discord_adapter import DiscordGateway, DiscordRefusedError
from polly.engine.discord_connection import GATEWAY_BACKOFF
from polly.engine.discord_health import GatewayHealth
from polly.stats import GatewayStats, StatsRegistry
from tests.discord_standin import DiscordStandin


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordStandin]:
    # Both URLs are process-wide in discord.py: restored after each test.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    )
    monkeypatch.setattr(discord.voice_client.VoiceClient, "warn_nacl", True)
    async with DiscordStandin(heartbeat_ms=500) as server:
        yield server


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``check`` (state another task changes) every 20 ms for at most ``within`` seconds."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the state lives in discord.py, no event to wait on
            await asyncio.sleep(0.02)


async def test_the_gateway_url_comes_from_gateway_bot_and_health_is_published(
    standin: DiscordStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    registry = StatsRegistry()
    gateway = DiscordGateway(SecretStr(standin.token), api_base=standin.api_base, registry=registry)
    assert discord.voice_client.VoiceClient.warn_nacl is False
    assert [s.state for s in registry.collect("gateway") if isinstance(s, GatewayStats)] == ["connecting"]
    runner = asyncio.ensure_future(gateway.start())
    try:
        await asyncio.wait_for(gateway.wait_until_ready(), 10)
        assert standin.rest.log.matching("GET", "/gateway/bot")
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == standin.gateway_url
        await _until(lambda: gateway.stats().latency_seconds is not None)
        stats = registry.collect("gateway")[0]
        assert isinstance(stats, GatewayStats)
        assert (stats.state, stats.connected, stats.identifies, stats.reconnects) == ("connected", True, 1, 0)

        await standin.gateway.drop()  # a network cut: discord.py resumes
        await _until(lambda: gateway.stats().resumes == 1)
        assert standin.gateway.counters.resumes == 1
        standin.gateway.invalidate(resumable=False)  # a new session
        await _until(lambda: gateway.stats().identifies == 2)
        s = gateway.stats()
        assert (s.state, s.resumes, s.reconnects, s.outages) == ("connected", 1, 2, 0)
        assert "gateway connected (latency" in gateway.health.status()
    finally:
        await gateway.close()
        await runner
    assert registry.collect("gateway") == []  # unregistered on close
    assert "PyNaCl" not in caplog.text


async def test_a_rejected_token_is_final_and_leaves_no_session(standin: DiscordStandin) -> None:
    gateway = DiscordGateway(SecretStr("wrong"), api_base=standin.api_base, registry=None)
    with pytest.raises(DiscordRefusedError, match="DISCORD_TOKEN") as info:
        await gateway.start()
    assert "wrong" not in str(info.value)
    session = gateway._client.http._HTTPClient__session  # type: ignore[attr-defined]
    assert session.closed
    assert len(standin.rest.log.matching("GET", "/users/@me")) == 1
    await gateway.close()


@pytest.mark.parametrize(
    ("code", "words"),
    [(4004, "DISCORD_TOKEN"), (4014, "Privileged Gateway Intents"), (4013, "invalid intents")],
)
async def test_final_close_codes_go_to_on_fatal(standin: DiscordStandin, code: int, words: str) -> None:
    standin.gateway.close_on_identify = code
    heard: list[DiscordRefusedError] = []
    gateway = DiscordGateway(
        SecretStr(standin.token), api_base=standin.api_base, gateway_url=standin.gateway_url,
        on_fatal=heard.append, registry=None,
    )  # fmt: skip
    runner = asyncio.ensure_future(gateway.start())
    await _until(lambda: bool(heard))
    assert words in str(heard[0])
    assert str(code) in str(heard[0])
    assert not runner.done()  # it waits to be closed, without retrying
    await asyncio.sleep(0.3)
    assert standin.gateway.counters.identifies == 1
    await gateway.close()
    await asyncio.wait_for(runner, 5)


async def test_an_unreachable_gateway_is_one_outage_with_backoff(
    standin: DiscordStandin, caplog: pytest.LogCaptureFixture
) -> None:
    """Attempts wait the gateway's backoff on the injected clock (1, 2, 4 s ...), never real time."""
    caplog.set_level(logging.INFO)
    standin.gateway.accepting = False
    clock = FakeClock()
    gateway = DiscordGateway(SecretStr(standin.token), api_base=standin.api_base, registry=None, clock=clock)
    runner = asyncio.ensure_future(gateway.start())
    try:
        await _until(lambda: len(clock.sleeps) >= 3)
        assert gateway.stats().state == "down"
        assert gateway.health.status().startswith("gateway down since 12:00:00 UTC")  # the fake's wall time
        standin.gateway.accepting = True
        await asyncio.wait_for(gateway.wait_until_ready(), 20)
        s = gateway.stats()
        assert (s.state, s.outages, s.identifies) == ("connected", 1, 1)
    finally:
        await gateway.close()
        await runner
    waits = list(clock.sleeps)
    assert waits == [GATEWAY_BACKOFF.delay(n) for n in range(1, len(waits) + 1)]
    assert waits[:3] == [1.0, 2.0, 4.0]
    assert caplog.text.count("Discord unreachable since") == 1
    assert caplog.text.count("Discord reachable again") == 1
    assert "Attempting a reconnect" not in caplog.text
    assert "AttributeError" not in caplog.text


def test_the_gateway_backoff_doubles_from_one_second_to_a_minute() -> None:
    assert Backoff(initial=1.0, multiplier=2.0, cap=60.0, jitter=0.0) == GATEWAY_BACKOFF


def test_health_says_each_outage_once_and_summarises_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = [1000.0]
    health = GatewayHealth(clock=lambda: now[0], summary_every_seconds=60)
    health.connected(resumed=False)
    health.disconnected()
    for _ in range(30):  # 30 failed attempts over 150 s
        now[0] += 5
        health.attempt_failed("ClientConnectorError")
    health.connected(resumed=True)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("Discord unreachable since" in m for m in lines) == 1
    assert sum("still unreachable" in m for m in lines) == 2  # at most one per 60 s
    assert sum("reachable again after 150.0 s (30 failed attempt(s))" in m for m in lines) == 1
    s = health.snapshot()
    assert (s.state, s.outages, s.reconnects, s.resumes, s.identifies) == ("connected", 1, 1, 1, 1)
