"""``polly soak``: the sandbox engine under load, with a report proving what held.

Replicas (each its own engine, database pool and supervisor) share one database and one sandbox
Discord, which delivers every reaction event to every replica as Discord does. Simulated voters
(:mod:`polly.sandbox.soak_load`) act at a fixed rate while faults are injected into a share of the
Discord calls; a burst at the end of the run multiplies the rate. Every ``sample_interval`` the soak
records RSS, the live objects of the most common classes, the pools' connections in use and the
event rate (:mod:`polly.sandbox.soak_report`). At the end voting stops, the queues drain, a last
reconcile pass runs without faults, and the database is audited against the sandbox's ground
truth (:mod:`polly.sandbox.soak_check`).

To keep the harness itself from looking like a leak, voters first cover every (message, voter)
pair (so the sandbox's ground truth reaches its full size during the warm-up) and scheduled polls
open in the first minute. The scenario is in :mod:`polly.sandbox.soak_setup`; this module runs it
and builds every replica's database handle (each replica stands for a process of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections import Counter, deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from polly.app import prepare_database
from polly.clock import SYSTEM_CLOCK, Clock
from polly.config import Settings
from polly.db.engine import Database
from polly.db.models import Poll
from polly.engine.service import Engine
from polly.errors import PollyError
from polly.sandbox.gateway import FaultRates, SandboxGateway
from polly.sandbox.soak_check import ReplicaGateway
from polly.sandbox.soak_load import LoadMark, Voters, offered_rate
from polly.sandbox.soak_report import (
    MAX_SAMPLES,
    Phase,
    RssWatch,
    Sample,
    audit,
    census,
    chart,
    growing_classes,
    memory_report,
    server_connections,
)
from polly.sandbox.soak_setup import (
    CHANNEL_BASE,
    CHANNELS,
    GUILD_BASE,
    USER_BASE,
    SoakOptions,
    fault_rates,
    seed_polls,
    soak_sandbox,
    soak_settings,
)
from polly.supervisor import Readiness, Supervisor, ready_at_once

__all__ = [
    "CHANNELS",
    "CHANNEL_BASE",
    "GUILD_BASE",
    "MAX_SAMPLES",
    "USER_BASE",
    "LoadMark",
    "Sample",
    "SoakOptions",
    "Voters",
    "audit",
    "census",
    "fault_rates",
    "growing_classes",
    "offered_rate",
    "run_soak",
    "seed_polls",
    "seeded_database",
    "server_connections",
    "soak_sandbox",
    "soak_settings",
]

logger = logging.getLogger("polly.soak")
#: How long after the burst (or the end of voting) every poll must agree with the truth.
CONVERGENCE_LIMIT_SECONDS = 120.0


async def seeded_database(
    settings: Settings, options: SoakOptions, rng: random.Random, clock: Clock = SYSTEM_CLOCK
) -> Database:
    """The soak's own handle on the database (audit, connection counts): prepared, refused unless
    it holds no poll, then seeded with the soak's polls."""
    admin = Database(settings.database)
    try:
        await asyncio.to_thread(prepare_database, admin)
        await _refuse_polls(admin)
        await seed_polls(admin, options, rng, clock)
    except BaseException:
        await admin.dispose()
        raise
    return admin


async def _refuse_polls(database: Database) -> None:
    async with database.async_session_scope() as session:
        if await session.scalar(select(func.count()).select_from(Poll)):
            msg = f"the soak needs an empty database; {database.redacted_url} has polls"
            raise PollyError(msg)


class _Replicas:
    """The in-process replicas: one gateway view, one database (pool) and one engine each."""

    def __init__(self, settings: Settings, sandbox: SandboxGateway, count: int, clock: Clock) -> None:
        self.transitions: Counter[tuple[int, str]] = Counter()
        # Each replica's event queue is as long as the real gateway's (engine.vote_queue_max).
        self.gateways = [
            ReplicaGateway(sandbox, settings.engine.vote_queue_max, clock.monotonic) for _ in range(count)
        ]
        # the replicas stand for separate processes: one Database (one pool) each, as each process has
        self.databases = [Database(settings.database) for _ in range(count)]
        self.engines = [
            Engine(
                settings,
                db,
                gw,
                replica=f"r{i + 1}",
                on_transition=lambda p, t, _r: self.transitions.update([(p, t)]),
            )
            for i, (db, gw) in enumerate(zip(self.databases, self.gateways, strict=True))
        ]

    def pool_used(self) -> int:
        return sum(p.used for db in self.databases for p in db.engine_stats())

    def shed(self) -> int:
        """Events the replicas' queues have shed so far (each replica counts its own)."""
        return sum(gw.event_stats().dropped for gw in self.gateways)

    def idle(self) -> bool:
        return all(e.gateway.event_stats().depth == 0 and e.votes.queued == 0 for e in self.engines)


async def run_soak(  # noqa: PLR0915 - one linear script
    settings: Settings, options: SoakOptions, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """Run the soak and write ``report.json`` (and ``report.png`` when matplotlib is installed).

    With ``crash_cycles`` the replicas are separate processes killed and restarted
    (:mod:`polly.sandbox.soak_crash`).
    """
    if options.crash_cycles:
        from polly.sandbox.soak_crash import run_crash_soak

        return await run_crash_soak(soak_settings(settings), options, options.crash_cycles, clock=clock)
    rng = random.Random(options.seed)  # noqa: S311 - a reproducible simulation
    settings = soak_settings(settings)
    admin = await seeded_database(settings, options, rng, clock)
    sandbox = soak_sandbox(options, clock)
    replicas = _Replicas(settings, sandbox, options.replicas, clock)
    voters = Voters(sandbox, options.voters, options.events_per_second, rng, clock=clock)
    samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
    watch = RssWatch(clock)
    started = clock.monotonic()

    async def sampler(ready: Readiness) -> None:
        ready.ready()
        last = (clock.monotonic(), 0)
        while True:
            await clock.sleep(options.sample_interval_seconds)
            c = sandbox.counters()
            acts = c.user_adds + c.user_removes
            now = clock.monotonic()
            rate = (acts - last[1]) / max(now - last[0], 1e-9)
            last = (now, acts)
            used = replicas.pool_used()
            connections = await server_connections(admin)
            classes = await asyncio.to_thread(census, options.top_classes)
            sample = Sample(now - started, watch.read(), used, rate, connections, classes)
            samples.append(sample)
            logger.info(
                "t=%4.0fs rss=%.1f MB pool used=%d events/s=%.0f shed=%d",
                sample.t, sample.rss_bytes / 1e6, used, rate, replicas.shed(),
            )  # fmt: skip

    engines = replicas.engines
    async with contextlib.AsyncExitStack() as stack:
        harness = await stack.enter_async_context(Supervisor(name="soak", registry=None))
        sups = [await stack.enter_async_context(Supervisor(name=e.replica, registry=None)) for e in engines]
        harness.start_loop("sandbox", ready_at_once(sandbox.start))
        harness.start_loop(
            "fan-out", ready_at_once(functools.partial(ReplicaGateway.fan_out, sandbox, replicas.gateways))
        )
        for engine, sup in zip(engines, sups, strict=True):
            engine.start(sup)
        harness.start_loop("rss", watch.run)
        start_mark, start_shed = voters.mark(), replicas.shed()
        harness.start_loop("voters", ready_at_once(voters.run))
        harness.start_loop("sampler", sampler)
        burst = min(options.burst_seconds, options.duration_seconds)
        await clock.sleep(options.duration_seconds - burst)
        burst_mark, burst_shed = voters.mark(), replicas.shed()
        rss_before = watch.reset()
        if burst > 0:
            # A burst at the end of the run: voters act at burst_factor x the rate, then stop; the
            # audit below shows whether every poll converged after it.
            voters.rate = options.events_per_second * options.burst_factor
            logger.info("burst: %.0f s at %.0f events/s", burst, voters.rate)
            await clock.sleep(burst)
        voters.running = False
        end_mark, end_shed = voters.mark(), replicas.shed()
        await _drain(replicas, clock)
        sandbox.set_faults(FaultRates())
        # A last repair without faults and without a budget: every candidate poll is read again until
        # a pass changes nothing and no replica has a poll marked (a deferred change of mind needs
        # its second look), at most CONVERGENCE_LIMIT_SECONDS after the end of voting.
        final = engines[0].reconciler
        final.budget = 10**9
        deadline = end_mark.t + CONVERGENCE_LIMIT_SECONDS
        passes = 0
        while True:
            for engine in engines:  # what each queue shed since its repair loop last looked
                engine.note_shed()
            repaired = await final.pass_once()
            passes += 1
            await _drain(replicas, clock)
            quiet = not (
                repaired.votes_added or repaired.votes_removed or repaired.transient_failures
                or repaired.rate_limited
            )  # fmt: skip
            converged = quiet and all(e.reconciler.marked == 0 for e in engines)
            if converged or clock.monotonic() > deadline:
                break
            await clock.sleep(1.0)
        result, poll_count, states = await audit(admin, sandbox, clock)
        converged_after = clock.monotonic() - end_mark.t
        rss_after = watch.read()
        for sup in (*sups, harness):
            await sup.shutdown(10.0)
    for engine in engines:
        engine.close()
    databases = replicas.databases
    limit = sum(p.max_connections for db in databases for p in db.engine_stats() if "async" in p.name)
    for db in (*databases, admin):
        await db.dispose()
    phases = [Phase("sustained", start_mark, burst_mark, options.events_per_second, burst_shed - start_shed)]
    if burst > 0:
        target = options.events_per_second * options.burst_factor
        phases.append(Phase("burst", burst_mark, end_mark, target, end_shed - burst_shed))
    warm = [s for s in samples if s.t >= options.warmup_seconds]
    rss_warm = warm[0].rss_bytes if warm else 0
    rss_end = samples[-1].rss_bytes if samples else 0
    counters = sandbox.counters()
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "database": admin.redacted_url,
        "lost_votes": result.lost_votes,
        "lost_votes_without_reaction": result.lost_without_reaction,
        "phantom_votes": result.phantom_votes,
        "over_max_choices": result.over_max_choices,
        "expected_votes_checked": result.expected_votes,
        "polls_audited": result.polls,
        "polls_audited_exactly": result.exact_polls,
        "audit_examples": result.examples,
        "converged": converged,
        "converged_after_seconds": round(converged_after, 1),
        "final_repair_passes": passes,
        "load": {p.name: p.summary() for p in phases},
        "events_shed": end_shed - start_shed,
        "sandbox_events_shed": sandbox.event_stats().dropped,
        "calls_inside_retry_after": sum(g.window_violations for g in replicas.gateways),
        "calls_into_blocked_buckets_any_replica": counters.rate_limit_violations,
        "double_transitions": sum(1 for n in replicas.transitions.values() if n > 1),
        "transitions": dict(Counter(t for _, t in replicas.transitions.elements())),
        "polls_seeded": options.polls,
        "polls_in_database": poll_count,
        "deleted_polls": options.polls - poll_count,
        "poll_states": states,
        "pool_peak_used": max((s.pool_used for s in samples), default=0),
        "pool_limit": limit,
        "server_connections_peak": max((s.server_connections or 0 for s in samples), default=0),
        "rss_after_warmup_bytes": rss_warm,
        "rss_end_bytes": rss_end,
        "rss_growth_percent": round(100 * (rss_end - rss_warm) / rss_warm, 2) if rss_warm else None,
        **memory_report(options, watch, rss_before, rss_after),
        "classes_growing_every_sample": growing_classes(samples, options.warmup_seconds),
        "sandbox": asdict(counters) | {"faults": dict(counters.faults)},
        "engines": [asdict(e.stats()) for e in engines],
        "samples": [asdict(s) for s in samples],
    }
    options.report_dir.mkdir(parents=True, exist_ok=True)
    (options.report_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    chart(samples, options)
    return report


async def _drain(replicas: _Replicas, clock: Clock, limit_seconds: float = 120.0) -> None:
    """Wait until every replica has applied every queued event (or ``limit_seconds`` pass)."""
    deadline = clock.monotonic() + limit_seconds
    while clock.monotonic() < deadline:
        if replicas.idle():
            await clock.sleep(1.0)  # the event in hand
            return
        await clock.sleep(0.2)
