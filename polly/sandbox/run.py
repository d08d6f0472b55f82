"""What ``polly run --sandbox`` adds to the engine: the simulated Discord, its gateway health (kind
``gateway``, name ``sandbox``, so the sandbox reports the same gateway metrics as a run against
Discord), the continuation of an earlier run's database, a few demo polls and simulated voters."""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from polly.clock import utcnow_naive
from polly.config import Settings
from polly.db.engine import Database
from polly.db.models import Poll
from polly.engine.discord_health import GatewayHealth
from polly.engine.gateway import GatewayParts
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.restore import continue_sandbox
from polly.sandbox.voters import SandboxVoters
from polly.stats import registry as stats_registry
from polly.supervisor import ready_at_once

logger = logging.getLogger("polly")

DEMO_GUILD_ID = 900_000_000_000_000_001
DEMO_CHANNEL_ID = 900_000_000_000_000_002


def sandbox_parts(
    settings: Settings, *, seed_polls: int, voters: int, events_per_second: float
) -> GatewayParts:
    """The sandbox gateway with what it needs around it (see the module docstring)."""
    gateway = SandboxGateway(
        rng=random.Random(),  # noqa: S311 - simulation, not cryptography
        max_events=settings.engine.vote_queue_max,
    )
    health = GatewayHealth("sandbox", latency=lambda: 0.0)
    health.connected(resumed=False)
    unregister = stats_registry.register("gateway", "sandbox", health.snapshot)

    async def prepare(database: Database) -> None:
        adopted = await continue_sandbox(database, gateway)
        if adopted:
            logger.info("sandbox: continued %d poll message(s) of an earlier run", adopted)
        seeded = await seed_demo_polls(database, seed_polls)
        if seeded:
            logger.info("sandbox: seeded %d demo poll(s)", seeded)

    loops = []
    if voters > 0 and events_per_second > 0:
        simulated = SandboxVoters(
            gateway,
            voters=voters,
            events_per_second=events_per_second,
            rng=random.Random(),  # noqa: S311 - simulation, not cryptography
        )
        loops.append(("sandbox-voters", ready_at_once(simulated.run)))
    return GatewayParts(gateway, prepare=prepare, loops=tuple(loops), close=unregister)


async def seed_demo_polls(database: Database, count: int) -> int:
    """A few polls for the sandbox, written only when no poll is scheduled or active (an empty
    database, or one whose polls have all closed). Returns how many."""
    async with database.async_session_scope() as session:
        live = select(func.count()).select_from(Poll).where(Poll.status.in_(("scheduled", "active")))
        if (await session.scalar(live)) or count <= 0:
            return 0
        now = utcnow_naive()
        kinds: list[dict[str, Any]] = [
            {"name": "Lunch", "options": ["Pizza", "Tacos", "Salad"], "multiple_choice": False},
            {"name": "Team games", "options": ["Chess", "Go", "Bridge", "Poker"], "multiple_choice": True,
             "max_choices": 2},
            {"name": "Secret ballot", "options": ["Yes", "No"], "anonymous": True},
        ]  # fmt: skip
        for i in range(count):
            kind = kinds[i % len(kinds)]
            poll = Poll(
                question=f"Sandbox poll {i + 1}: what do you choose?",
                server_id=str(DEMO_GUILD_ID),
                channel_id=str(DEMO_CHANNEL_ID),
                creator_id="0",
                open_time=now,
                close_time=now + timedelta(minutes=10 + 5 * i),
                open_immediately=True,
                timezone="UTC",
                status="scheduled",
                **{k: v for k, v in kind.items() if k != "options"},
            )
            poll.options = kind["options"]
            session.add(poll)
    return count
