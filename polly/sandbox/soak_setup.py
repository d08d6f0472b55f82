"""The soak's scenario: its options, the polls it seeds, the faults it injects, the sandbox it builds.

Polls live in :data:`CHANNELS` channels of five guilds; voters are users from :data:`USER_BASE`.
Most polls open at once, some open in the first minute, a tenth close mid-run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from polly.clock import SYSTEM_CLOCK, Clock
from polly.config import SecretUrl, Settings
from polly.db.engine import Database
from polly.db.models import Poll
from polly.sandbox.gateway import FaultRates, SandboxGateway

GUILD_BASE = 800_000_000_000_000_000
CHANNEL_BASE = 810_000_000_000_000_000
CHANNELS = 50
USER_BASE = 700_000_000_000_000_000
#: Events the sandbox itself holds for the fan-out to the replicas (Discord's side of the socket).
SANDBOX_MAX_EVENTS = 100_000


@dataclass(frozen=True, slots=True)
class SoakOptions:
    duration_seconds: float = 600.0
    warmup_seconds: float = 120.0
    polls: int = 2000
    voters: int = 5
    events_per_second: float = 200.0
    fault_rate: float = 0.2
    replicas: int = 2
    sample_interval_seconds: float = 10.0
    top_classes: int = 20
    seed: int = 1
    report_dir: Path = Path("soak-report")
    burst_factor: float = 1.0
    burst_seconds: float = 0.0
    crash_cycles: int = 0
    memory_bound_mb: float = 1024.0


def fault_rates(total: float) -> FaultRates:
    """``total`` of the calls fail, split like a bad day on Discord (5xx and 429 most often)."""
    return FaultRates(
        server_error=0.4 * total, rate_limited=0.25 * total, not_found=0.15 * total, forbidden=0.1 * total,
        message_deleted=0.01 * total, latency=0.09 * total, latency_seconds=0.05,
        retry_after_seconds=(0.05, 0.5),
    )  # fmt: skip


def soak_settings(settings: Settings, database_url: str | None = None) -> Settings:
    """The settings with a faster tick and reconcile cadence, and the soak's database URL if given."""
    engine = settings.engine.model_copy(
        update={"tick_seconds": 1.0, "reconcile_interval_seconds": 10.0, "reconcile_budget_per_tick": 200}
    )
    update: dict[str, Any] = {"engine": engine}
    if database_url is not None:
        update["database"] = settings.database.model_copy(update={"url": SecretUrl(database_url)})
    return settings.model_copy(update=update)


def soak_sandbox(options: SoakOptions, clock: Clock = SYSTEM_CLOCK) -> SandboxGateway:
    """The shared sandbox Discord: the soak's faults, room for every voter's truth, its channels."""
    sandbox = SandboxGateway(
        rng=random.Random(options.seed + 1),  # noqa: S311 - a reproducible simulation
        clock=clock.monotonic,
        sleep=clock.sleep,
        faults=fault_rates(options.fault_rate),
        max_events=SANDBOX_MAX_EVENTS,
        max_tracked_voters=options.polls * options.voters * 2,
        wall_clock=clock.now,
    )
    for i in range(CHANNELS):
        sandbox.ensure_channel(CHANNEL_BASE + i, GUILD_BASE + i % 5)
    return sandbox


async def seed_polls(
    database: Database, options: SoakOptions, rng: random.Random, clock: Clock = SYSTEM_CLOCK
) -> None:
    """``options.polls`` polls: most open at once, some open in the first minute, a tenth close mid-run."""
    now = clock.now()
    rows = []
    for i in range(options.polls):
        kind = rng.random()
        multiple, anonymous = kind >= 0.5, kind >= 0.85
        n = rng.randint(2, 5)
        closes_mid_run = rng.random() < 0.1
        close_in = (
            rng.uniform(options.warmup_seconds, options.duration_seconds * 0.9) if closes_mid_run else None
        )
        capped = multiple and n > 2 and rng.random() < 0.33
        rows.append({
            "name": f"soak {i}", "question": f"Soak question {i}?",
            "options_json": json.dumps([f"o{j}" for j in range(n)]),
            "server_id": str(GUILD_BASE + i % 5), "channel_id": str(CHANNEL_BASE + i % CHANNELS),
            "creator_id": "0", "status": "scheduled", "timezone": "UTC", "anonymous": anonymous,
            "multiple_choice": multiple, "max_choices": 2 if capped else None,
            "open_immediately": rng.random() < 0.85, "open_time": now + timedelta(seconds=rng.uniform(5, 60)),
            "close_time": now + timedelta(seconds=close_in or options.duration_seconds + 3600),
            "ping_role_enabled": False, "ping_role_on_close": False, "ping_role_on_update": False,
        })  # fmt: skip
    async with database.async_session_scope() as session:
        for start in range(0, len(rows), 500):
            await session.execute(insert(Poll), rows[start : start + 500])
