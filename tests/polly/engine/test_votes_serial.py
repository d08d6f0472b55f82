"""``VoteProcessor.serial_writes``: one vote transaction at a time, in the order the workers asked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import pytest

from polly.engine.gateway import ReactionEvent
from polly.engine.store import PollStore, VoteCommand, VoteOutcome
from polly.engine.votes import EmbedUpdater, VoteProcessor


class _Store:
    """Records how many ``apply_votes`` calls overlap; each takes a few loop turns."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    async def apply_votes(self, commands: Sequence[VoteCommand], *, now: datetime) -> list[VoteOutcome]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return [VoteOutcome("ignored_unknown_poll", None) for _ in commands]


class _Gateway:
    bot_user_id = 1


def _event(message: int) -> ReactionEvent:
    return ReactionEvent("add", 1, 2, message, 100 + message, "🇦", is_bot=False)


@pytest.mark.parametrize(("serial", "most"), [(True, 1), (False, 3)])
async def test_serial_writes_apply_one_batch_at_a_time(serial: bool, most: int) -> None:
    store = _Store()
    votes = VoteProcessor(
        cast("PollStore", store),
        cast("Any", _Gateway()),
        cast("EmbedUpdater", None),
        clock=lambda: datetime(2026, 6, 1),
        serial_writes=serial,
    )
    results = await asyncio.gather(*(votes.apply_events([_event(m)]) for m in range(3)))
    assert store.most == most
    assert [r[0].action for r in results if r[0] is not None] == ["ignored_unknown_poll"] * 3
