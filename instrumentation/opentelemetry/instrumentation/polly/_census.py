"""The gc class census: live GC-tracked objects counted by class, top N named, the rest ``other``.

How it stays cheap (figures in ``benchmarks/census_benchmark.py``):

* objects are listed one generation at a time (``gc.get_objects(gen)``), so the longest single
  stall is the largest generation's listing (~14 ns per object), never the whole heap at once;
* counting is ``collections._count_elements`` (the C loop behind ``Counter``) over ``map(type, ...)``
  on slices of ``chunk_size`` objects, read through one iterator over the listing from its end (no
  copy per slice); :func:`census_steps` yields between slices so the driver can give the event loop (or the
  GIL) back;
* each slice is cut off the listing's end right after it is counted, so freeing the listing is
  spread over the slices rather than one more stall at the end;
* shallow size is estimated from a stride sample (about ``sample_size`` objects per generation) with
  ``sys.getsizeof``; a class that got no sample falls back to its ``__basicsize__``;
* only one generation's list is alive at a time (8 bytes per object plus slack), and it is dropped
  before the next generation is listed. Nothing calls ``gc.collect()``;
* while a list is alive, automatic collections are *deferred* (``gc.disable()``, restored in a
  ``finally``, and only if the collector was enabled): the list is a young container, and every
  young collection would traverse all its entries (about 10 ns each, 30-50 ms at 3 M objects).
  The deferral lasts the census's wall time, capped at ``max_gc_deferral_seconds``; the first
  allocation afterwards runs the collection that was due. Nothing is skipped.

Only GC-tracked objects are seen: ints, strs and untracked dicts/tuples are not (CPython untracks
containers of atomic values), so the census is a view of containers and instances, not of all memory.

Type names are ``module.qualname``. :class:`TypeNameBudget` bounds the set of names ever reported
over the process lifetime; see its docstring.
"""

from __future__ import annotations

import gc
import heapq
import sys
import time
from collections import _count_elements  # type: ignore[attr-defined]  # C helper behind Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter

OTHER = "other"
#: The largest ``max_type_names`` honoured: the SDK aggregates at most 2 000 attribute sets per stream
#: for the process lifetime, and ``other`` needs one.
MAX_TYPE_NAMES_CAP = 1998
#: Per-census memory of names kept for leak tracking (the top of the count ranking).
LEAK_TRACK_TYPES = 1000


def type_name(cls: type) -> str:
    """``module.qualname`` of ``cls``; odd classes (non-str ``__module__``) still get a stable name."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = getattr(cls, "__name__", "?")
    if not isinstance(module, str):
        return str(qualname)
    return f"{module}.{qualname}"


class TypeNameBudget:
    """The set of class names the census has ever reported, capped at ``max_names``.

    A name admitted once stays admitted for the process lifetime (its series continues whenever the
    class is in the top N again); when the set is full, new entrants are reported as ``other``. The
    exported attribute values are therefore at most ``max_names + 1`` over the whole process, below
    the SDK's per-stream cardinality limit, so no ``otel.metric.overflow`` point can ever appear.
    """

    def __init__(self, max_names: int) -> None:
        if max_names < 1:
            msg = f"max_type_names must be at least 1, got {max_names}"
            raise ValueError(msg)
        self.max_names = min(max_names, MAX_TYPE_NAMES_CAP)
        self._admitted: set[str] = set()
        self.refused = 0

    def admit(self, name: str) -> bool:
        """Whether ``name`` may be reported under its own name (admitting it if there is room)."""
        if name in self._admitted:
            return True
        if len(self._admitted) >= self.max_names:
            self.refused += 1
            return False
        self._admitted.add(name)
        return True

    def __len__(self) -> int:
        return len(self._admitted)

    def names(self) -> frozenset[str]:
        return frozenset(self._admitted)


@dataclass(frozen=True, slots=True)
class TypeRow:
    """One reported class: live instances and estimated shallow bytes."""

    name: str
    count: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class CensusResult:
    """One finished census. ``rows`` are the named classes by count (descending), then ``other``.

    ``busy_seconds`` is the time the census held the thread it ran on (the sum of its slices);
    ``max_slice_seconds`` the longest single slice (the worst stall it caused).
    """

    rows: tuple[TypeRow, ...]
    total_objects: int
    total_size_bytes: int
    busy_seconds: float
    max_slice_seconds: float
    finished_at: float
    #: counts of the most numerous classes (up to ``LEAK_TRACK_TYPES``), for leak tracking
    top_counts: dict[str, int] = field(default_factory=dict)
    #: top N by count and by estimated size, by name, for the memory profiler log (not budgeted)
    by_count: tuple[TypeRow, ...] = ()
    by_size: tuple[TypeRow, ...] = ()


@dataclass(slots=True)
class _Tally:
    counts: dict[type, int] = field(default_factory=dict)
    sampled_bytes: dict[type, int] = field(default_factory=dict)
    sampled_n: dict[type, int] = field(default_factory=dict)


def census_steps(
    budget: TypeNameBudget,
    top_n: int,
    *,
    chunk_size: int = 50_000,
    sample_size: int = 10_000,
    max_gc_deferral_seconds: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Generator[CensusResult | None, None, None]:
    """Run one census in slices: yields ``None`` after each slice and the result last.

    The driver decides what to do between slices (``await asyncio.sleep(0)`` on a loop,
    ``time.sleep(0)`` on a thread). Closing the generator early abandons the census and frees its
    lists.
    """
    now = clock
    tally = _Tally()
    busy = 0.0
    longest = 0.0
    deferred = gc.isenabled()
    if deferred:
        gc.disable()
    deferred_at = now()
    try:
        for generation in (0, 1, 2):
            t0 = now()
            objects = gc.get_objects(generation)
            n = len(objects)
            dt = now() - t0
            busy += dt
            longest = max(longest, dt)
            # the listing is the one slice that cannot be split: give the loop back right after it
            yield None
            stride = max(1, n // sample_size) if sample_size > 0 else 0
            walk = reversed(objects)  # one iterator over the listing, from its end: no copy per slice
            while objects:
                t0 = now()
                stop = len(objects)
                start = max(0, stop - chunk_size)
                _count_elements(tally.counts, map(type, islice(walk, stop - start)))
                if stride:
                    _sample(tally, objects[start + (-start) % stride : stop : stride])
                # drop the slice's references now, while its objects are still in cache: freeing the
                # listing is spread over the slices instead of being one more stall at the end
                del objects[start:]
                dt = now() - t0
                busy += dt
                longest = max(longest, dt)
                if deferred and t0 - deferred_at > max_gc_deferral_seconds:
                    deferred = False
                    gc.enable()
                yield None
            del objects, walk
    finally:
        if deferred:
            gc.enable()
    t0 = now()
    result = _finish(tally, budget, top_n)
    dt = now() - t0
    yield CensusResult(
        rows=result[0],
        total_objects=result[1],
        total_size_bytes=result[2],
        busy_seconds=busy + dt,
        max_slice_seconds=max(longest, dt),
        finished_at=time.time(),
        top_counts=result[3],
        by_count=result[4],
        by_size=result[5],
    )


def _sample(tally: _Tally, sample: list[object]) -> None:
    sizes = tally.sampled_bytes
    ns = tally.sampled_n
    getsizeof = sys.getsizeof
    for obj in sample:
        cls = type(obj)
        try:
            size = getsizeof(obj)
        except TypeError:  # a broken __sizeof__ must not end the census
            continue
        sizes[cls] = sizes.get(cls, 0) + size
        ns[cls] = ns.get(cls, 0) + 1


def _mean_size(tally: _Tally, cls: type) -> float:
    n = tally.sampled_n.get(cls)
    if n:
        return tally.sampled_bytes[cls] / n
    return float(getattr(cls, "__basicsize__", 0) or 0)


def _finish(
    tally: _Tally, budget: TypeNameBudget, top_n: int
) -> tuple[tuple[TypeRow, ...], int, int, dict[str, int], tuple[TypeRow, ...], tuple[TypeRow, ...]]:
    counts = tally.counts
    total = sum(counts.values())
    sizes = {cls: int(c * _mean_size(tally, cls)) for cls, c in counts.items()}
    total_size = sum(sizes.values())
    # Distinct classes can share a name (re-created classes): merge by name.
    ranked = heapq.nlargest(max(top_n, LEAK_TRACK_TYPES), counts.items(), key=itemgetter(1))
    by_name: dict[str, list[int]] = {}
    for cls, count in ranked:
        slot = by_name.setdefault(type_name(cls), [0, 0])
        slot[0] += count
        slot[1] += sizes[cls]
    top_counts = {name: v[0] for name, v in by_name.items()}
    top_by_count = sorted(by_name.items(), key=lambda kv: kv[1][0], reverse=True)[:top_n]
    named: list[TypeRow] = []
    named_count = named_size = 0
    for name, (count, size) in top_by_count:
        if budget.admit(name):
            named.append(TypeRow(name, count, size))
            named_count += count
            named_size += size
    rows = (*named, TypeRow(OTHER, total - named_count, total_size - named_size))
    largest = heapq.nlargest(top_n, sizes.items(), key=itemgetter(1))
    by_size_names: dict[str, int] = {}
    for cls, size in largest:
        by_size_names[type_name(cls)] = by_size_names.get(type_name(cls), 0) + size
    by_count = tuple(TypeRow(n, v[0], v[1]) for n, v in top_by_count)
    by_size = tuple(
        TypeRow(n, by_name.get(n, [0])[0], s)
        for n, s in sorted(by_size_names.items(), key=itemgetter(1), reverse=True)
    )
    return rows, total, total_size, top_counts, by_count, by_size
