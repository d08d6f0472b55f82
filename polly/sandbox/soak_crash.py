"""``polly soak --crash-cycles N``: replicas as separate processes, SIGKILLed and restarted.

The soak process holds the sandbox Discord (ground truth, faults) and serves it on loopback
(:mod:`polly.sandbox.remote`); each replica is a ``python -m polly.sandbox.soak_replica``
process on the shared database. During the run, N times at even intervals, one replica (in turn) is
killed with SIGKILL (no drain, its queued events lost, as in a crash) and started again a second
later; while it is down it receives no events, as with Discord. At the end the voters stop and Discord
calms down (no more faults); the soak waits until every replica reports empty queues and no poll
marked for repair (at most 120 s),
with faults off, then one more background repair interval, stops the replicas with SIGTERM and
audits every poll. No repair is made by the soak itself: what the audit sees is the replicas' work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sys
from collections import Counter
from typing import Any

from polly.clock import SYSTEM_CLOCK, Clock
from polly.config import Settings
from polly.sandbox.gateway import FaultRates
from polly.sandbox.remote import SandboxServer
from polly.sandbox.soak import seeded_database
from polly.sandbox.soak_load import Voters
from polly.sandbox.soak_report import audit
from polly.sandbox.soak_setup import SoakOptions, soak_sandbox
from polly.supervisor import Supervisor, ready_at_once

logger = logging.getLogger("polly.soak")


async def _spawn(name: str, port: int, url: str, log: Any) -> asyncio.subprocess.Process:
    env = dict(os.environ, DATABASE_URL=url)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polly.sandbox.soak_replica", "--port", str(port), "--replica", name,
        env=env, stdout=log, stderr=log,
    )  # fmt: skip


async def run_crash_soak(  # noqa: PLR0915 - one linear script
    settings: Settings, options: SoakOptions, cycles: int, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """Run the crash soak and write ``report.json``; returns the report."""
    rng = random.Random(options.seed)  # noqa: S311 - a reproducible simulation
    admin = await seeded_database(settings, options, rng, clock)
    sandbox = soak_sandbox(options, clock)
    transitions: Counter[tuple[int, str]] = Counter()
    latest: dict[str, tuple[float, int, int, int]] = {}  # replica -> (time, depth, queued, marked)

    def on_report(kind: str, value: Any) -> None:
        if kind == "transition":
            transitions[(int(value[0]), str(value[1]))] += 1
        elif kind == "stats":
            latest[str(value[0])] = (clock.monotonic(), int(value[2]), int(value[3]), int(value[4]))

    server = SandboxServer(sandbox, max_events=50_000, on_report=on_report)
    port = await server.start()
    url = settings.database.url.get_secret_value()
    options.report_dir.mkdir(parents=True, exist_ok=True)
    names = [f"r{i + 1}" for i in range(options.replicas)]
    voters = Voters(sandbox, options.voters, options.events_per_second, rng, clock=clock)
    kills = 0
    with (options.report_dir / "replicas.log").open("ab") as log:
        procs = {n: await _spawn(n, port, url, log) for n in names}

        async def connected(count: int, limit: float) -> None:
            # A process start can take seconds on a loaded machine: the clock starts once it is up.
            deadline = clock.monotonic() + limit
            while server.connections < count and clock.monotonic() < deadline:
                await clock.sleep(0.2)

        async with Supervisor(name="soak", registry=None) as harness:
            harness.start_loop("sandbox", ready_at_once(sandbox.start))
            harness.start_loop("fan-out", ready_at_once(server.fan_out))
            await connected(len(names), 60.0)
            harness.start_loop("voters", ready_at_once(voters.run))
            interval = options.duration_seconds / (cycles + 1)
            for k in range(cycles):
                await clock.sleep(interval)
                victim = names[k % len(names)]
                procs[victim].send_signal(signal.SIGKILL)
                await procs[victim].wait()
                kills += 1
                logger.info("crash %d/%d: killed %s", kills, cycles, victim)
                await clock.sleep(1.0)
                procs[victim] = await _spawn(victim, port, url, log)
                await connected(len(names) + kills, 60.0)
            await clock.sleep(interval)
            voters.running = False
            # Discord calms down: the replicas' own repair (prompt and background) finishes the job.
            sandbox.set_faults(FaultRates())
            stopped = clock.monotonic()
            deadline = stopped + 120.0
            while clock.monotonic() < deadline:
                fresh = [v for n, v in latest.items() if n in names and v[0] > stopped + 1.0]
                if len(fresh) == len(names) and all(v[1:] == (0, 0, 0) for v in fresh):
                    break
                await clock.sleep(0.5)
            converged_after = clock.monotonic() - stopped
            # One background pass of every replica after that (soak cadence: every 10 s).
            await clock.sleep(settings.engine.reconcile_interval_seconds + 1)
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            result, poll_count, states = await audit(admin, sandbox, clock)
            await harness.shutdown(10.0)
    await server.close()
    await admin.dispose()
    counters = sandbox.counters()
    out: dict[str, Any] = {
        "mode": "crash", "replicas": options.replicas, "crash_cycles": cycles, "kills": kills,
        "database": admin.redacted_url, "lost_votes": result.lost_votes,
        "lost_votes_without_reaction": result.lost_without_reaction,
        "phantom_votes": result.phantom_votes,
        "over_max_choices": result.over_max_choices, "expected_votes_checked": result.expected_votes,
        "polls_audited": result.polls, "polls_audited_exactly": result.exact_polls,
        "audit_examples": result.examples, "converged_after_seconds": round(converged_after, 1),
        "calls_inside_retry_after": server.window_violations,
        "calls_into_blocked_buckets_any_replica": counters.rate_limit_violations,
        "double_transitions": sum(1 for n in transitions.values() if n > 1),
        "transitions": dict(Counter(t for _, t in transitions.elements())),
        "polls_seeded": options.polls, "polls_in_database": poll_count,
        "deleted_polls": options.polls - poll_count, "poll_states": states,
        "sandbox_connections": server.connections, "voter_acts": voters.acts,
        "sandbox": {"faults": dict(counters.faults), "calls": counters.calls},
    }  # fmt: skip
    (options.report_dir / "report.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out
