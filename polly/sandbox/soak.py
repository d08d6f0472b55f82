"""``polly soak``: the sandbox engine under load, with a report proving what held.

Replicas (each its own engine, database pool and supervisor) share one database and one sandbox
Discord, which delivers every reaction event to every replica as Discord does. Simulated voters
act at a fixed rate while faults are injected into a share of the Discord calls. Every
``sample_interval`` the soak records RSS, the live objects of the most common classes, the pools'
connections in use and the event rate. At the end voting stops, the queues drain, a last
reconcile pass runs without faults, and the database is audited against the sandbox's ground
truth (:mod:`polly.sandbox.soak_check`).

To keep the harness itself from looking like a leak, voters first cover every (message, voter)
pair (so the sandbox's ground truth reaches its full size during the warm-up) and scheduled polls
open in the first minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, insert, select, text

from polly.app import prepare_database
from polly.config import SecretUrl, Settings
from polly.db.engine import Database
from polly.db.models import Poll, Vote
from polly.db.poll_rows import poll_view
from polly.engine.service import Engine, utcnow_naive
from polly.errors import CorruptPollError, PollyError
from polly.sandbox.gateway import FaultRates, SandboxGateway
from polly.sandbox.soak_check import ReplicaGateway, VoteAudit, audit_poll
from polly.supervisor import Readiness, Supervisor, ready_at_once

logger = logging.getLogger("polly.soak")

GUILD_BASE = 800_000_000_000_000_000
CHANNEL_BASE = 810_000_000_000_000_000
CHANNELS = 50
USER_BASE = 700_000_000_000_000_000
MAX_SAMPLES = 10_000  # 27 hours at the default 10 s interval


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


@dataclass(slots=True)
class Sample:
    t: float
    rss_bytes: int
    pool_used: int
    events_per_second: float
    server_connections: int | None
    classes: dict[str, int] = field(default_factory=dict)


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


async def seed_polls(database: Database, options: SoakOptions, rng: random.Random) -> None:
    """``options.polls`` polls: most open at once, some open in the first minute, a tenth close mid-run."""
    now = utcnow_naive()
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


class Voters:
    """Simulated users acting at a fixed rate.

    Each (message, voter) pair uses two emojis of that message, fixed by the pair, so the sandbox's
    ground truth has a known final size; a first sweep touches both emojis of every pair (two acts
    each), after which acts toggle a random pair's emoji. With the default 5 voters and 2000 polls the
    sweep is 20 000 acts: 100 s at 200 events/s, inside the two-minute warm-up.
    """

    def __init__(self, sandbox: SandboxGateway, voters: int, rate: float, rng: random.Random) -> None:
        self._sb, self._voters, self.rate, self._rng = sandbox, voters, rate, rng
        self._swept: dict[int, int] = {}
        self.acts = 0
        self.running = True

    @staticmethod
    def pair_emojis(message_id: int, user_index: int, emojis: list[str]) -> tuple[str, str]:
        first = (user_index * 7 + message_id) % len(emojis)
        return emojis[first], emojis[(first + 1) % len(emojis)]

    def act(self) -> None:
        picked = self._sb.pick_votable(self._rng)
        if picked is None:
            return
        message_id, emojis = picked
        if len(emojis) < 2:
            return
        swept = self._swept.get(message_id, 0)
        if swept < 2 * self._voters:
            self._swept[message_id] = swept + 1
            index, which = divmod(swept, 2)
        else:
            index, which = self._rng.randrange(self._voters), self._rng.randrange(2)
        user = USER_BASE + index
        emoji = self.pair_emojis(message_id, index, sorted(emojis))[which]
        if self._sb.has_reaction(message_id, user, emoji):
            self._sb.user_remove_reaction(message_id, user, emoji)
        else:
            self._sb.user_add_reaction(message_id, user, emoji)
        self.acts += 1

    async def run(self) -> None:
        """Act at :attr:`rate` (which a burst changes while running) until :attr:`running` is off."""
        last, owed = time.monotonic(), 0.0
        while self.running:
            now = time.monotonic()
            owed = min(owed + (now - last) * self.rate, 1000.0 + self.rate)
            last = now
            for _ in range(int(owed)):
                self.act()
            owed -= int(owed)
            await asyncio.sleep(0.02)


def census(top: int) -> dict[str, int]:
    """Live objects of the ``top`` most common classes (gc-tracked objects only)."""
    counts = Counter(map(type, gc.get_objects()))
    return {f"{t.__module__}.{t.__qualname__}": n for t, n in counts.most_common(top)}


async def server_connections(database: Database) -> int | None:
    """Connections the PostgreSQL server holds for this database (``None`` elsewhere)."""
    if database.backend != "postgresql":
        return None
    async with database.async_session_scope() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        )
    return int(count or 0) - 1  # not the one asking


async def _votes_by_poll(database: Database) -> dict[int, dict[int, set[int]]]:
    out: dict[int, dict[int, set[int]]] = {}
    async with database.async_session_scope() as session:
        for poll_id, user_id, option in await session.execute(
            select(Vote.poll_id, Vote.user_id, Vote.option_index)
        ):
            out.setdefault(int(poll_id), {}).setdefault(int(user_id), set()).add(int(option))
    return out


async def audit(database: Database, sandbox: SandboxGateway) -> tuple[VoteAudit, int, dict[str, int]]:
    """Audit every poll with a message against the truth; also count polls and states."""
    result = VoteAudit()
    votes = await _votes_by_poll(database)
    async with database.async_session_scope() as session:
        polls = list((await session.scalars(select(Poll))).all())
        states = dict(Counter(str(p.status) for p in polls))
    known = set(sandbox.message_ids())
    for row in polls:
        try:
            poll = poll_view(row)
        except CorruptPollError:
            continue
        if poll.message_id is None or poll.message_id not in known:
            continue
        truth = sandbox.truth(poll.message_id)
        audit_poll(result, poll, truth, votes.get(poll.id, {}), exact=poll.status == "active")
    return result, len(polls), states


def growing_classes(samples: Iterable[Sample], after: float) -> list[str]:
    """Classes among the last census's top ones whose count grew in every sample after ``after``."""
    late = [s for s in samples if s.t >= after]
    if len(late) < 3:
        return []
    names = late[-1].classes
    return [
        n
        for n in names
        if all(b.classes.get(n, 0) > a.classes.get(n, 0) for a, b in itertools.pairwise(late))
    ]


async def seeded_database(settings: Settings, options: SoakOptions, rng: random.Random) -> Database:
    """The soak's own handle on the database (audit, connection counts): prepared, refused unless
    it holds no poll, then seeded with the soak's polls."""
    admin = Database(settings.database)
    await asyncio.to_thread(prepare_database, admin)
    async with admin.async_session_scope() as session:
        if await session.scalar(select(func.count()).select_from(Poll)):
            msg = f"the soak needs an empty database; {admin.redacted_url} has polls"
            await admin.dispose()
            raise PollyError(msg)
    await seed_polls(admin, options, rng)
    return admin


async def run_soak(settings: Settings, options: SoakOptions) -> dict[str, Any]:  # noqa: PLR0915 - one linear script
    """Run the soak and write ``report.json`` (and ``report.png`` when matplotlib is installed).

    With ``crash_cycles`` the replicas are separate processes killed and restarted
    (:mod:`polly.sandbox.soak_crash`).
    """
    if options.crash_cycles:
        from polly.sandbox.soak_crash import run_crash_soak

        return await run_crash_soak(soak_settings(settings), options, options.crash_cycles)
    rng = random.Random(options.seed)  # noqa: S311 - a reproducible simulation
    settings = soak_settings(settings)
    admin = await seeded_database(settings, options, rng)
    sandbox = SandboxGateway(
        rng=random.Random(options.seed + 1),  # noqa: S311 - a reproducible simulation
        faults=fault_rates(options.fault_rate),
        max_events=100_000,
        max_tracked_voters=options.polls * options.voters * 2,
    )
    for i in range(CHANNELS):
        sandbox.ensure_channel(CHANNEL_BASE + i, GUILD_BASE + i % 5)
    transitions: Counter[tuple[int, str]] = Counter()
    # Each replica's event queue is as long as the real gateway's (engine.vote_queue_max).
    gateways = [ReplicaGateway(sandbox, settings.engine.vote_queue_max) for _ in range(options.replicas)]
    # the replicas stand for separate processes: one Database (one pool) each, as each process has
    databases = [Database(settings.database) for _ in range(options.replicas)]
    engines = [
        Engine(
            settings, db, gw, replica=f"r{i + 1}", on_transition=lambda p, t, _r: transitions.update([(p, t)])
        )
        for i, (db, gw) in enumerate(zip(databases, gateways, strict=True))
    ]
    voters = Voters(sandbox, options.voters, options.events_per_second, rng)
    samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
    started = time.monotonic()

    async def sampler(ready: Readiness) -> None:
        ready.ready()
        last = (time.monotonic(), 0)
        while True:
            await asyncio.sleep(options.sample_interval_seconds)
            c = sandbox.counters()
            acts = c.user_adds + c.user_removes
            now = time.monotonic()
            rate = (acts - last[1]) / max(now - last[0], 1e-9)
            last = (now, acts)
            used = sum(p.used for db in databases for p in db.engine_stats())
            connections = await server_connections(admin)
            classes = await asyncio.to_thread(census, options.top_classes)
            sample = Sample(
                now - started, psutil.Process().memory_info().rss, used, rate, connections, classes
            )
            samples.append(sample)
            logger.info(
                "t=%4.0fs rss=%.1f MB pool used=%d events/s=%.0f",
                sample.t,
                sample.rss_bytes / 1e6,
                used,
                rate,
            )

    async with contextlib.AsyncExitStack() as stack:
        harness = await stack.enter_async_context(Supervisor(name="soak", registry=None))
        sups = [await stack.enter_async_context(Supervisor(name=e.replica, registry=None)) for e in engines]
        harness.start_loop("sandbox", ready_at_once(sandbox.start))
        harness.start_loop(
            "fan-out", ready_at_once(functools.partial(ReplicaGateway.fan_out, sandbox, gateways))
        )
        for engine, sup in zip(engines, sups, strict=True):
            engine.start(sup)
        harness.start_loop("voters", ready_at_once(voters.run))
        harness.start_loop("sampler", sampler)
        burst = min(options.burst_seconds, options.duration_seconds)
        await asyncio.sleep(options.duration_seconds - burst)
        if burst > 0:
            # A burst at the end of the run: voters act at burst_factor x the rate, then stop; the
            # audit below shows whether every poll converged after it.
            logger.info(
                "burst: %.0f s at %.0f events/s", burst, options.events_per_second * options.burst_factor
            )
            voters.rate = options.events_per_second * options.burst_factor
            await asyncio.sleep(burst)
        voters.running = False
        burst_end = time.monotonic()
        await _drain(engines)
        sandbox.set_faults(FaultRates())
        # A last repair without faults and without a budget: every candidate poll is read again until
        # a pass changes nothing and no replica has a poll marked (a deferred change of mind needs
        # its second look), at most 120 s.
        final = engines[0].reconciler
        final.budget = 10**9
        deadline = time.monotonic() + 120.0
        while True:
            repaired = await final.pass_once()
            await _drain(engines)
            quiet = not (
                repaired.votes_added or repaired.votes_removed or repaired.transient_failures
                or repaired.rate_limited
            )  # fmt: skip
            if (quiet and all(e.reconciler.marked == 0 for e in engines)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        result, poll_count, states = await audit(admin, sandbox)
        converged_after = time.monotonic() - burst_end
        for sup in (*sups, harness):
            await sup.shutdown(10.0)
    for engine in engines:
        engine.close()
    peak_used = max((s.pool_used for s in samples), default=0)
    limit = sum(p.max_connections for db in databases for p in db.engine_stats() if "async" in p.name)
    server_peak = max((s.server_connections or 0 for s in samples), default=0)
    for db in (*databases, admin):
        await db.dispose()
    warm = [s for s in samples if s.t >= options.warmup_seconds]
    rss_warm = warm[0].rss_bytes if warm else 0
    rss_end = samples[-1].rss_bytes if samples else 0
    counters = sandbox.counters()
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "database": admin.redacted_url,
        "lost_votes": result.lost_votes,
        "phantom_votes": result.phantom_votes,
        "over_max_choices": result.over_max_choices,
        "expected_votes_checked": result.expected_votes,
        "polls_audited": result.polls,
        "polls_audited_exactly": result.exact_polls,
        "audit_examples": result.examples,
        "converged_after_seconds": round(converged_after, 1),
        "calls_inside_retry_after": sum(g.window_violations for g in gateways),
        "calls_into_blocked_buckets_any_replica": counters.rate_limit_violations,
        "double_transitions": sum(1 for n in transitions.values() if n > 1),
        "transitions": dict(Counter(t for _, t in transitions.elements())),
        "polls_seeded": options.polls,
        "polls_in_database": poll_count,
        "deleted_polls": options.polls - poll_count,
        "poll_states": states,
        "pool_peak_used": peak_used,
        "pool_limit": limit,
        "server_connections_peak": server_peak,
        "rss_after_warmup_bytes": rss_warm,
        "rss_end_bytes": rss_end,
        "rss_growth_percent": round(100 * (rss_end - rss_warm) / rss_warm, 2) if rss_warm else None,
        "classes_growing_every_sample": growing_classes(samples, options.warmup_seconds),
        "sandbox": asdict(counters) | {"faults": dict(counters.faults)},
        "engines": [asdict(e.stats()) for e in engines],
        "samples": [asdict(s) for s in samples],
    }
    options.report_dir.mkdir(parents=True, exist_ok=True)
    (options.report_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    _chart(samples, options)
    return report


async def _drain(engines: list[Engine], limit_seconds: float = 120.0) -> None:
    """Wait until every replica has applied every queued event (or ``limit_seconds`` pass)."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if all(e.gateway.event_stats().depth == 0 and e.votes.queued == 0 for e in engines):
            await asyncio.sleep(1.0)  # the event in hand
            return
        await asyncio.sleep(0.2)


def _chart(samples: Sequence[Sample], options: SoakOptions) -> None:
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: report.png not written (pip install 'polly[soak]')")
        return
    t = [s.t for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    axes[0].plot(t, [s.rss_bytes / 1e6 for s in samples])
    axes[0].set_ylabel("RSS (MB)")
    top = list(samples[-1].classes)[:8] if samples else []
    for name in top:
        axes[1].plot(t, [s.classes.get(name, 0) for s in samples], label=name.rsplit(".", 1)[-1])
    axes[1].set_ylabel("live objects")
    axes[1].legend(fontsize=7, ncol=2)
    axes[2].plot(t, [s.pool_used for s in samples])
    axes[2].set_ylabel("pool in use")
    axes[3].plot(t, [s.events_per_second for s in samples])
    axes[3].set_ylabel("events/s")
    axes[3].set_xlabel("seconds")
    for ax in axes:
        ax.axvline(options.warmup_seconds, color="grey", linestyle=":")
    fig.tight_layout()
    fig.savefig(options.report_dir / "report.png", dpi=90)
    plt.close(fig)
