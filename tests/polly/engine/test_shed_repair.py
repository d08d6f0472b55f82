"""Repair after a shed that says whose events it lost: a reaction older than a user's recorded vote
stays a leftover however many other users' events were shed, and only an event of that user shed
after the vote can be a change of mind."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from polly.engine.reaction_queue import ReactionEvent, ReactionEventQueue
from polly.engine.reconciler import Reconciler
from polly.engine.service import Engine
from tests.polly.engine.harness import CHANNEL, GUILD, USER, Harness, harness

pytestmark = pytest.mark.timeout(120)

OTHER = USER + 1
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _event(message: int, user: int, emoji: str = "🇦") -> ReactionEvent:
    return ReactionEvent("add", GUILD, CHANNEL, message, user, emoji, is_bot=False)


def test_a_full_queue_records_whose_events_it_shed_and_when() -> None:
    now = [T0]
    queue = ReactionEventQueue(1, clock=lambda: now[0])
    assert queue.offer(_event(1, USER))
    queue.offer(_event(2, USER))
    now[0] = T0 + dt.timedelta(seconds=5)
    queue.offer(_event(2, USER))
    queue.offer(_event(2, OTHER))
    queue.offer(dataclasses.replace(_event(3, OTHER), received_at=T0))  # stamped upstream: kept
    shed = queue.take_shed()
    assert shed.messages == {2: {USER: now[0], OTHER: now[0]}, 3: {OTHER: T0}}
    assert not shed.overflow
    assert queue.take_shed().messages == {}


def test_past_its_user_cap_a_message_counts_as_lost_for_everyone_and_past_its_message_cap_all() -> None:
    queue = ReactionEventQueue(1, clock=lambda: T0, max_shed_messages=2, max_shed_users=2)
    queue.offer(_event(1, USER))
    for user in (USER, OTHER):
        queue.offer(_event(2, user))
    queue.offer(_event(3, USER))  # a third user: whose events message 3 lost is no longer known
    queue.offer(_event(4, USER))  # a third message: more than the record holds
    shed = queue.take_shed()
    assert shed.messages == {2: {USER: T0, OTHER: T0}, 3: None}
    assert shed.overflow
    queue.offer(_event(3, USER))  # a fresh record after take_shed()
    assert queue.take_shed().messages == {3: {USER: T0}}


async def _vote_then_others_shed(h: Harness, engine: Engine, message: int) -> None:
    """USER's 🇦 is shed, then USER votes 🇧 (applied), then OTHER's 🇨 is shed: the stale 🇦
    is still on the message when the repair comes."""
    h.sandbox.user_add_reaction(message, USER, "🇦")
    await _shed(h, engine, message)
    h.clock.advance(seconds=1)
    h.sandbox.user_add_reaction(message, USER, "🇧")
    await h.drain(engine)
    h.clock.advance(seconds=1)
    h.sandbox.user_add_reaction(message, OTHER, "🇨")
    await _shed(h, engine, message)


async def _shed(h: Harness, engine: Engine, message: int) -> None:
    """What the engine's shed handling does with a full queue's record: the events waiting are
    lost, and the reconciler learns whose they were and when they were taken in."""
    lost: dict[int, dt.datetime] = {}
    while h.sandbox.event_stats().depth:
        event = await h.sandbox.next_reaction_event()
        assert event.received_at is not None
        lost[event.user_id] = event.received_at
    engine.reconciler.note_shed(message, lost)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_a_reaction_older_than_the_vote_stays_a_leftover_when_other_users_events_are_shed(
    db: str, request: pytest.FixtureRequest
) -> None:
    async with harness(request.getfixturevalue(f"{db}_url")) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()  # start-up
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        await _vote_then_others_shed(h, engine, message)
        for _ in range(2):  # a change of mind would be applied at the second look
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert await h.votes(poll_id) == {USER: {1}, OTHER: {2}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")  # removed as a leftover
        assert engine.reconciler.marked == 0


async def test_the_users_own_event_shed_after_the_vote_is_a_change_of_mind(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}}  # a change over a recorded vote: a second look
        h.clock.advance(seconds=11)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")


async def test_with_no_room_to_say_whose_the_message_counts_as_lost_for_everyone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MAX_LOST_ACTS`` the per-user record falls back to the whole message, which errs
    towards applying a change of mind (as before users were known), never towards dropping one."""
    monkeypatch.setattr(Reconciler, "MAX_LOST_ACTS", 1)
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        engine.reconciler.note_shed(message, {OTHER + 1: h.clock.now})  # fills the record
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)  # USER's own act: no room, so the message as a whole
        for _ in range(2):
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert await h.votes(poll_id) == {USER: {1}}
