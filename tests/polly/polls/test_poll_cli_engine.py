"""End to end: ``polly poll`` changes the database while the engine runs in the sandbox against it.

The engine runs in this test's event loop (a task the test owns, stopped by an Event) with a
sandbox gateway the test holds, so the sandbox's ground truth shows what reached "Discord".
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from polly.cli import main
from polly.config import load_settings
from polly.db.schema import create_schema
from polly.engine import runner
from polly.engine.embeds import COLOUR_ACTIVE, COLOUR_CLOSED
from polly.engine.gateway import GatewayParts
from polly.sandbox.gateway import SANDBOX_BOT_ID, SandboxGateway
from polly.sandbox.truth import MessageTruth
from tests.polly.polls.conftest import IDS

TICK_SECONDS = 1.0
#: "Within one tick": the next tick after the insert posts it; the slack covers the database work.
WITHIN_ONE_TICK_SECONDS = TICK_SECONDS + 0.5
#: How long any wait may take before the test fails (generous for a loaded 2-core machine).
DEADLINE_SECONDS = 5.0


async def cli(url: str, *args: str) -> Result:
    """Run ``polly poll ...`` off the event loop, as a separate process would."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["poll", *args], env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return result


async def until(check: Callable[[], Any], what: str) -> float:
    """Seconds until ``check()`` is truthy; fails after :data:`DEADLINE_SECONDS`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE_SECONDS:
            pytest.fail(f"not within {DEADLINE_SECONDS} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def show(url: str, poll_id: int) -> dict[str, Any]:
    import json

    data = json.loads((await cli(url, "show", str(poll_id), "--json")).stdout)
    assert isinstance(data, dict)
    return data


async def test_a_created_poll_opens_in_the_sandbox_and_close_and_reopen_reach_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    create_schema(sqlite_url)
    settings = load_settings(
        environ={
            "DATABASE_URL": sqlite_url,
            "POLLY_ENGINE__TICK_SECONDS": str(TICK_SECONDS),
            "POLLY_ENGINE__EMBED_UPDATE_INTERVAL_SECONDS": str(TICK_SECONDS),
        }
    )
    settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"enabled": False})})
    gateway = SandboxGateway(rng=random.Random(9))
    monkeypatch.setattr(
        runner, "build_gateway", lambda _settings, _options, _on_fatal=None: GatewayParts(gateway)
    )
    caplog.set_level(logging.INFO, logger="polly")
    stop = asyncio.Event()
    # One simulated voter acting about once an hour: the sandbox's reactions stay the engine's own.
    options = runner.RunOptions(sandbox=True, seed_polls=0, voters=1, events_per_second=0.0003)

    async with asyncio.TaskGroup() as tasks:
        engine = tasks.create_task(runner.run(settings, options, stop=stop))
        try:
            await until(lambda: "polly is running" in caplog.text, "the engine started")
            asked = time.monotonic()
            created = await cli(sqlite_url, "create", "--name", "Lunch", "--question", "Where to eat?",
                                "--option", "Pizza", "--option", "Tacos", "--emoji", "🍕", "--emoji", "🌮",
                                "--server-id", IDS["server_id"], "--channel-id", IDS["channel_id"],
                                "--open-immediately")  # fmt: skip
            poll_id = int(re.findall(r"created poll (\d+)", created.output)[0])
            assert (await show(sqlite_url, poll_id))["status"] == "scheduled"  # the CLI never opens it

            opened = f"poll {poll_id} opened as message "
            await until(lambda: opened in caplog.text, "the poll was posted")
            latency = time.monotonic() - asked
            message_id = int(caplog.text.split(opened, 1)[1].split()[0])
            row = await show(sqlite_url, poll_id)
            assert (row["status"], row["message_id"]) == ("active", str(message_id))
            truth: MessageTruth = gateway.truth(message_id)
            assert truth.channel_id == int(IDS["channel_id"])
            assert truth.embed is not None
            assert truth.embed.title == "📊 Lunch"
            assert truth.embed.colour == COLOUR_ACTIVE
            assert {e for e, users in truth.reactions.items() if SANDBOX_BOT_ID in users} == {"🍕", "🌮"}

            await cli(sqlite_url, "close", str(poll_id))

            def finalized() -> bool:
                t = gateway.truth(message_id)
                return t.embed is not None and t.embed.colour == COLOUR_CLOSED and not t.reactions

            await until(finalized, "the closed poll got its final embed and lost its reactions")
            assert (await show(sqlite_url, poll_id))["status"] == "closed"

            await cli(sqlite_url, "reopen", str(poll_id))

            def reopened() -> bool:
                t = gateway.truth(message_id)
                bot = {e for e, users in t.reactions.items() if SANDBOX_BOT_ID in users}
                return bot == {"🍕", "🌮"} and t.embed is not None and t.embed.colour == COLOUR_ACTIVE

            await until(reopened, "the reopened poll got its reactions and an open embed back")
            assert (await show(sqlite_url, poll_id))["status"] == "active"
        finally:
            stop.set()
    assert engine.exception() is None
    print(f"posted {latency:.2f} s after `polly poll create` (tick {TICK_SECONDS} s)")
    assert latency <= WITHIN_ONE_TICK_SECONDS
