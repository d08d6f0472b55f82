"""What the soak measures and reports: samples, RSS against its bound, the audit, the chart.

The audit reads every vote and poll and checks each poll with a message against the sandbox's
ground truth (:mod:`polly.sandbox.soak_check`). RSS is read every second (:class:`RssWatch`) so a
short peak in a burst is not missed between two samples; the bound it is held to is
``SoakOptions.memory_bound_mb`` (1024: the ``MemoryMax=1G`` of ``deploy/systemd/polly.service``,
for one polly process, while the soak holds every replica and the sandbox in one).
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import select, text

from polly.clock import SYSTEM_CLOCK, Clock
from polly.db.engine import Database
from polly.db.models import Poll, Vote
from polly.db.poll_rows import PollView, poll_view
from polly.errors import CorruptPollError
from polly.sandbox.gateway import SandboxGateway
from polly.sandbox.soak_check import VoteAudit, audit_poll
from polly.sandbox.soak_load import LoadMark, offered_rate
from polly.sandbox.soak_setup import SoakOptions
from polly.sandbox.truth import MessageTruth
from polly.supervisor import Readiness

logger = logging.getLogger("polly.soak")

MAX_SAMPLES = 10_000  # 27 hours at the default 10 s interval


@dataclass(slots=True)
class Sample:
    t: float
    rss_bytes: int
    pool_used: int
    events_per_second: float
    server_connections: int | None
    classes: dict[str, int] = field(default_factory=dict)


def census(top: int) -> dict[str, int]:
    """Live objects of the ``top`` most common classes (gc-tracked objects only)."""
    counts = Counter(map(type, gc.get_objects()))
    return {f"{t.__module__}.{t.__qualname__}": n for t, n in counts.most_common(top)}


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


class RssWatch:
    """The process's RSS every ``interval_seconds``: the highest since :meth:`reset` and overall."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, interval_seconds: float = 1.0) -> None:
        self._clock, self._interval = clock, interval_seconds
        self.peak = self.peak_since_reset = rss_bytes()

    def read(self) -> int:
        now = rss_bytes()
        self.peak, self.peak_since_reset = max(self.peak, now), max(self.peak_since_reset, now)
        return now

    def reset(self) -> int:
        """Start a new peak window at the RSS of now, which is returned."""
        self.peak_since_reset = 0
        return self.read()

    async def run(self, ready: Readiness) -> None:
        ready.ready()
        while True:
            await self._clock.sleep(self._interval)
            self.read()


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


@dataclass(slots=True)
class SoakAudit(VoteAudit):
    """The audit's counts, and how many of the lost votes left no reaction behind."""

    lost_without_reaction: int = 0


def lost_without_reaction(poll: PollView, truth: MessageTruth, votes: Mapping[int, set[int]]) -> int:
    """Single-choice votes the truth calls for (the user's last added emoji) that are not recorded
    and whose reaction is no longer on the message, so no repair read can bring them back (see the
    ``lost_votes_without_reaction`` row in docs/operations.md for how that happens)."""
    if poll.multiple_choice:
        return 0
    count = 0
    for user_id, voter in truth.voters.items():
        option = poll.option_for(voter.last_added) if voter.last_added else None
        if option is None or option in votes.get(user_id, set()):
            continue
        count += user_id not in truth.reactions.get(voter.last_added or "", frozenset())
    return count


async def audit(
    database: Database, sandbox: SandboxGateway, clock: Clock = SYSTEM_CLOCK
) -> tuple[SoakAudit, int, dict[str, int]]:
    """Audit every poll with a message against the truth; also count polls and states.

    A poll is checked exactly while it is open: active and before its close time. Past that time
    the vote path ignores every act (as on a closed poll) even before the scheduler closes it.
    """
    result = SoakAudit()
    now = clock.now()
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
        open_now = poll.status == "active" and poll.close_time > now
        audit_poll(result, poll, truth, votes.get(poll.id, {}), exact=open_now)
        if open_now:
            result.lost_without_reaction += lost_without_reaction(poll, truth, votes.get(poll.id, {}))
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


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of the run as the voter driver saw it, with the events the replicas shed in it."""

    name: str
    start: LoadMark
    end: LoadMark
    target_events_per_second: float
    shed_events: int

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.end.t - self.start.t, 1),
            "target_events_per_second": round(self.target_events_per_second, 1),
            "offered_events_per_second": round(offered_rate(self.start, self.end), 1),
            "events_offered": self.end.acts - self.start.acts,
            "events_not_offered": self.end.missed - self.start.missed,
            "events_shed": self.shed_events,
        }


def memory_report(options: SoakOptions, watch: RssWatch, before: int, after: int) -> dict[str, Any]:
    """RSS at the burst's start (when ``watch`` was last reset), its peak from then until the audit
    and at the audit; the peak of the whole run against the bound."""
    bound = int(options.memory_bound_mb * 1024 * 1024)
    return {
        "memory_bound_bytes": bound,
        "rss_peak_bytes": watch.peak,
        "rss_within_bound": watch.peak <= bound,
        "rss_before_burst_bytes": before,
        "rss_peak_from_burst_bytes": watch.peak_since_reset,
        "rss_after_burst_bytes": after,
    }


def chart(samples: Sequence[Sample], options: SoakOptions) -> None:
    """``report.png``: RSS, the top classes, pool use and the event rate (needs matplotlib)."""
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
