"""Pre-fork workers: each forked worker reports its own process and runs its own census."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
import warnings
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from opentelemetry.instrumentation.polly import Options, PollyInstrumentor

from tests.instrumentation.helpers import collect, new_provider, points, value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


class WorkerZeroThing:
    pass


class WorkerOneThing:
    pass


#: Each worker's own allocation: a different RSS and a different class on top of the census.
SHAPES = {0: (WorkerZeroThing, 120_000, 160_000_000), 1: (WorkerOneThing, 60_000, 20_000_000)}


def _worker(index: int, conn: multiprocessing.connection.Connection, instrumentor: Any, reader: Any) -> None:
    cls, count, ballast_bytes = SHAPES[index]
    things = [cls() for _ in range(count)]
    ballast = bytearray(ballast_bytes)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: it is resident
    telemetry = instrumentor.telemetry
    deadline = time.monotonic() + 30
    while telemetry.census.censuses < 2 and time.monotonic() < deadline:  # the child's own censuses
        time.sleep(0.05)
    metrics = collect(reader)
    reported = value(metrics["process.memory.usage"])
    real = psutil.Process().memory_info().rss
    types = {dict(k)["polly.gc.object.type"]: v for k, v in points(metrics["polly.gc.object.count"]).items()}
    conn.send((telemetry.census.censuses, reported, real, types))
    conn.close()
    del things, ballast


@pytest.fixture
def forked_instrumentor() -> Iterator[tuple[PollyInstrumentor, Any]]:
    provider, reader = new_provider()
    instrumentor = PollyInstrumentor()
    instrumentor.instrument(
        meter_provider=provider, options=Options(interval_seconds=0.5, top_n_classes=40), sources=[]
    )
    yield instrumentor, reader
    instrumentor.uninstrument()
    provider.shutdown()


def test_two_forked_workers_report_their_own_process_and_census(
    forked_instrumentor: tuple[PollyInstrumentor, Any],
) -> None:
    instrumentor, reader = forked_instrumentor
    parent_rss = value(collect(reader)["process.memory.usage"])
    context = multiprocessing.get_context("fork")
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
        for index in SHAPES:
            ours, theirs = context.Pipe(duplex=False)
            worker = context.Process(target=_worker, args=(index, theirs, instrumentor, reader))
            worker.start()
            theirs.close()
            assert ours.poll(60), f"worker {index} sent nothing"
            results[index] = ours.recv()
            worker.join(30)
            assert worker.exitcode == 0
    for index, (censuses, reported, real, types) in results.items():
        assert censuses >= 2, f"worker {index} ran no census of its own"
        assert abs(reported - real) <= 0.10 * real, f"worker {index}: reported {reported}, real {real}"
        own = f"{__name__}.{SHAPES[index][0].__qualname__}"
        other = f"{__name__}.{SHAPES[1 - index][0].__qualname__}"
        assert types.get(own, 0) >= SHAPES[index][1], (index, sorted(types)[:10])
        assert other not in types
    # the two workers differ from each other and from the parent (no one reports the parent's RSS)
    assert results[0][1] > results[1][1] + 100_000_000
    assert results[0][1] > parent_rss + 100_000_000
