"""``PollyInstrumentor``: the ``BaseInstrumentor`` entry point, zero-code or by hand.

By hand::

    PollyInstrumentor().instrument(
        meter_provider=provider,        # default: the global one
        engines=[engine, async_engine], # SQLAlchemy engines (sync or async)
        redis_pools=[pool],             # redis-py ConnectionPools (sync or asyncio)
        loop=loop,                      # default: the running loop, else a daemon thread
        options=Options(...),           # census/leak tuning; default: polly's defaults
    )
    PollyInstrumentor().register_engine(engine, name=None)       # created later
    PollyInstrumentor().register_redis_pool(pool, name=None)
    PollyInstrumentor().register_loop(loop)                       # move the census onto a loop
    PollyInstrumentor().uninstrument()                            # every callback goes silent

Under ``opentelemetry-instrument`` there is no loop yet at instrument time, so the census runs on
a daemon thread (``polly-census``) that yields the GIL between slices; asyncio task counts need
``register_loop()`` there (polly's own supervisor publishes its tasks without it).

The SDK cannot delete instruments, so one session is kept per MeterProvider and is resumed by a
later ``instrument()`` on the same provider (the census name budget is per provider, for life).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.polly._core import Options, Telemetry
from opentelemetry.instrumentation.polly.version import __version__
from opentelemetry.metrics import MeterProvider, get_meter, get_meter_provider

from polly.stats import StatsRegistry, registry

SCOPE = "opentelemetry.instrumentation.polly"

_SESSIONS: weakref.WeakKeyDictionary[MeterProvider, Telemetry] = weakref.WeakKeyDictionary()


def session_for(
    provider: MeterProvider,
    options: Options,
    stats: StatsRegistry,
    loop: asyncio.AbstractEventLoop | None,
    *,
    thread_fallback: bool = True,
) -> Telemetry:
    """The session of ``provider``, created and started, or resumed if it was stopped."""
    telemetry = _SESSIONS.get(provider)
    if telemetry is None:
        meter = get_meter(SCOPE, __version__, provider)
        telemetry = Telemetry(meter, options, stats)
        _SESSIONS[provider] = telemetry
        telemetry.start(loop, thread_fallback=thread_fallback)
    else:
        telemetry.restart(loop, thread_fallback=thread_fallback)
    return telemetry


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class PollyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """gc census, process, gc, pool, task and cache metrics for any asyncio application."""

    _telemetry: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        provider: MeterProvider = kwargs.get("meter_provider") or get_meter_provider()
        options: Options = kwargs.get("options") or Options()
        stats: StatsRegistry = kwargs.get("registry") or registry
        loop = kwargs.get("loop") or _running_loop()
        telemetry = session_for(provider, options, stats, loop)
        self._telemetry = telemetry
        engines: Iterable[Any] = kwargs.get("engines") or ()
        pools: Iterable[Any] = kwargs.get("redis_pools") or ()
        for engine in engines:
            telemetry.pools.add_engine(engine)
        for pool in pools:
            telemetry.pools.add_redis_pool(pool)

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._telemetry is not None:
            self._telemetry.stop()
            self._telemetry = None

    @property
    def telemetry(self) -> Telemetry | None:
        """The running session, or None when not instrumented."""
        return self._telemetry

    def _session(self) -> Telemetry:
        if self._telemetry is None:
            msg = "PollyInstrumentor is not instrumented: call instrument() first"
            raise RuntimeError(msg)
        return self._telemetry

    def register_engine(self, engine: Any, name: str | None = None) -> str:
        """Report a SQLAlchemy engine created after ``instrument()``; returns its pool name."""
        return self._session().pools.add_engine(engine, name)

    def register_redis_pool(self, pool: Any, name: str | None = None) -> str:
        """Report a redis-py connection pool created after ``instrument()``; returns its pool name."""
        return self._session().pools.add_redis_pool(pool, name)

    def register_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the census and the asyncio task sampler on ``loop`` from now on."""
        self._session().attach_loop(loop)
