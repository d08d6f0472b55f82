"""The embed updater's loop waits on the injected clock: the rest of an interval, and a 429's retry-after."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from polly.clock import FakeClock
from polly.db.poll_rows import PollView
from polly.engine.embed_updater import EmbedUpdater
from polly.engine.gateway import Gateway
from polly.engine.store import PollStore
from polly.errors import RateLimitedError

INTERVAL = 30.0
WHEN = datetime(2026, 1, 1, 12, 0)


def _poll(poll_id: int) -> PollView:
    return PollView(
        id=poll_id, name="Colours", question="Which colour?", options=("Red", "Blue"), emojis=("🇦", "🇧"),
        server_id=1, channel_id=10, message_id=100 + poll_id, claim=None, status="active",
        open_time=WHEN, close_time=WHEN, timezone="UTC", anonymous=False, multiple_choice=False,
        max_choices=None, ping_role_enabled=False, ping_role_id=None, ping_role_on_close=False,
        image_message_text=None,
    )  # fmt: skip


class Store:
    """The part of a :class:`PollStore` an edit reads: every poll is active with one vote."""

    async def view(self, poll_id: int) -> PollView:
        return _poll(poll_id)

    async def results(self, _poll_id: int) -> tuple[dict[int, int], int]:
        return {0: 1}, 1


class Edits:
    """A gateway that records when (on the fake clock) each message was edited; ``rate_limited``
    edits are answered with a 429 first."""

    def __init__(self, clock: FakeClock, rate_limited: int = 0) -> None:
        self.clock = clock
        self.rate_limited = rate_limited
        self.at: list[tuple[int, float]] = []

    async def edit_message(self, _channel_id: int, message_id: int, **_: Any) -> None:
        if self.rate_limited:
            self.rate_limited -= 1
            msg = "edit: 429"
            raise RateLimitedError(msg, 7.0)
        self.at.append((message_id, self.clock.monotonic()))


def _updater(clock: FakeClock, gateway: Edits) -> EmbedUpdater:
    return EmbedUpdater(
        cast("PollStore", Store()), cast("Gateway", gateway), interval_seconds=INTERVAL,
        monotonic=clock.monotonic, sleep=clock.sleep,
    )  # fmt: skip


async def _until(condition: Any) -> None:
    async with asyncio.timeout(5):  # a bound on the test: a real sleep of 30 s would exceed it
        while not condition():  # noqa: ASYNC110 - the loop under test runs in between
            await asyncio.sleep(0)


async def test_a_second_mark_within_the_interval_waits_the_rest_of_it_on_the_clock() -> None:
    clock = FakeClock(monotonic_start=1000.0)
    gateway = Edits(clock)
    updater = _updater(clock, gateway)
    async with asyncio.TaskGroup() as tasks:  # the test owns the loop here
        loop = tasks.create_task(updater.run())
        updater.mark(1)
        await _until(lambda: len(gateway.at) == 1)
        clock.advance(10.0)
        updater.mark(1)  # 10 s after the first edit: due 20 s later
        await _until(lambda: len(gateway.at) == 2)
        loop.cancel()
    assert gateway.at == [(101, 1000.0), (101, 1030.0)]
    assert list(clock.sleeps) == [20.0], "the loop slept the rest of the interval, on the injected clock"


async def test_a_429_waits_its_retry_after_on_the_clock_then_the_edit_is_made() -> None:
    clock = FakeClock(monotonic_start=1000.0)
    gateway = Edits(clock, rate_limited=1)
    updater = _updater(clock, gateway)
    async with asyncio.TaskGroup() as tasks:
        loop = tasks.create_task(updater.run())
        updater.mark(2)
        await _until(lambda: len(gateway.at) == 1)
        loop.cancel()
    # the retry-after, then (the poll stayed marked) the interval: both waited on the injected clock
    assert list(clock.sleeps) == [7.0, INTERVAL]
    assert gateway.at == [(102, 1000.0 + 7.0 + INTERVAL)]
