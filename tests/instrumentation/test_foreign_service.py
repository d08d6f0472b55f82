"""Zero-code acceptance: a foreign aiohttp service in a clean venv, under ``opentelemetry-instrument``.

The venv holds only ``opentelemetry-distro``, the OTLP exporter, the built instrumentation wheel
and the service's own libraries (aiohttp, SQLAlchemy with asyncpg, redis-py); the service has no
instrumentation code. A real OTLP gRPC receiver on loopback must get the gc census, gc pauses,
process metrics, the pool set of both pools and task counts that include aiohttp's request tasks.
The same runs on the oldest supported SQLAlchemy (1.4) and redis-py (5).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.instrumentation.receivers import GrpcReceiver, Received, free_port
from tests.instrumentation.wheels import installed, venv, wheel

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

SERVICE = Path(__file__).with_name("foreign") / "service.py"
BASE = ["opentelemetry-distro", "opentelemetry-exporter-otlp-proto-grpc", "aiohttp", "asyncpg"]
LIBRARIES = {
    "current": ["sqlalchemy[asyncio]>=2.0", "redis>=7.0"],
    "oldest": ["sqlalchemy[asyncio]>=1.4,<1.5", "redis>=5.0,<6"],
}
FORBIDDEN = {"discord-py", "psycopg", "psycopg-binary", "click", "polly"}
POOL_METRICS = (
    "db.client.connection.count",
    "db.client.connection.max",
    "db.client.connection.idle.max",
    "db.client.connection.pending_requests",
    "db.client.connection.timeouts",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
    "db.client.connection.create_time",
)
REDIS_METRICS = ("db.client.connection.count", "db.client.connection.max", "db.client.connection.idle.max")


def _attrs(point: Any) -> dict[str, Any]:
    out = {}
    for kv in point.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


def _series(received: Received) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Every point received: metric name -> [(attributes, value)] (histograms: their count)."""
    found: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    with received.lock:
        requests = list(received.requests)
    for request in requests:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for p in getattr(metric, kind).data_points:
                        if kind == "histogram":
                            value = float(p.count)
                        else:
                            value = float(p.as_int if p.HasField("as_int") else p.as_double)
                        found[metric.name].append((_attrs(p), value))
    return found


def _last_task_counts(received: Received) -> dict[str, float]:
    """``polly.task.count`` of the last export that has it."""
    with received.lock:
        requests = list(received.requests)
    for request in reversed(requests):
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "polly.task.count":
                        return {_attrs(p)["polly.task.name"]: float(p.as_int) for p in metric.sum.data_points}
    return {}


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=20) as response:
        return int(response.status)


def _wait_up(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited: {process.communicate()[1][-3000:]}")
        try:
            _get(url)
        except OSError:
            time.sleep(0.2)
        else:
            return
    pytest.fail("the service did not answer")


@pytest.mark.parametrize("libraries", sorted(LIBRARIES))
def test_foreign_service_reports_everything_zero_code(
    libraries: str, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    python = venv(
        tmp_path / "venv", *BASE, *LIBRARIES[libraries], wheel("opentelemetry_instrumentation_polly")
    )
    packages = installed(python)
    assert "opentelemetry-instrumentation-polly" in packages
    assert packages & FORBIDDEN == set(), sorted(packages)
    received = Received()
    receiver = GrpcReceiver(free_port(), received)
    receiver.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POLLY_"))},
        "SERVICE_PORT": str(port),
        "SERVICE_DATABASE_URL": postgres_url.replace(
            "postgresql+psycopg://", "postgresql+asyncpg://"
        ).replace("postgresql://", "postgresql+asyncpg://"),
        "SERVICE_REDIS_URL": redis_url,
        "OTEL_SERVICE_NAME": "foreign",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_PYTHON_POLLY_CENSUS_INTERVAL": "2",
        "OTEL_PYTHON_POLLY_TASK_SAMPLE_INTERVAL": "0.2",
    }
    command = [str(python.with_name("opentelemetry-instrument")), str(python), str(SERVICE)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", process)
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(_get, f"http://127.0.0.1:{port}/work?sleep=4") for _ in range(4)]
            time.sleep(3)  # the slow requests are in flight through at least two exports
            assert _get(f"http://127.0.0.1:{port}/work") == 200
            assert [f.result() for f in slow] == [200] * 4
        time.sleep(2.5)  # exports after the requests ended
    finally:
        process.terminate()
        try:
            _out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _out, err = process.communicate()
        receiver.stop()
    series = _series(received)
    for name in (
        "polly.gc.object.count",
        "polly.gc.object.size",
        "polly.gc.pause.duration",
        "process.memory.usage",
        "process.cpu.time",
        "process.cpu.utilization",
        "process.uptime",
    ):
        assert series.get(name), f"{name} not received; stderr: {err[-2000:]}"  # fmt: skip
    pg_name = "127.0.0.1:5432/" + postgres_url.rsplit("/", 1)[1]
    for name in POOL_METRICS:
        pools = {a.get("db.client.connection.pool.name") for a, _ in series.get(name, [])}
        assert pg_name in pools, f"{name}: {pools}"
    redis_name = "127.0.0.1:6379/" + redis_url.rsplit("/", 1)[1]
    for name in REDIS_METRICS:
        pools = {a.get("db.client.connection.pool.name") for a, _ in series.get(name, [])}
        assert redis_name in pools, f"{name}: {pools}"
    idle = [
        v
        for a, v in series["db.client.connection.count"]
        if a.get("db.client.connection.pool.name") == pg_name
        and a.get("db.client.connection.state") == "idle"
    ]
    assert max(idle) >= 1  # connections went back to the pool
    tasks = {a["polly.task.name"]: v for a, v in series["polly.task.count"]}
    assert any("_handle_request" in name for name in tasks), sorted(tasks)
    peak = max(v for a, v in series["polly.task.count"] if "_handle_request" in a["polly.task.name"])
    assert peak >= 4  # the four slow requests, alive together
    final = _last_task_counts(received)
    assert not any("_handle_request" in name and v > 0 for name, v in final.items()), final  # finished: gone
    assert "leak suspects" not in err
    assert "Traceback" not in err, err[-3000:]
