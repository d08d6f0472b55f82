"""The whole instrumentation's CPU share, measured over real time on a live asyncio process.

    uv run python benchmarks/overhead_benchmark.py [--objects 1000000] [--minutes 5]

One process builds a heap of ``--objects`` GC-tracked objects and runs an asyncio loop that does a
little work every 10 ms (the anchor: the same loop with no instrumentation, measured first for the
same length of time). Then the instrumentation starts at its default settings (census every 60 s,
every signal on, a metric collection every 60 s as a periodic exporter would do) and the process's
CPU time is measured again. Printed: CPU seconds of each window and the instrumentation's share of
one core, (instrumented - anchor) / wall time. The issue's target is <= 0.5 % of one core at 1 M.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "instrumentation"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from census_benchmark import build_heap
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


async def window(seconds: float, reader: InMemoryMetricReader | None, collect_every: float) -> float:
    """CPU seconds the process used during ``seconds`` of a lightly busy loop."""
    process = psutil.Process()
    start_cpu = sum(process.cpu_times()[:2])
    start = time.monotonic()
    next_collect = start + collect_every
    while (now := time.monotonic()) - start < seconds:
        await asyncio.sleep(0.01)
        if reader is not None and now >= next_collect:
            reader.get_metrics_data()
            next_collect += collect_every
    return sum(process.cpu_times()[:2]) - start_cpu


async def run(objects: int, minutes: float) -> None:
    heap = build_heap(objects)
    seconds = minutes * 60
    print(f"heap: {len(heap):,} objects built; {minutes:g} min per window")
    anchor = await window(seconds, None, 60.0)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(provider.get_meter("bench"), Options())
    telemetry.start(asyncio.get_running_loop())
    try:
        instrumented = await window(seconds, reader, 60.0)
    finally:
        telemetry.stop()
        provider.shutdown()
    share = (instrumented - anchor) / seconds * 100
    print(f"anchor (loop alone)      : {anchor:.3f} s CPU in {seconds:.0f} s")
    print(f"with the instrumentation : {instrumented:.3f} s CPU in {seconds:.0f} s")
    print(f"instrumentation share    : {share:.3f} % of one core (target <= 0.5 %)")
    del heap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(run(args.objects, args.minutes))


if __name__ == "__main__":
    main()
