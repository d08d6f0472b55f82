"""The seam through which an application reports what cannot be discovered: pools it monitors
itself, caches, circuit breakers and supervised tasks.

The instrumentation defines these Protocols and never imports the application; the application
implements them structurally (polly's frozen dataclasses in ``polly.stats`` already fit) and is
found either through the entry-point group :data:`ENTRY_POINT_GROUP` (each entry point names a
zero-argument callable returning a :class:`StatsSource`) or passed by hand as
``PollyInstrumentor().instrument(sources=[...])``.

Every method is called on the SDK's exporter thread at collection time: implementations only read
state (no I/O, no asyncio, no heap walks) and return quickly. A source that raises is logged and
skipped for that collection.

Pool names follow the instrumentation's one scheme (:func:`~._naming.fallback_pool_name`); a
source that reports a pool the instrumentation would also discover claims it with
:meth:`StatsSource.owns`, so it is reported once, by the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol

ENTRY_POINT_GROUP = "opentelemetry_instrumentation_polly_sources"

BreakerStateName = Literal["closed", "half_open", "open"]
#: Every state of a breaker, in the order the state set is reported.
BREAKER_STATES: tuple[BreakerStateName, ...] = ("closed", "half_open", "open")
DurationKindName = Literal["wait_time", "use_time", "create_time"]
GatewayStateName = Literal["connecting", "connected", "resuming", "down"]
#: Every state of a gateway connection, in the order the state set is reported.
GATEWAY_STATES: tuple[GatewayStateName, ...] = ("connecting", "connected", "resuming", "down")


class PoolReading(Protocol):
    """One connection pool, read from its own state. Counts are connections; ``-1`` means unknown.

    ``timeouts`` is cumulative since the pool was created.
    """

    @property
    def name(self) -> str: ...
    @property
    def system(self) -> str: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_idle(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def timeouts(self) -> int: ...


class CacheReading(Protocol):
    """One bounded cache; the counters are cumulative since it was created."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def expirations(self) -> int: ...
    @property
    def evictions(self) -> int: ...


class BreakerReading(Protocol):
    """One circuit breaker in front of the pool ``pool_name``; ``openings`` is cumulative."""

    @property
    def pool_name(self) -> str: ...
    @property
    def state(self) -> BreakerStateName: ...
    @property
    def openings(self) -> int: ...


class TaskReading(Protocol):
    """A task supervisor: live tasks by name, cumulative failures and restarts."""

    @property
    def live_by_name(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def failed(self) -> int: ...
    @property
    def restarted(self) -> int: ...


class GatewayReading(Protocol):
    """One realtime gateway connection (polly: Discord's), read from its own state.

    ``state_since`` is when it entered ``state`` (Unix seconds); ``latency_seconds`` is the last
    heartbeat round trip, ``None`` while unknown or not connected. The counters are cumulative since
    start: ``identifies`` new sessions, ``resumes`` sessions resumed, ``reconnects`` times the
    connection came back after being lost, ``outages`` times it went ``down``.
    """

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> GatewayStateName: ...
    @property
    def state_since(self) -> float: ...
    @property
    def latency_seconds(self) -> float | None: ...
    @property
    def identifies(self) -> int: ...
    @property
    def resumes(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def outages(self) -> int: ...


class GatewaySource(Protocol):
    """Optional addition to :class:`StatsSource`: a source with a ``gateways()`` method reports its
    gateway connections too (a source without one reports none)."""

    def gateways(self) -> Iterable[GatewayReading]: ...


class DurationReading(Protocol):
    """One pool duration event, in seconds."""

    @property
    def kind(self) -> DurationKindName: ...
    @property
    def pool_name(self) -> str: ...
    @property
    def system(self) -> str: ...
    @property
    def seconds(self) -> float: ...


DurationListener = Callable[[DurationReading], None]


class StatsSource(Protocol):
    """What an application implements to report its own components."""

    def pools(self) -> Iterable[PoolReading]: ...
    def caches(self) -> Iterable[CacheReading]: ...
    def breakers(self) -> Iterable[BreakerReading]: ...
    def tasks(self) -> TaskReading | None: ...
    def owns(self, pool: object) -> bool:
        """Whether ``pool`` (a SQLAlchemy engine or a redis-py connection pool) is reported here."""
        ...

    def add_duration_listener(self, listener: DurationListener) -> Callable[[], None]:
        """Receive every duration event; returns the function that removes ``listener``."""
        ...
