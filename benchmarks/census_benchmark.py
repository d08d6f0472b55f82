"""gc class census cost against its anchors, at 1 M and 3 M GC-tracked objects, in one run.

    uv run python benchmarks/census_benchmark.py [--sizes 1000000,3000000] [--repeat 3]
        [--baseline OTHER/instrumentation]   # another version's census, measured in the same process

Per size it prints, all measured in this process:

* CPU ns per tracked object of: ``gc.get_objects()`` alone (the floor), a per-object
  ``sys.getsizeof`` loop, ``objgraph.most_common_types``, and polly's census (counts + top-N size
  estimate), with the census's ratio to each anchor;
* the longest event-loop stall during a census driven on an asyncio loop (a 1 ms loop-lag probe),
  and the longest single census slice;
* extra peak memory during a census (tracemalloc) per tracked object, and what is left afterwards;
* the whole instrumentation at default settings: one census plus one full metric collection per
  60 s interval, as a share of one core.

Targets (the issue): census <= 100 ns/object, >= 4x faster than objgraph, stall <= 50 ms at 3 M,
extra peak <= 16 B/object released afterwards, whole instrumentation <= 0.5 % of one core at 1 M.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "instrumentation"))

import objgraph
from opentelemetry.instrumentation.polly._census import TypeNameBudget, census_steps
from opentelemetry.instrumentation.polly._config import Options
from opentelemetry.instrumentation.polly._core import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


class Vote:
    __slots__ = ("poll", "user")

    def __init__(self, poll: int, user: int) -> None:
        self.poll = poll
        self.user = user


class Session:
    def __init__(self, i: int) -> None:
        self.i = i


def build_heap(target: int) -> list[object]:
    """Grow the GC-tracked population to about ``target`` objects of a realistic mix."""
    heap: list[object] = []
    need = target - len(gc.get_objects())
    for i in range(max(0, need)):
        r = i % 10
        if r < 5:
            heap.append(Vote(i, i))
        elif r < 7:
            heap.append([i])
        elif r < 9:
            heap.append(Session(i))  # instance + (not tracked) key-sharing dict
        else:
            heap.append({"k": [i]})
    return heap


def cpu(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()  # type: ignore[operator]
        best = min(best, time.thread_time() - t0)
    return best


def anchor_get_objects() -> None:
    objects = gc.get_objects()
    del objects


def anchor_getsizeof_loop() -> None:
    sizes: dict[type, int] = {}
    getsizeof = sys.getsizeof
    for obj in gc.get_objects():
        t = type(obj)
        sizes[t] = sizes.get(t, 0) + getsizeof(obj)


def anchor_objgraph() -> None:
    objgraph.most_common_types(limit=50)


def anchor_objgraph_long() -> None:
    # the same output as the census (module-qualified names): the like-for-like anchor
    objgraph.most_common_types(limit=50, shortnames=False)


def census() -> None:
    for _ in census_steps(TypeNameBudget(200), 50):
        pass


def load_baseline(tree: str) -> Any:
    """The ``_census`` module of another checkout's ``instrumentation/`` directory, as its own module."""
    path = Path(tree) / "opentelemetry" / "instrumentation" / "polly" / "_census.py"
    spec = importlib.util.spec_from_file_location("baseline_census", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: no census module at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def versus_baseline(baseline: Any, repeat: int) -> tuple[float, float]:
    """Best CPU of this census and of the baseline's, alternating ``repeat`` times (seconds)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, module in enumerate((sys.modules[census_steps.__module__], baseline)):
            t0 = time.thread_time()
            for _ in module.census_steps(module.TypeNameBudget(200), 50):
                pass
            best[i] = min(best[i], time.thread_time() - t0)
    return best[0], best[1]


async def loop_lag(period: float = 0.001) -> tuple[float, float, float]:
    """Worst probe lateness, longest census slice, longest gc pause inside the window (seconds)."""
    budget = TypeNameBudget(200)
    worst = 0.0
    done = False
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    async def probe() -> None:
        nonlocal worst
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(period)
            worst = max(worst, time.perf_counter() - t0 - period)

    # The benchmark just built millions of objects: settle the collector first so a full collection
    # it owes the heap (an application cost, not the census's) does not land inside the window.
    gc.collect()
    task = asyncio.get_running_loop().create_task(probe())
    await asyncio.sleep(0.05)
    worst = 0.0
    longest = 0.0
    gc.callbacks.append(on_gc)
    for step in census_steps(budget, 50):
        if step is None:
            await asyncio.sleep(0)
        else:
            longest = step.max_slice_seconds
    done = True
    await task
    gc.callbacks.remove(on_gc)
    return worst, longest, max(pauses, default=0.0)


def peak_memory() -> tuple[int, int]:
    gc.disable()  # keep collector noise out of the measurement
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    census()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.enable()
    return peak - base, current - base


def whole_instrumentation(interval: float = 60.0) -> tuple[float, float, float]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(provider.get_meter("bench"), Options())
    try:
        census_cpu = cpu(telemetry.census.census_now, repeat=2)
        hooks_cpu = cpu(telemetry.census._run_hooks, repeat=3)  # noqa: SLF001 - the hooks alone
        collect_cpu = cpu(reader.get_metrics_data, repeat=3)
    finally:
        telemetry.stop()
        provider.shutdown()
    share = (census_cpu + hooks_cpu + collect_cpu) / interval * 100
    return census_cpu, collect_cpu + hooks_cpu, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,3000000")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the census CPU")
    parser.add_argument("--baseline", help="another checkout's instrumentation/ directory to compare with")
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    keep: list[object] = []
    print(f"python {sys.version.split()[0]}")
    for size in (int(s) for s in args.sizes.split(",")):
        keep.extend(build_heap(size))
        n = len(gc.get_objects())
        print(f"\n== {n:,} GC-tracked objects ==")
        floor = cpu(anchor_get_objects) / n * 1e9
        sizeof = cpu(anchor_getsizeof_loop, repeat=1) / n * 1e9
        og = cpu(anchor_objgraph, repeat=1) / n * 1e9
        og_long = cpu(anchor_objgraph_long, repeat=1) / n * 1e9
        ours = cpu(census, repeat=args.repeat) / n * 1e9
        print(f"gc.get_objects() alone        {floor:7.1f} ns/object")
        print(f"per-object sys.getsizeof loop {sizeof:7.1f} ns/object")
        print(f"objgraph.most_common_types    {og:7.1f} ns/object   (short names: merges same-named classes)")
        print(f"  same, shortnames=False      {og_long:7.1f} ns/object   (module-qualified, as the census)")
        print(f"polly census (counts + sizes) {ours:7.1f} ns/object   target <= 100")
        print(
            f"  ratio: census / get_objects {ours / floor:5.2f}x; objgraph / census {og / ours:5.2f}x, "
            f"objgraph long names / census {og_long / ours:5.2f}x (target >= 4); "
            f"getsizeof loop / census {sizeof / ours:5.2f}x"
        )
        if baseline is not None:
            mine, theirs = versus_baseline(baseline, args.repeat)
            print(
                f"  same process, alternating, best of {args.repeat}: this census {mine / n * 1e9:.1f} "
                f"ns/object, baseline {theirs / n * 1e9:.1f} ns/object ({theirs / mine:.2f}x)"
            )
        stall, longest, pause = asyncio.run(loop_lag())
        print(
            f"longest loop stall (1 ms probe lateness) {stall * 1e3:6.1f} ms; longest census slice "
            f"{longest * 1e3:6.1f} ms; longest gc pause in the window {pause * 1e3:.1f} ms   target <= 50 ms"
        )
        peak, left = peak_memory()
        print(
            f"extra peak memory {peak / n:5.2f} B/object ({peak / 2**20:.1f} MiB); left afterwards "
            f"{left / 2**10:.1f} KiB   target <= 16 B/object"
        )
        if size == 1_000_000 or size == min(int(s) for s in args.sizes.split(",")):
            c, k, share = whole_instrumentation()
            print(
                f"whole instrumentation, defaults: census {c * 1e3:.1f} ms + collect/hooks {k * 1e3:.1f} ms "
                f"per 60 s = {share:.3f} % of one core   target <= 0.5 %"
            )


if __name__ == "__main__":
    main()
