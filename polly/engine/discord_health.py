"""The Discord gateway connection's health: its state, its outage log lines, its stats snapshot.

:class:`GatewayHealth` follows one discord.py client through ``connecting`` → ``connected`` ⇄
``resuming`` → ``down`` (see :class:`~polly.stats.GatewayStats`). An outage is said once when it
starts (WARNING, with the first failure's cause), summarised at most once per
``summary_every_seconds`` while it lasts, and once when it ends (with its length and the failed
attempts). A short drop that discord.py resumes is one INFO line.

discord.py logs every failed reconnect with a traceback ("Attempting a reconnect in …");
:class:`ReconnectLogFilter` turns those records into :meth:`GatewayHealth.attempt_failed` calls
instead, so an outage of an hour is three lines, not hundreds of tracebacks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from polly.stats import GatewayState, GatewayStats

logger = logging.getLogger("polly.engine.gateway")

DISCORD_CLIENT_LOGGER = "discord.client"
_RECONNECT_PREFIX = "Attempting a reconnect in"


def _clock_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")


class GatewayHealth:
    """One gateway connection's state; called from the event loop, read from any thread.

    ``latency`` returns discord.py's heartbeat latency (seconds; ``inf``/``nan`` when unknown).
    """

    def __init__(
        self,
        name: str = "discord",
        *,
        latency: Callable[[], float] = lambda: math.nan,
        clock: Callable[[], float] = time.time,
        summary_every_seconds: float = 60.0,
    ) -> None:
        self.name = name
        self._latency = latency
        self._clock = clock
        self._summary_every = summary_every_seconds
        self.state: GatewayState = "connecting"
        self.since = clock()
        self.identifies = self.resumes = self.reconnects = self.outages = 0
        self._ever_connected = False
        self._failed_attempts = 0
        self._last_summary = 0.0
        self._first_cause = ""

    # --- transitions ----------------------------------------------------------------------------

    def connected(self, *, resumed: bool) -> None:
        """READY (``resumed=False``) or RESUMED arrived."""
        now = self._clock()
        if resumed:
            self.resumes += 1
        else:
            self.identifies += 1
        if self.state == "down":
            logger.warning(
                "Discord reachable again after %.1f s (%d failed attempt(s)); gateway %s",
                now - self.since, self._failed_attempts, "resumed" if resumed else "connected",
            )  # fmt: skip
        elif self.state == "resuming":
            logger.info(
                "Discord gateway %s after %.1f s",
                "resumed" if resumed else "re-identified (new session)", now - self.since,
            )  # fmt: skip
        elif self.state == "connected" and not resumed:
            logger.info("Discord gateway re-identified (new session)")
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._set("connected", now)
        self._failed_attempts = 0

    def disconnected(self) -> None:
        """The connection was lost; discord.py reconnects by itself."""
        if self.state == "connected":
            self._set("resuming", self._clock())

    def attempt_failed(self, cause: str) -> None:
        """A (re)connect or log-in attempt failed with ``cause`` (an exception's name or a status)."""
        now = self._clock()
        self._failed_attempts += 1
        if self.state != "down":
            self.outages += 1
            start = self.since if self.state == "resuming" else now
            self._set("down", start)
            self._first_cause = cause
            self._last_summary = now
            logger.warning(
                "Discord unreachable since %s (%s); retrying with backoff", _clock_text(start), cause
            )
        elif now - self._last_summary >= self._summary_every:
            self._last_summary = now
            logger.warning(
                "Discord still unreachable since %s: %d failed attempt(s), last %s",
                _clock_text(self.since), self._failed_attempts, cause,
            )  # fmt: skip

    def _set(self, state: GatewayState, since: float) -> None:
        self.state = state
        self.since = since

    # --- reading ----------------------------------------------------------------------------------

    def latency_seconds(self) -> float | None:
        value = self._latency() if self.state == "connected" else math.nan
        return value if math.isfinite(value) else None

    def snapshot(self) -> GatewayStats:
        return GatewayStats(
            name=self.name,
            state=self.state,
            state_since=self.since,
            latency_seconds=self.latency_seconds(),
            identifies=self.identifies,
            resumes=self.resumes,
            reconnects=self.reconnects,
            outages=self.outages,
        )

    def status(self) -> str:
        """For the status line: ``gateway connected (latency 41 ms, 2 reconnects)`` and the like."""
        if self.state == "connected":
            latency = self.latency_seconds()
            shown = f"{latency * 1000:.0f} ms" if latency is not None else "n/a"
            return f"gateway connected (latency {shown}, {self.reconnects} reconnects)"
        if self.state == "down":
            return f"gateway down since {_clock_text(self.since)} ({self._failed_attempts} failed attempts)"
        return f"gateway {self.state} since {_clock_text(self.since)}"


class ReconnectLogFilter(logging.Filter):
    """Drops discord.py's per-attempt reconnect tracebacks, telling ``health`` about each instead."""

    def __init__(self, health: GatewayHealth) -> None:
        super().__init__()
        self._health = health

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(_RECONNECT_PREFIX)):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        self._health.attempt_failed(describe_failure(exc))
        return False


def describe_failure(exc: BaseException | None) -> str:
    """A short, secret-free cause: the exception's class and, for HTTP answers, the status."""
    if exc is None:
        return "unknown error"
    status = getattr(exc, "status", None)
    if isinstance(status, int):  # first: aiohttp's handshake error warns on reading .code
        return f"{type(exc).__name__} (HTTP {status})"
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"{type(exc).__name__} (close code {code})"
    return type(exc).__name__
