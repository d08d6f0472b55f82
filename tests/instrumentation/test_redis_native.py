"""redis-py's own OpenTelemetry metrics and the instrumentation's together: one pool name, no series twice.

redis-py (>= 7.1) emits ``db.client.connection.count`` and ``.create_time`` for its pools with its
``CONNECTION_BASIC`` metric group and ``.timeouts`` and ``.wait_time`` with ``CONNECTION_ADVANCED``,
on the global MeterProvider. A child process (the global provider can be set once per process) turns
them on, instruments with discovery, uses a sync and an asyncio pool against the Redis server and
prints every ``db.client.connection.*`` point of both meters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.polly import _coexist, _pools

from tests.instrumentation.helpers import SCOPE, collect, new_provider, points

pytestmark = [pytest.mark.timeout(120)]

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys

    from opentelemetry import metrics
    from opentelemetry.instrumentation.polly import Options, PollyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import redis
    import redis.asyncio as aioredis
    from redis.observability.config import MetricGroup, OTelConfig
    from redis.observability.providers import get_observability_instance

    url, groups = sys.argv[1], sys.argv[2].split(",")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    get_observability_instance().init(OTelConfig(metric_groups=[getattr(MetricGroup, g) for g in groups]))
    PollyInstrumentor().instrument(meter_provider=provider, options=Options(leak_warmup_seconds=0))

    sync_pool = redis.ConnectionPool.from_url(url, max_connections=4)
    client = redis.Redis(connection_pool=sync_pool)
    client.set("polly-native-test", "1")
    client.get("polly-native-test")

    async def use_async():
        pool = aioredis.ConnectionPool.from_url(url, max_connections=3)
        aclient = aioredis.Redis(connection_pool=pool)
        await asyncio.gather(*(aclient.get("polly-native-test") for _ in range(3)))
        points = collect()
        await aclient.aclose()
        return points

    def collect():
        out = []
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name.startswith("db.client.connection."):
                        for point in metric.data.data_points:
                            out.append([sm.scope.name, metric.name, dict(point.attributes)])
        return out

    print(json.dumps(asyncio.run(use_async())))
    client.close()
    """
)

POLLY = SCOPE


def _run(tmp_path: Path, redis_url: str, groups: str) -> list[tuple[str, str, dict[str, object]]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, str(script), redis_url, groups],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(p) for p in json.loads(result.stdout.splitlines()[-1])]


@pytest.mark.redis
@pytest.mark.parametrize("groups", ["CONNECTION_BASIC", "CONNECTION_BASIC,CONNECTION_ADVANCED"])
def test_redis_pools_join_redis_py_native_metrics_under_one_name(
    tmp_path: Path, redis_url: str, groups: str
) -> None:
    pytest.importorskip("redis.observability.config", reason="this redis-py has no native metrics (< 7.1)")
    points = _run(tmp_path, redis_url, groups)
    scopes: dict[tuple[str, object, object], set[str]] = defaultdict(set)
    for scope, metric, attrs in points:
        key = (metric, attrs.get("db.client.connection.pool.name"), attrs.get("db.client.connection.state"))
        scopes[key].add(scope)
    twice = {key: names for key, names in scopes.items() if len(names) > 1}
    assert twice == {}, "series emitted by both meters"

    native = {a["db.client.connection.pool.name"] for s, m, a in points if s != POLLY}
    ours = {
        a["db.client.connection.pool.name"]
        for s, m, a in points
        if s == POLLY and a.get("db.system.name") == "redis"
    }
    assert len(native) == 2, native  # the sync and the asyncio pool, as redis-py names them
    assert ours == native  # polly's .max / .idle.max of the same pools carry redis-py's names
    ours_metrics = {m for s, m, a in points if s == POLLY and a.get("db.system.name") == "redis"}
    assert "db.client.connection.max" in ours_metrics
    assert "db.client.connection.count" not in ours_metrics  # left to redis-py
    native_metrics = {m for s, m, a in points if s != POLLY}
    assert "db.client.connection.count" in native_metrics


@dataclass(frozen=True)
class _Pool:
    name: str
    system: str = "redis"
    max_connections: int = 10
    max_idle: int = 10
    used: int = 1
    idle: int = 2
    pending: int = 0
    timeouts: int = 3


@dataclass(frozen=True)
class _Duration:
    kind: str
    pool_name: str
    system: str
    seconds: float = 0.004


class _AppSource:
    """An application's own source reporting a redis pool with timeouts and durations (as polly's)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []

    def pools(self) -> list[_Pool]:
        return [_Pool("cache:6379_ab12cd34"), _Pool("db:5432/app", system="postgresql")]

    def caches(self) -> list[Any]:
        return []

    def breakers(self) -> list[Any]:
        return []

    def tasks(self) -> None:
        return None

    def owns(self, _pool: object) -> bool:
        return False

    def add_duration_listener(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: None


@pytest.mark.parametrize(
    ("native", "left_to_redis_py"),
    [
        (frozenset(), set()),
        (_coexist.REDIS_NATIVE_GROUPS["CONNECTION_BASIC"], {"count", "create_time"}),
        (
            frozenset(_coexist.REDIS_NATIVE_GROUPS["CONNECTION_BASIC"])
            | frozenset(_coexist.REDIS_NATIVE_GROUPS["CONNECTION_ADVANCED"]),
            {"count", "create_time", "timeouts", "wait_time"},
        ),
    ],
)
def test_an_application_source_leaves_redis_py_its_own_metrics(
    monkeypatch: pytest.MonkeyPatch, native: frozenset[str], left_to_redis_py: set[str]
) -> None:
    monkeypatch.setattr(_pools, "redis_native_metrics", lambda: frozenset(native))
    monkeypatch.setattr(
        _pools, "redis_native_connection_count", lambda: "db.client.connection.count" in native
    )
    provider, reader = new_provider()
    source = _AppSource()
    _pools.PoolSignals(provider.get_meter(SCOPE), [source])
    for kind in ("wait_time", "create_time", "use_time"):
        for pool, system in (("cache:6379_ab12cd34", "redis"), ("db:5432/app", "postgresql")):
            for listener in source.listeners:
                listener(_Duration(kind, pool, system))
    found = collect(reader)
    for short in ("count", "create_time", "timeouts", "wait_time", "use_time", "max"):
        metric = f"db.client.connection.{short}"
        systems = (
            {dict(key).get("db.system.name") for key in points(found[metric])} if metric in found else set()
        )
        assert "postgresql" in systems, metric  # other pools are never affected
        assert ("redis" in systems) is (short not in left_to_redis_py), metric
