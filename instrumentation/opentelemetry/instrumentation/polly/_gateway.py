"""Gateway connection metrics, from the sources with a ``gateways()`` method (:class:`~.seam.GatewaySource`).

Per connection (``polly.gateway.name``, e.g. ``discord``):

- ``polly.gateway.state`` (``{state}``): a *state set*, as ``hw.status`` is: one series per state
  (``polly.gateway.state`` attribute ``connecting`` | ``connected`` | ``resuming`` | ``down``), 1 for
  the current state and 0 for the others;
- ``polly.gateway.state.since`` (``s``): Unix time the current state began (so a panel can show
  "down for 3 min");
- ``polly.gateway.latency`` (``s``): the last heartbeat round trip, only while connected;
- cumulative ``polly.gateway.identifies`` (``{session}``), ``polly.gateway.resumes`` (``{resume}``),
  ``polly.gateway.reconnects`` (``{reconnect}``) and ``polly.gateway.outages`` (``{outage}``).

Connection names come from the application, one per client, so the attribute set stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.instrumentation.polly.seam import GATEWAY_STATES, GatewayReading
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger("opentelemetry.instrumentation.polly")

NAME = "polly.gateway.name"
STATE = "polly.gateway.state"

_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class GatewaySignals:
    def __init__(self, meter: Meter, sources: Sequence[object]) -> None:
        self.active = True
        self._sources = tuple(sources)
        updown = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        gauge = meter.create_observable_gauge
        updown(STATE, [self._observe_state], unit="{state}",
               description="Gateway state set: 1 for the current state, 0 for the others")  # fmt: skip
        gauge("polly.gateway.state.since", [self._read(lambda g: g.state_since)], unit="s",
              description="Unix time the gateway entered its current state")  # fmt: skip
        gauge("polly.gateway.latency", [self._read(lambda g: g.latency_seconds)], unit="s",
              description="Last heartbeat round trip, while connected")  # fmt: skip
        counter("polly.gateway.identifies", [self._read(lambda g: g.identifies)], unit="{session}",
                description="New gateway sessions (READY)")  # fmt: skip
        counter("polly.gateway.resumes", [self._read(lambda g: g.resumes)], unit="{resume}",
                description="Gateway sessions resumed (RESUMED)")  # fmt: skip
        counter("polly.gateway.reconnects", [self._read(lambda g: g.reconnects)], unit="{reconnect}",
                description="Times the gateway connection came back after being lost")  # fmt: skip
        counter("polly.gateway.outages", [self._read(lambda g: g.outages)], unit="{outage}",
                description="Times the gateway went down (reconnect attempts failing)")  # fmt: skip

    def _gateways(self) -> list[GatewayReading]:
        out: list[GatewayReading] = []
        for source in self._sources:
            read = getattr(source, "gateways", None)
            if read is None:
                continue
            try:
                out.extend(read())
            except Exception:
                logger.exception("stats source %r failed", source)
        return out

    def _observe_state(self, _options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return ()
        return [
            Observation(int(g.state == state), {NAME: g.name, STATE: state})
            for g in self._gateways()
            for state in GATEWAY_STATES
        ]

    def _read(self, read: Callable[[GatewayReading], float | int | None]) -> _Callback:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            values = [(read(g), g.name) for g in self._gateways()]
            return [Observation(v, {NAME: name}) for v, name in values if v is not None]

        return callback
