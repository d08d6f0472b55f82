"""A test harness: an engine on a real database and the sandbox gateway, driven step by step."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from polly.config import SecretUrl, Settings, load_settings
from polly.db.engine import Database
from polly.db.models import Poll, Vote
from polly.db.schema import create_schema
from polly.engine.gateway import Gateway
from polly.engine.service import Engine
from polly.sandbox.gateway import FaultRates, SandboxGateway

CHANNEL = 810_000_000_000_000_001
GUILD = 800_000_000_000_000_001
USER = 700_000_000_000_000_000


class Clock:
    """A naive-UTC clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def monotonic(self) -> float:
        """The same clock as monotonic seconds (for rate limits, failure runs and edit intervals)."""
        return self.now.timestamp()


def settings_for(url: str, **engine: Any) -> Settings:
    base = load_settings(environ={})
    return base.model_copy(
        update={
            "database": base.database.model_copy(update={"url": SecretUrl(url)}),
            "engine": base.engine.model_copy(update=engine),
        }
    )


class Harness:
    """One engine (or several sharing the sandbox) and helpers to drive it without sleeping."""

    def __init__(self, database: Database, sandbox: SandboxGateway, clock: Clock, settings: Settings) -> None:
        self.database = database
        self.sandbox = sandbox
        self.clock = clock
        self.settings = settings
        self.transitions: list[tuple[int, str, str]] = []

    def engine(
        self, gateway: Gateway | None = None, *, replica: str = "r1", database: Database | None = None
    ) -> Engine:
        return Engine(
            self.settings,
            database or self.database,
            gateway or self.sandbox,
            replica=replica,
            clock=self.clock,
            on_transition=lambda p, t, r: self.transitions.append((p, t, r)),
            monotonic=self.clock.monotonic,
        )

    async def add_poll(self, **values: Any) -> int:
        options = values.pop("options", ["Red", "Green", "Blue"])
        row: dict[str, Any] = {
            "name": "Colours",
            "question": "Which colour?",
            "options_json": json.dumps(options),
            "server_id": str(GUILD),
            "channel_id": str(CHANNEL),
            "creator_id": "1",
            "status": "scheduled",
            "timezone": "UTC",
            "open_time": self.clock.now - timedelta(minutes=1),
            "close_time": self.clock.now + timedelta(hours=1),
            "anonymous": False,
            "multiple_choice": False,
            **values,
        }
        if "emojis" in row:
            row["emojis_json"] = json.dumps(row.pop("emojis"))
        async with self.database.async_session_scope() as session:
            poll = Poll(**row)
            session.add(poll)
            await session.flush()
            return int(poll.id)

    async def poll(self, poll_id: int) -> Poll:
        async with self.database.async_session_scope() as session:
            row = await session.get(Poll, poll_id)
            assert row is not None
            session.expunge(row)
            return row

    async def votes(self, poll_id: int) -> dict[int, set[int]]:
        async with self.database.async_session_scope() as session:
            rows = await session.execute(
                select(Vote.user_id, Vote.option_index).where(Vote.poll_id == poll_id)
            )
            out: dict[int, set[int]] = {}
            for user, option in rows:
                out.setdefault(int(user), set()).add(int(option))
            return out

    async def vote_rows(self, poll_id: int) -> int:
        async with self.database.async_session_scope() as session:
            return len(list(await session.execute(select(Vote.id).where(Vote.poll_id == poll_id))))

    async def drain(self, engine: Engine, gateway: Gateway | None = None) -> int:
        """Apply every queued reaction event; returns how many."""
        gw = gateway or self.sandbox
        done = 0
        while gw.event_stats().depth:
            await engine.votes.handle(await gw.next_reaction_event())
            done += 1
        return done

    async def message_of(self, poll_id: int) -> int:
        poll = await self.poll(poll_id)
        assert poll.message_id is not None
        assert poll.message_id.isdigit(), poll.message_id
        return int(poll.message_id)


async def _no_sleep(_seconds: float) -> None:
    return None


@asynccontextmanager
async def harness(
    url: str, *, faults: FaultRates | None = None, seed: int = 7, max_events: int = 10_000, **engine: Any
) -> AsyncIterator[Harness]:
    settings = settings_for(url, **engine)
    database = Database(settings.database)
    create_schema(database.sync_engine)
    clock = Clock(datetime(2026, 6, 1, 12, 0))
    sandbox = SandboxGateway(
        rng=random.Random(seed),
        faults=faults,
        clock=clock.monotonic,
        sleep=_no_sleep,
        wall_clock=clock,
        max_events=max_events,
    )
    sandbox.ensure_channel(CHANNEL, GUILD)
    try:
        yield Harness(database, sandbox, clock, settings)
    finally:
        await database.dispose()
