"""The start-up heap freeze: collected first, shared by its holders, undone by the last one."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from polly.engine import heap
from polly.supervisor import Supervisor
from tests.polly.engine.harness import harness


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    assert heap.frozen_holders() == 0
    yield
    while heap.frozen_holders():
        heap.thaw()
    assert gc.get_freeze_count() == 0


def test_first_holder_collects_then_freezes_and_the_last_one_unfreezes() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only a collection frees it
    dead = weakref.ref(a)
    del a, b
    heap.freeze_startup_heap()
    assert dead() is None  # start-up garbage is freed, not frozen
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [_Node() for _ in range(100)]
    heap.freeze_startup_heap()  # a second holder: nothing more is frozen
    assert gc.get_freeze_count() == frozen
    heap.thaw()
    assert gc.get_freeze_count() == frozen  # one holder left
    heap.thaw()
    assert gc.get_freeze_count() == 0
    heap.thaw()  # a stray thaw is harmless
    assert heap.frozen_holders() == 0
    assert len(kept) == 100


def test_an_object_frozen_and_then_dropped_is_collected_after_the_thaw() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    heap.freeze_startup_heap()
    del a, b
    gc.collect()
    assert dead() is not None  # frozen: collections skip it
    heap.thaw()
    gc.collect()
    assert dead() is None


async def test_the_vote_dispatcher_holds_the_freeze_while_it_runs(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        votes = h.engine().votes
        votes.partitions(1, 10)
        async with Supervisor(name="heap", registry=None) as sup:
            sup.spawn("dispatch", votes.dispatch())
            await asyncio.sleep(0)
            assert heap.frozen_holders() == 1
            assert gc.get_freeze_count() > 0
            assert await sup.shutdown(5) == ()
        assert heap.frozen_holders() == 0
        assert gc.get_freeze_count() == 0
