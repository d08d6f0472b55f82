"""The vote dispatcher freezes the heap again once the vote path has warmed up (bounded times)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from polly.engine import heap
from polly.engine.votes import REFREEZE_AFTER_EVENTS
from polly.supervisor import Supervisor
from tests.polly.engine.test_votes_sqlite import _event, _Gateway, _processor, _Store

pytestmark = pytest.mark.timeout(60)


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def test_refreeze_does_nothing_unless_the_freeze_is_held() -> None:
    assert heap.frozen_holders() == 0
    assert heap.refreeze() is False
    assert gc.get_freeze_count() == 0


async def test_what_the_first_events_keep_is_frozen_after_the_warm_up() -> None:
    gateway = _Gateway()
    votes = _processor(_Store(), gateway, serial=False)
    votes.partitions(1, 2 * REFREEZE_AFTER_EVENTS[0])
    async with Supervisor(name="refreeze", registry=None) as sup:
        sup.spawn("votes", votes.dispatch())
        await asyncio.sleep(0)
        at_start = gc.get_freeze_count()
        assert heap.frozen_holders() == 1
        kept = [_Node() for _ in range(5_000)]  # built after the start-up freeze, kept for good
        for i in range(REFREEZE_AFTER_EVENTS[0] - 1):
            gateway.events.put_nowait(_event(100, i))
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() < at_start + len(kept)  # not yet
        gateway.events.put_nowait(_event(100, 0))
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() >= at_start + len(kept)
        assert await sup.shutdown(5) == ()
    assert heap.frozen_holders() == 0
    assert gc.get_freeze_count() == 0
    assert len(kept) == 5_000
