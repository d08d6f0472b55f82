"""What an operator sees when ``polly run`` cannot start against Discord: final refusals exit at
once with one line naming the cause; an unreachable Discord is waited for, said once; a signal
stops start-up at any moment."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from tests.discord_standin import DiscordStandin
from tests.e2e.polly_process import PollyProcess, Rows, eventually, polly_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _one_error_line(output: str) -> str:
    for bad in ("Traceback", "Unclosed client session", "PyNaCl", "not ready after"):
        assert bad not in output, f"{bad!r} in polly's output:\n{output}"
    errors = [line for line in output.splitlines() if line.startswith("polly: ")]
    assert len(errors) == 1, output
    return errors[0]


async def _run_until_exit(env: dict[str, str], within: float = 20.0) -> tuple[int, str, float]:
    started = time.monotonic()
    polly = await PollyProcess.start(env)
    try:
        rc = await polly.wait(within)
    finally:
        await polly.stop()
    return rc, polly.output, time.monotonic() - started


async def test_a_rejected_token_exits_at_once_naming_discord_token(sqlite_url: str) -> None:
    async with DiscordStandin() as discord:
        env = polly_env(discord, sqlite_url, DISCORD_TOKEN="not-the-bot-token")
        rc, output, seconds = await _run_until_exit(env)
    assert rc == 1, output
    line = _one_error_line(output)
    assert "DISCORD_TOKEN" in line
    assert "HTTP 401" in line
    assert "not-the-bot-token" not in output
    assert seconds < 15, seconds
    assert len(discord.rest.log.matching("GET", "/users/@me")) == 1  # not retried


async def test_gateway_close_code_4004_exits_naming_discord_token(sqlite_url: str) -> None:
    async with DiscordStandin() as discord:
        discord.gateway.token = "a-different-token"  # REST accepts the token, the gateway does not
        env = polly_env(discord, sqlite_url, POLLY_DISCORD__GATEWAY_URL=discord.gateway_url)
        rc, output, seconds = await _run_until_exit(env)
    assert rc == 1, output
    line = _one_error_line(output)
    assert "DISCORD_TOKEN" in line
    assert "4004" in line
    assert discord.gateway.counters.identifies == 1
    assert not discord.rest.log.matching("GET", "/gateway/bot")  # gateway_url given: not asked
    assert seconds < 15, seconds


async def test_close_code_4014_exits_naming_the_intents(sqlite_url: str) -> None:
    async with DiscordStandin() as discord:
        discord.gateway.close_on_identify = 4014
        rc, output, _ = await _run_until_exit(polly_env(discord, sqlite_url))
    assert rc == 1, output
    line = _one_error_line(output)
    assert "4014" in line
    assert "guild_reactions" in line
    assert "Privileged Gateway Intents" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_during_start_up_stops_at_once(sqlite_url: str) -> None:
    port = _free_port()  # nothing listens: Discord is unreachable
    env = polly_env(
        None, sqlite_url, DISCORD_TOKEN="t", POLLY_DISCORD__API_BASE=f"http://127.0.0.1:{port}/api/v10"
    )
    polly = await PollyProcess.start(env)
    try:
        await polly.wait_for_line("Discord unreachable since", within=20)
        await asyncio.sleep(2)
        sent = time.monotonic()
        polly.signal(signal.SIGTERM)
        rc = await polly.wait(15)
        took = time.monotonic() - sent
    finally:
        await polly.stop()
    assert rc == 0, polly.output
    assert took < 5, took
    assert "stopped during start-up" in polly.output
    assert polly.output.count("Discord unreachable since") == 1
    _ = [line for line in polly.output.splitlines() if "Traceback" in line] == [] or pytest.fail(polly.output)


async def test_an_unreachable_discord_is_waited_for_and_said_once(sqlite_url: str) -> None:
    port = _free_port()
    rows = Rows(sqlite_url)
    discord = DiscordStandin(port=port)
    poll_id = rows.add_poll(discord)
    env = polly_env(discord, sqlite_url)  # api_base on the port nobody listens on yet
    polly = await PollyProcess.start(env)
    try:
        await polly.wait_for_line("Discord unreachable since", within=20)
        await polly.wait_for_line(r"gateway (down|connecting) since", within=10)
        await asyncio.sleep(3)
        await discord.start()
        await polly.wait_for_line("Discord reachable again", within=40)
        await eventually(
            lambda: rows.message_id(poll_id) is not None, "the poll posted", context=lambda: polly.output
        )
        await polly.wait_for_line(r"gateway connected \(latency", within=10)
        polly.signal(signal.SIGINT)
        assert await polly.wait(15) == 0, polly.output
    finally:
        await polly.stop()
        await discord.close()
        rows.close()
    assert polly.output.count("Discord unreachable since") == 1
    assert polly.output.count("Discord reachable again") == 1
    assert "Traceback" not in polly.output
    assert "Unclosed client session" not in polly.output
