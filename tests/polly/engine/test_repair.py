"""Repair cases: every one ends with the votes the voters' acts call for."""

from __future__ import annotations

import pytest

from polly.errors import RateLimitedError
from polly.sandbox.gateway import FaultRates
from tests.polly.engine.harness import CHANNEL, GUILD, USER, Harness, harness

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def url(request: pytest.FixtureRequest) -> str:
    value = request.getfixturevalue(f"{request.param}_url")
    assert isinstance(value, str)
    return value


async def _lose_events(h: Harness) -> None:
    """polly missed these events (down, or shed); the repair comes a moment later."""
    while h.sandbox.event_stats().depth:
        await h.sandbox.next_reaction_event()
    h.clock.advance(seconds=1)


async def test_downtime_change_of_mind_on_a_single_choice_poll_is_applied(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {0}}
        h.sandbox.user_add_reaction(message, USER, "🇧")  # while polly is down
        await _lose_events(h)
        engine.reconciler.mark_all()  # what start-up does
        first = await engine.reconciler.repair_marked()
        assert first.votes_added == 0  # a change over a recorded vote needs a second look
        assert await h.votes(poll_id) == {USER: {0}}
        assert engine.reconciler.marked == 1
        h.clock.advance(seconds=11)
        report = await engine.reconciler.repair_marked()
        assert report.votes_added == 1
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")
        assert engine.reconciler.marked == 0


async def test_a_removal_missed_on_a_multiple_choice_poll_removes_the_vote(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        h.sandbox.user_add_reaction(message, USER, "🇨")
        await h.drain(engine)
        h.sandbox.user_remove_reaction(message, USER, "🇦")  # missed
        await _lose_events(h)
        report = await engine.reconciler.pass_once()
        assert report.votes_removed == 1
        assert await h.votes(poll_id) == {USER: {2}}


async def test_an_incomplete_read_never_removes_a_vote(sqlite_url: str) -> None:
    async with harness(sqlite_url, reconcile_budget_per_tick=2) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        for emoji in ("🇦", "🇧", "🇨"):
            h.sandbox.user_add_reaction(message, USER, emoji)
        await h.drain(engine)
        h.sandbox.user_remove_reaction(message, USER, "🇨")
        await _lose_events(h)
        await engine.reconciler.pass_once()  # fetch + one emoji: the budget ends the read
        assert await h.votes(poll_id) == {USER: {0, 1, 2}}


async def test_shed_events_mark_their_poll_and_are_repaired(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        from polly.engine.gateway import ReactionEventQueue

        h.sandbox._events = ReactionEventQueue(3)
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        await _lose_events(h)  # the bot's own reaction events
        message = await h.message_of(poll_id)
        for i in range(10):
            h.sandbox.user_add_reaction(message, USER + i, "🇦")
        await h.drain(engine)
        assert len(await h.votes(poll_id)) == 3
        engine.note_shed()
        assert engine.reconciler.marked == 1
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER + i: {0} for i in range(10)}
        assert engine.reconciler.marked == 0


async def test_a_failed_reaction_removal_is_retried_and_never_read_as_a_new_choice(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # vote recorded; its reaction removal failed
        h.sandbox.set_faults(FaultRates())
        assert h.sandbox.has_reaction(message, USER, "🇦")
        assert engine.remover.pending == 1
        h.sandbox.user_add_reaction(message, USER, "🇧")  # a change of mind, recorded
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {1}}
        await engine.reconciler.pass_once()  # 🇦 is still visible: a leftover, not a choice
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")
        h.clock.advance(seconds=2)
        await engine.remover.retry_due()
        assert engine.remover.pending == 0


async def test_removals_give_up_after_their_attempts_and_mark_the_poll(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        for _ in range(10):
            h.clock.advance(seconds=61)
            await engine.remover.retry_due()
        assert (engine.remover.pending, engine.remover.given_up) == (0, 1)
        assert engine.reconciler.marked == 1


async def test_shutdown_drains_the_backlog_within_the_deadline(sqlite_url: str) -> None:
    from polly.supervisor import Supervisor

    async with harness(sqlite_url, shutdown_timeout_seconds=10) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        async with Supervisor(name="t", registry=None) as sup:
            engine.start(sup)
            await sup.wait_ready(10)
            for i in range(300):
                h.sandbox.user_add_reaction(message, USER + i, "🇦")
            await sup.shutdown(10)
        assert engine.still_to_repair == ()
        assert len(await h.votes(poll_id)) == 300


async def test_shutdown_records_the_polls_it_could_not_drain(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        await _lose_events(h)
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")  # nobody applies it
        assert await engine.drain(0.1) == (message,)


async def test_a_transient_embed_failure_is_retried_until_it_succeeds(sqlite_url: str) -> None:
    async with harness(sqlite_url, embed_update_interval_seconds=5) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        await engine.embeds.flush_due()
        assert (engine.embeds.edits, engine.embeds.pending) == (0, 1)  # still marked
        h.sandbox.set_faults(FaultRates())
        h.clock.advance(seconds=6)
        await engine.embeds.flush_due()
        assert (engine.embeds.edits, engine.embeds.pending) == (1, 0)
        embed = h.sandbox.truth(message).embed
        assert embed is not None
        assert "1" in embed.fields[0].value


async def test_a_gone_message_is_not_retried_by_the_embed_updater(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        h.sandbox.delete_message(await h.message_of(poll_id))
        engine.embeds.mark(poll_id)
        await engine.embeds.flush_due()
        assert (engine.embeds.failures, engine.embeds.pending) == (1, 0)


async def test_no_call_goes_into_a_known_retry_after_window(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(rate_limited=1.0, retry_after_seconds=(5.0, 5.0)))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # the removal got a 429
        h.sandbox.set_faults(FaultRates())
        for i in range(1, 6):  # more votes: their removals must wait, not call
            h.sandbox.user_add_reaction(message, USER + i, "🇦")
        await h.drain(engine)
        await engine.remover.retry_due()
        engine.embeds.mark(poll_id)
        with pytest.raises(RateLimitedError):
            await engine.discord.fetch_message(CHANNEL, message)
        assert h.sandbox.counters().rate_limit_violations == 0
        assert engine.discord.held >= 6
        h.clock.advance(seconds=6)
        await engine.remover.retry_due()
        assert engine.remover.pending == 0
        assert not any(h.sandbox.has_reaction(message, USER + i, "🇦") for i in range(6))
        assert h.sandbox.counters().rate_limit_violations == 0


async def test_a_leftover_another_process_is_retrying_is_not_read_as_a_change_of_mind(
    sqlite_url: str,
) -> None:
    """A replica that knows nothing of a removal still being retried elsewhere (it was restarted)."""
    async with harness(sqlite_url) as h:
        engine, other = h.engine(), h.engine(replica="r2")
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # 🇦 recorded, its removal failed: r1 retries it
        h.sandbox.set_faults(FaultRates())
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {1}}
        h.clock.advance(seconds=1)
        await other.reconciler.pass_once()  # r2 sees 🇦 and does not know it is a leftover
        assert await h.votes(poll_id) == {USER: {1}}
        h.clock.advance(seconds=2)
        await engine.remover.retry_due()  # r1's retry removes it
        h.clock.advance(seconds=60)
        other.reconciler._retry_at.clear()
        await other.reconciler.pass_once()
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")


async def test_a_slow_leftover_elsewhere_is_removed_not_read_as_a_change_of_mind_by_a_listening_replica(
    sqlite_url: str,
) -> None:
    """r2 has been listening since before the vote was recorded, so a newer choice would have reached
    it as an event: a reaction r1 is still failing to remove, however long, is no choice."""
    async with harness(sqlite_url) as h:
        engine, other = h.engine(), h.engine(replica="r2")
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        other.reconciler.mark_all()  # r2 starts (and from now on receives every event)
        await other.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # 🇦 recorded, its removal failed: r1 retries it
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await h.drain(engine)  # 🇧 recorded; its removal fails too
        assert await h.votes(poll_id) == {USER: {1}}
        h.sandbox.set_faults(FaultRates())
        for _ in range(3):  # r2 looks again and again, 11 s apart
            h.clock.advance(seconds=11)
            other.reconciler._retry_at.clear()
            await other.reconciler.pass_once()
            await other.reconciler.repair_marked()
            assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")  # r2 removed the leftover itself
        assert other.reconciler.marked == 0


async def test_a_change_of_mind_is_applied_when_the_replica_lost_events_of_that_message_after_the_vote(
    sqlite_url: str,
) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()  # start-up
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _lose_events(h)
        engine.reconciler.mark_message(message)  # what a shed (or a batch given up) does
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}}  # a change over a recorded vote: a second look
        h.clock.advance(seconds=11)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")


async def test_a_removal_given_up_is_not_a_lost_event(sqlite_url: str) -> None:
    """A listening replica whose own removal failed for good still knows every act: the old
    reaction is removed at the repair, never read as a new choice."""
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.set_faults(FaultRates(forbidden=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # recorded; the removal is refused: given up, the poll marked
        h.sandbox.set_faults(FaultRates())
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await h.drain(engine)
        engine.remover._leftovers.clear()  # forgotten (an hour passed): only the listening rule is left
        assert engine.reconciler.marked == 1
        for _ in range(2):
            h.clock.advance(seconds=11)
            await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")


async def test_a_retry_after_holds_only_its_channel_and_the_repair_of_the_others_goes_on(
    sqlite_url: str,
) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        h.sandbox.ensure_channel(CHANNEL + 1, GUILD)
        held = await h.add_poll(multiple_choice=True)
        other = await h.add_poll(multiple_choice=True, channel_id=str(CHANNEL + 1))
        await engine.scheduler.tick()
        messages = [await h.message_of(held), await h.message_of(other)]
        for message in messages:
            h.sandbox.user_add_reaction(message, USER, "🇦")
        await _lose_events(h)
        h.sandbox.set_faults(FaultRates(rate_limited=1.0, retry_after_seconds=(5.0, 5.0)))
        with pytest.raises(RateLimitedError):
            await engine.discord.fetch_message(CHANNEL, messages[0])  # Discord: CHANNEL waits 5 s
        h.sandbox.set_faults(FaultRates())
        engine.reconciler.mark_all()
        report = await engine.reconciler.repair_marked()
        assert report.rate_limited
        assert await h.votes(held) == {}
        assert await h.votes(other) == {USER: {0}}  # the other channel was not held up
        assert engine.reconciler.marked == 1
        await engine.reconciler.repair_marked()  # still inside the window: CHANNEL is not called
        assert await h.votes(held) == {}
        h.clock.advance(seconds=6)
        await engine.reconciler.repair_marked()
        assert await h.votes(held) == {USER: {0}}
        assert engine.reconciler.marked == 0
        assert h.sandbox.counters().rate_limit_violations == 0


async def test_a_marked_poll_does_not_wait_out_a_background_backoff(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        for _ in range(3):  # the background pass fails: 30 s, 60 s, then 120 s of backoff
            await engine.reconciler.pass_once()
            h.clock.advance(seconds=80)
        h.sandbox.set_faults(FaultRates())
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await _lose_events(h)
        engine.reconciler.mark_message(message)  # shed: a prompt repair is due
        h.clock.advance(seconds=3)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}}
        assert engine.reconciler.marked == 0
