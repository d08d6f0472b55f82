"""``PollyInstrumentor``: the ``BaseInstrumentor`` entry point, zero-code or by hand.

Zero-code (``opentelemetry-instrument python app.py``) finds it through the
``opentelemetry_instrumentor`` entry point ``polly``. By hand::

    PollyInstrumentor().instrument(
        meter_provider=provider,        # default: the global one
        engines=[engine, async_engine], # extra SQLAlchemy engines, e.g. with a name of your own
        redis_pools=[pool],             # extra redis-py ConnectionPools (sync or asyncio)
        loop=loop,                      # default: the running loop, else a daemon thread
        options=Options(...),           # default: Options.from_env()
        sources=[source],               # seam.StatsSource objects; default: the entry points
        discover=True,                  # find every engine, redis-py pool and asyncio loop
    )
    PollyInstrumentor().register_engine(engine, name=None)       # returns the pool name
    PollyInstrumentor().register_redis_pool(pool, name=None)
    PollyInstrumentor().register_loop(loop)                       # move the census onto a loop
    PollyInstrumentor().uninstrument()                            # every callback goes silent
    await PollyInstrumentor().aclose()          # the same, from a coroutine

Every SQLAlchemy engine, redis-py pool and asyncio or uvloop loop is found without these calls
(``_discovery``, ``_tasks``); the ``register_*`` calls remain for a name of your choosing and for
other loop implementations. When the instrumentation is not active (not instrumented,
or ``OTEL_SDK_DISABLED=true``) they do nothing and log one DEBUG line.

``OTEL_SDK_DISABLED=true``: ``instrument()`` starts nothing: no thread, no gc callback, no wrapper.

Under ``opentelemetry-instrument`` there is no loop yet at instrument time, so the census runs on
a daemon thread (``polly-census``) that yields the GIL between slices. Sessions restart in forked
children (pre-fork servers): each worker reports its own process and runs its own census.

The SDK cannot delete instruments, so one session is kept per MeterProvider and is resumed by a
later ``instrument()`` on the same provider (the census name budget is per provider, for life).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Collection, Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.polly._config import Options, sdk_disabled
from opentelemetry.instrumentation.polly._core import Telemetry, fork_aware
from opentelemetry.instrumentation.polly.seam import ENTRY_POINT_GROUP, StatsSource
from opentelemetry.instrumentation.polly.version import __version__
from opentelemetry.metrics import MeterProvider, get_meter, get_meter_provider

SCOPE = "opentelemetry.instrumentation.polly"
#: The semantic-conventions version the names follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

logger = logging.getLogger("opentelemetry.instrumentation.polly")

_SESSIONS: weakref.WeakKeyDictionary[MeterProvider, Telemetry] = weakref.WeakKeyDictionary()


def installed_sources() -> list[StatsSource]:
    """The sources named in the entry-point group ``opentelemetry_instrumentation_polly_sources``."""
    found: list[StatsSource] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(ep.load()())
        except Exception:
            logger.exception("stats source %s (%s) failed to load; continuing without it", ep.name, ep.value)
    return found


def session_for(
    provider: MeterProvider,
    options: Options,
    sources: Sequence[StatsSource],
    loop: asyncio.AbstractEventLoop | None,
    *,
    thread_fallback: bool = True,
    discover: bool = True,
) -> Telemetry:
    """The session of ``provider``, created and started, or resumed if it was stopped."""
    telemetry = _SESSIONS.get(provider)
    if telemetry is None:
        meter = get_meter(SCOPE, __version__, provider, schema_url=SCHEMA_URL)
        telemetry = Telemetry(meter, options, sources)
        _SESSIONS[provider] = telemetry
        fork_aware(telemetry)
        telemetry.start(loop, thread_fallback=thread_fallback)
        if discover:
            telemetry.discover()
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
        return ()  # every library it reads is optional and detected

    def _instrument(self, **kwargs: Any) -> None:
        if sdk_disabled():
            logger.debug("OTEL_SDK_DISABLED=true: the polly instrumentation starts nothing")
            return
        provider: MeterProvider = kwargs.get("meter_provider") or get_meter_provider()
        options: Options = kwargs.get("options") or Options.from_env()
        sources: Sequence[StatsSource] | None = kwargs.get("sources")
        if sources is None:
            sources = installed_sources()
        loop = kwargs.get("loop") or _running_loop()
        telemetry = session_for(provider, options, sources, loop, discover=kwargs.get("discover", True))
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

    async def aclose(self) -> None:
        """:meth:`uninstrument` from a coroutine."""
        telemetry = self._telemetry
        if self.is_instrumented_by_opentelemetry:
            self.uninstrument()
        if telemetry is not None:
            await telemetry.aclose()

    @property
    def telemetry(self) -> Telemetry | None:
        """The running session, or None when not instrumented."""
        return self._telemetry

    def _session(self, call: str) -> Telemetry | None:
        if self._telemetry is None:
            logger.debug("%s ignored: the polly instrumentation is not active", call)
        return self._telemetry

    def register_engine(self, engine: Any, name: str | None = None) -> str | None:
        """Report a SQLAlchemy engine (under ``name``); returns its pool name, None if inactive."""
        telemetry = self._session("register_engine")
        return None if telemetry is None else telemetry.pools.add_engine(engine, name)

    def register_redis_pool(self, pool: Any, name: str | None = None) -> str | None:
        """Report a redis-py connection pool (under ``name``); returns its pool name, None if inactive."""
        telemetry = self._session("register_redis_pool")
        return None if telemetry is None else telemetry.pools.add_redis_pool(pool, name)

    def register_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the census on ``loop`` and count its tasks from now on (any loop, uvloop too)."""
        telemetry = self._session("register_loop")
        if telemetry is not None:
            telemetry.attach_loop(loop)
