"""Zero-code task counting on uvloop: its loop is found when it starts, with no ``register_loop()``.

uvloop is not a dependency of anything here: it is installed from the registry into a directory of
its own, put on the path of one child process that instruments itself as ``opentelemetry-instrument``
does (``instrument()`` before any loop exists) and then runs its application on uvloop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.instrumentation.wheels import uv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

APPLICATION = textwrap.dedent(
    """
    import asyncio, json, sys

    from opentelemetry.instrumentation.polly import Options, PollyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import uvloop

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    PollyInstrumentor().instrument(
        meter_provider=provider, options=Options(task_sample_interval_seconds=0.05, leak_warmup_seconds=0)
    )

    def task_counts():
        found = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "polly.task.count":
                        for point in metric.data.data_points:
                            found[point.attributes["polly.task.name"]] = point.value
        return found

    async def handle_request(gate):
        await gate.wait()

    async def main():
        gate = asyncio.Event()
        requests = [asyncio.create_task(handle_request(gate)) for _ in range(3)]
        await asyncio.sleep(0.3)
        during = task_counts()
        gate.set()
        await asyncio.gather(*requests)
        await asyncio.sleep(0.3)
        after = task_counts()
        return {"loop": type(asyncio.get_running_loop()).__module__, "during": during, "after": after}

    print(json.dumps(uvloop.run(main())))
    """
)


@pytest.fixture(scope="module")
def uvloop_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("uvloop")
    result = subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", sys.executable, "--target", str(where), "uvloop"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return where


def test_tasks_on_a_uvloop_loop_are_counted_with_no_registration(uvloop_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APPLICATION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(uvloop_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loop"].startswith("uvloop")
    assert report["during"].get("handle_request") == 3, report
    assert report["after"].get("handle_request", 0) == 0, report  # finished request tasks are gone
