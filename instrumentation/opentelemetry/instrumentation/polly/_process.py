"""Process metrics with their semantic-convention names, read with one psutil ``oneshot()``.

``process.memory.usage`` (RSS, ``By``), ``process.memory.virtual`` (VMS, ``By``),
``process.cpu.time`` (``s``, ``cpu.mode`` = user|system), ``process.thread.count`` (``{thread}``),
``process.unix.file_descriptor.count`` (``{file_descriptor}``, POSIX only),
``process.context_switches`` (``{context_switch}``, ``process.context_switch.type`` =
voluntary|involuntary), ``process.cpu.utilization`` (``1``, by ``cpu.mode``: CPU time since the
previous collection over wall time and the CPUs the process may use; first reported at the
second collection), ``process.uptime`` (``s``, since the process started, from psutil's
``create_time()``), and ``polly.process.memory.growth_rate`` (``By/s``, RSS growth over
``leak_detection.rss_window_seconds``, fed by the loop-side sampler).

All callbacks of one collection share one snapshot (at most ``SNAPSHOT_MAX_AGE`` seconds old).
After ``fork()`` the child reads itself (:meth:`ProcessSignals.after_fork`): psutil's ``Process``
remembers the pid it was made for.
A metric the contrib system-metrics instrumentation already emits is skipped (see ``_coexist``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
from opentelemetry.instrumentation.polly._coexist import system_metrics_owns
from opentelemetry.instrumentation.polly._leaks import RssGrowth
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

SNAPSHOT_MAX_AGE = 1.0
_Reader = Callable[["ProcessSnapshot"], list[tuple[float, dict[str, str]]]]


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    rss: int
    vms: int
    cpu_user: float
    cpu_system: float
    threads: int
    fds: int | None
    ctx_voluntary: int
    ctx_involuntary: int
    taken_at: float = 0.0


def read_snapshot(process: psutil.Process) -> ProcessSnapshot:
    """One consistent read of the process (a single ``/proc`` pass on Linux)."""
    with process.oneshot():
        mem = process.memory_info()
        cpu = process.cpu_times()
        ctx = process.num_ctx_switches()
        try:
            fds: int | None = process.num_fds()
        except (AttributeError, psutil.Error):  # not on Windows
            fds = None
        return ProcessSnapshot(
            mem.rss,
            mem.vms,
            cpu.user,
            cpu.system,
            process.num_threads(),
            fds,
            ctx.voluntary,
            ctx.involuntary,
            time.monotonic(),
        )


def _cpus(process: psutil.Process) -> int:
    try:
        return max(1, len(process.cpu_affinity() or ()))
    except (AttributeError, psutil.Error, OSError):  # no affinity on macOS
        return os.cpu_count() or 1


class ProcessSignals:
    """The ``process.*`` instruments and the RSS growth sampler."""

    def __init__(self, meter: Meter, rss: RssGrowth, clock: Callable[[], float] = time.monotonic) -> None:
        self.active = True
        self._process = psutil.Process()
        self._created = self._process.create_time()
        self._cpus = _cpus(self._process)
        self._previous_cpu: ProcessSnapshot | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: tuple[float, ProcessSnapshot] | None = None
        self.rss = rss
        self._meter = meter
        self._gauge("process.memory.usage", "By", "Physical memory in use (RSS)", lambda s: [(s.rss, {})])
        self._gauge("process.memory.virtual", "By", "Committed virtual memory (VMS)", lambda s: [(s.vms, {})])
        self._gauge("process.thread.count", "{thread}", "Process threads", lambda s: [(s.threads, {})])
        self._gauge(
            "process.unix.file_descriptor.count",
            "{file_descriptor}",
            "Open file descriptors",
            lambda s: [] if s.fds is None else [(s.fds, {})],
        )
        meter.create_observable_counter(
            "process.cpu.time",
            [
                self._callback(
                    "process.cpu.time",
                    lambda s: [(s.cpu_user, {"cpu.mode": "user"}), (s.cpu_system, {"cpu.mode": "system"})],
                )
            ],
            unit="s",
            description="CPU seconds used by the process",
        )
        meter.create_observable_counter(
            "process.context_switches",
            [
                self._callback(
                    "process.context_switches",
                    lambda s: [
                        (s.ctx_voluntary, {"process.context_switch.type": "voluntary"}),
                        (s.ctx_involuntary, {"process.context_switch.type": "involuntary"}),
                    ],
                )
            ],
            unit="{context_switch}",
            description="Context switches of the process",
        )
        meter.create_observable_gauge(
            "process.cpu.utilization",
            [self._callback("process.cpu.utilization", self._utilization)],
            unit="1",
            description="CPU time since the last collection over elapsed time and available CPUs",
        )
        meter.create_observable_gauge(
            "process.uptime",
            [self._callback("process.uptime", lambda _s: [(max(0.0, time.time() - self._created), {})])],
            unit="s",
            description="Time since the process started",
        )
        meter.create_observable_gauge(
            "polly.process.memory.growth_rate",
            [self._observe_growth],
            unit="By/s",
            description="RSS growth over the leak-detection window",
        )

    def after_fork(self) -> None:
        """In a forked child: read this process from now on, not the parent."""
        with self._lock:
            self._process = psutil.Process()
            self._created = self._process.create_time()
            self._snapshot = None
            self._previous_cpu = None
        self.rss.reset()

    def _utilization(self, snap: ProcessSnapshot) -> list[tuple[float, dict[str, str]]]:
        previous, self._previous_cpu = self._previous_cpu, snap
        if previous is None or snap.taken_at <= previous.taken_at:
            return []
        wall = (snap.taken_at - previous.taken_at) * self._cpus
        return [
            (max(0.0, (snap.cpu_user - previous.cpu_user) / wall), {"cpu.mode": "user"}),
            (max(0.0, (snap.cpu_system - previous.cpu_system) / wall), {"cpu.mode": "system"}),
        ]

    def _gauge(self, name: str, unit: str, description: str, read: _Reader) -> None:
        self._meter.create_observable_up_down_counter(
            name, [self._callback(name, read)], unit=unit, description=description
        )

    def snapshot(self, refresh: bool = False) -> ProcessSnapshot | None:
        """A snapshot at most ``SNAPSHOT_MAX_AGE`` old; ``None`` if psutil fails (logged once).

        The first process callback of a collection (``process.memory.usage``, registered first)
        refreshes; the others reuse that read.
        """
        now = self._clock()
        with self._lock:
            cached = self._snapshot
            if not refresh and cached is not None and now - cached[0] <= SNAPSHOT_MAX_AGE:
                return cached[1]
            try:
                snap = read_snapshot(self._process)
            except psutil.Error:
                if cached is None:
                    logger.warning("psutil cannot read this process; process.* metrics are empty")
                return None
            self._snapshot = (now, snap)
            return snap

    def _callback(self, name: str, read: _Reader) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active or system_metrics_owns(name):
                return ()
            snap = self.snapshot(refresh=name == "process.memory.usage")
            if snap is None:
                return ()
            return [Observation(value, attrs) for value, attrs in read(snap)]

        return callback

    def sample_rss(self) -> None:
        """Loop-side hook: feed the RSS growth window (and its warning)."""
        snap = self.snapshot(refresh=True)
        if snap is not None:
            self.rss.add(snap.rss)

    def _observe_growth(self, _options: CallbackOptions) -> Iterable[Observation]:
        rate = self.rss.rate
        if not self.active or rate is None:
            return ()
        return [Observation(rate)]
