"""Documented engine invariants, each guarded by a test that a mutation of it fails.

- :class:`~polly.engine.votes.DmLimiter`: at most N confirmation DMs in any *sliding 60 s* window.
- :class:`~polly.engine.embed_updater.EmbedUpdater`: the dirty set holds at most ``max_pending``
  polls; beyond that the oldest mark is dropped.
- A repair never restores a vote its user removed after the repair read the reactions
  (:mod:`polly.engine.repair`, ``VoteProcessor.superseded``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from polly.engine.embed_updater import EmbedUpdater
from polly.engine.gateway import Gateway, ReactionUser
from polly.engine.reactions import ReactionRemover
from polly.engine.store import PollStore
from polly.engine.votes import DmLimiter
from tests.polly.engine.harness import USER, Harness, harness

pytestmark = pytest.mark.timeout(120)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_dm_limiter_window_is_a_full_minute() -> None:
    clock = ManualClock()
    limiter = DmLimiter(2, monotonic=clock)
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    for at in (1.0, 30.0, 30.1, 45.0, 59.9):
        clock.now = at
        assert not limiter.allow(), f"a third DM {at} s after two must wait for the minute to pass"
    clock.now = 60.0
    assert [limiter.allow() for _ in range(3)] == [True, True, False]


def test_dm_limiter_window_slides() -> None:
    clock = ManualClock()
    limiter = DmLimiter(2, monotonic=clock)
    assert limiter.allow()
    clock.now = 40.0
    assert limiter.allow()
    clock.now = 60.0  # the first DM left the window, the second has 20 s to go
    assert limiter.allow()
    assert not limiter.allow()
    clock.now = 99.9
    assert not limiter.allow()
    clock.now = 100.0
    assert limiter.allow()


class ViewRecorder:
    """The part of a :class:`PollStore` an edit starts with: it records which polls were read."""

    def __init__(self) -> None:
        self.viewed: list[int] = []

    async def view(self, poll_id: int) -> None:
        self.viewed.append(poll_id)


async def test_embed_updater_holds_at_most_max_pending_polls() -> None:
    store, clock = ViewRecorder(), ManualClock()
    updater = EmbedUpdater(
        cast("PollStore", store), cast("Gateway", object()), interval_seconds=5.0, max_pending=100,
        monotonic=clock,
    )  # fmt: skip
    for poll_id in range(1, 10_001):
        updater.mark(poll_id)
        assert updater.pending <= 100
    assert updater.pending == 100
    updater.mark(10_000)  # marking a held poll again neither grows nor evicts
    assert updater.pending == 100
    clock.now = 60.0
    await updater.flush_due()
    # the newest marks were kept; the older ones are marked again by their polls' next votes
    assert sorted(store.viewed) == list(range(9_901, 10_001))
    assert updater.pending == 0


async def _lose_events(h: Harness) -> None:
    """polly missed these events (down, or shed)."""
    while h.sandbox.event_stats().depth:
        await h.sandbox.next_reaction_event()
    h.clock.advance(seconds=1)


def _during_the_read(h: Harness, monkeypatch: pytest.MonkeyPatch, act: Callable[[], Awaitable[None]]) -> None:
    """Run ``act`` once, just after the repair has listed a reaction's users (before it applies them)."""
    real = h.sandbox.list_reaction_users
    done: list[bool] = []

    async def listing(*args: Any, **kwargs: Any) -> tuple[ReactionUser, ...]:
        page = await real(*args, **kwargs)
        if not done:
            done.append(True)
            await act()
        return page

    monkeypatch.setattr(h.sandbox, "list_reaction_users", listing)


@pytest.mark.parametrize("removed_during_read", [True, False])
async def test_a_repair_never_restores_a_vote_its_user_removed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, removed_during_read: bool
) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)  # reactions are kept: they are the votes
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")  # while polly is down
        await _lose_events(h)

        async def user_takes_it_back() -> None:
            h.clock.advance(seconds=1)
            assert h.sandbox.user_remove_reaction(message, USER, "🇦")
            assert await h.drain(engine) == 1  # the live event arrives while the repair is busy

        if removed_during_read:
            _during_the_read(h, monkeypatch, user_takes_it_back)
        engine.reconciler.mark_all()
        report = await engine.reconciler.repair_marked()
        if removed_during_read:
            assert await h.votes(poll_id) == {}
            assert report.votes_added == 0
            assert engine.votes.stats.actions.get("ignored_stale_reconcile") == 1
        else:  # the same repair without the removal records the vote: the guard is what stops it
            assert await h.votes(poll_id) == {USER: {0}}
            assert report.votes_added == 1


async def test_a_replayed_add_changes_nothing_even_at_the_cap(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True, max_choices=1)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        event = await h.sandbox.next_reaction_event()
        while event.user_id != USER:
            event = await h.sandbox.next_reaction_event()
        first = await engine.votes.handle(event)
        assert first is not None
        assert first.action == "added"
        for _ in range(3):
            again = await engine.votes.handle(event)
            assert again is not None
            assert (again.action, again.changed) == ("already_recorded", False)
        assert await h.votes(poll_id) == {USER: {0}}
        assert h.sandbox.has_reaction(message, USER, "🇦")  # a recorded vote's reaction is never taken away


@pytest.mark.parametrize(("second_look_after", "applied"), [(5, False), (9.9, False), (10, True)])
async def test_a_change_of_mind_needs_two_reads_ten_seconds_apart(
    sqlite_url: str, second_look_after: float, applied: bool
) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.sandbox.user_add_reaction(message, USER, "🇧")  # while polly is down
        await _lose_events(h)
        engine.reconciler.mark_all()
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}}  # first look: noted, not applied
        h.clock.advance(seconds=second_look_after)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == ({USER: {1}} if applied else {USER: {0}})


async def test_a_repairs_add_never_replaces_a_recorded_single_choice_vote(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        outcome = await engine.store.apply_reaction(
            message, USER, "🇧", kind="add", now=h.clock(), reconcile=True
        )
        assert (outcome.action, outcome.changed) == ("already_recorded", False)
        assert await h.votes(poll_id) == {USER: {0}}
        live = await engine.store.apply_reaction(message, USER, "🇧", kind="add", now=h.clock())
        assert live.action == "updated"  # the same add from a live event is a change of mind
        assert await h.votes(poll_id) == {USER: {1}}


def test_the_reaction_remover_holds_at_most_max_pending_removals() -> None:
    remover = ReactionRemover(cast("Gateway", object()), max_pending=100, monotonic=ManualClock())
    for user in range(1, 1001):
        remover.enqueue((1, 2, "🇦", user))
        assert remover.pending <= 100
    assert remover.pending == 100
    assert remover.given_up == 900  # the oldest go first, each counted (its poll is marked for repair)
    remover.enqueue((1, 2, "🇦", 1000))  # already pending: neither grows nor evicts
    assert (remover.pending, remover.given_up) == (100, 900)
