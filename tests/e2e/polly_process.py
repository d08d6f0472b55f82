"""``polly`` as a subprocess against a :class:`~tests.discord_standin.DiscordStandin`, and the
database rows the end-to-end tests assert on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import Engine

from polly.db.models import Poll, Vote
from polly.db.schema import create_schema
from tests.discord_standin import DiscordStandin

#: Short ticks and intervals, so a scenario takes seconds (the CI budget).
FAST_ENGINE = {
    "POLLY_ENGINE__TICK_SECONDS": "0.3",
    "POLLY_ENGINE__EMBED_UPDATE_INTERVAL_SECONDS": "1.0",
    "POLLY_ENGINE__RECONCILE_INTERVAL_SECONDS": "1",
    "POLLY_ENGINE__STATUS_INTERVAL_SECONDS": "1",
    "POLLY_ENGINE__SHUTDOWN_TIMEOUT_SECONDS": "5",
    "POLLY_REDIS__ENABLED": "false",
    "POLLY_GENERAL__LOG_LEVEL": "INFO",
}


def polly_env(standin: DiscordStandin | None, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLY_", "DISCORD_", "DATABASE_URL"))}
    env.update(FAST_ENGINE)
    env["DATABASE_URL"] = db_url
    if standin is not None:
        env["DISCORD_TOKEN"] = standin.token
        env["POLLY_DISCORD__API_BASE"] = standin.api_base
    env.update(extra)
    return env


class PollyProcess:
    """One ``polly`` subprocess; its combined output is collected line by line."""

    def __init__(
        self, proc: asyncio.subprocess.Process, reader: asyncio.Task[None], lines: list[str]
    ) -> None:
        self.proc = proc
        self._reader = reader
        self.lines = lines

    @classmethod
    async def start(cls, env: Mapping[str, str], *args: str) -> PollyProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polly.cli", *(args or ("run",)),
            env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        lines: list[str] = []

        async def read() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                lines.append(line.decode(errors="replace").rstrip("\n"))

        return cls(proc, asyncio.get_running_loop().create_task(read()), lines)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, pattern: str, within: float = 30.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines:
                if regex.search(line):
                    return line
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        msg = f"no line matching {pattern!r} within {within} s; output:\n{self.output}"
        raise AssertionError(msg)

    def signal(self, sig: signal.Signals = signal.SIGINT) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float = 20.0) -> int:
        try:
            rc = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            msg = f"polly did not exit within {within} s; output:\n{self.output}"
            raise AssertionError(msg) from None
        await self._reader
        return rc

    async def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def polly_cli(env: Mapping[str, str], *args: str, within: float = 30.0) -> tuple[int, str]:
    process = await PollyProcess.start(env, *args)
    rc = await process.wait(within)
    return rc, process.output


class Rows:
    """The test's view of the database polly runs on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        create_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add_poll(self, standin: DiscordStandin, **values: Any) -> int:
        now = datetime.now(UTC).replace(tzinfo=None)
        options = values.pop("options", ["Red", "Green", "Blue"])
        row: dict[str, Any] = {
            "name": "Colours", "question": "Which colour?", "options_json": json.dumps(options),
            "server_id": str(standin.guild.id), "channel_id": str(standin.channel.id), "creator_id": "1",
            "status": "scheduled", "timezone": "UTC", "open_time": now - timedelta(seconds=1),
            "close_time": now + timedelta(hours=1), "anonymous": False, "multiple_choice": False, **values,
        }  # fmt: skip
        if "emojis" in row:
            row["emojis_json"] = json.dumps(row.pop("emojis"))
        with self.engine.begin() as conn:
            result = conn.execute(insert(Poll).values(**row))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def message_id(self, poll_id: int) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(Poll.message_id).where(Poll.id == poll_id)).scalar_one()
        return int(value) if value and str(value).isdigit() else None

    def status(self, poll_id: int) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(Poll.status).where(Poll.id == poll_id)).scalar_one())

    def votes(self, poll_id: int) -> dict[int, set[int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Vote.user_id, Vote.option_index).where(Vote.poll_id == poll_id)).all()
        out: dict[int, set[int]] = {}
        for user, option in rows:
            out.setdefault(int(user), set()).add(int(option))
        return out

    def vote_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM votes")).scalar_one())


async def eventually(
    check: Callable[[], bool], what: str, within: float = 20.0, *, context: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}\n{context()}")
