"""Repair after a shed that says whose events it lost: a reaction older than a user's recorded vote
stays a leftover however many other users' events were shed, and only an event of that user shed
after the vote can be a change of mind."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from polly.db.models import Vote
from polly.engine.gateway import FetchedMessage
from polly.engine.reaction_queue import ReactionEvent, ReactionEventQueue, ShedActs
from polly.engine.reconciler import GONE_PROMPT_READS, Reconciler
from polly.engine.service import Engine
from polly.sandbox.gateway import FaultRates
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
    queue.offer(dataclasses.replace(_event(2, USER, "🇧"), received_at=T0))  # an older add
    queue.offer(dataclasses.replace(_event(2, OTHER, "🇧"), kind="remove"))
    later = now[0]
    shed = queue.take_shed()
    assert shed.messages == {
        2: {
            USER: ShedActs(
                later, "🇦", later, (("🇧", "add", T0), ("🇦", "add", later)), (("🇧", T0), ("🇦", later))
            ),
            OTHER: ShedActs(
                later, "🇦", later, (("🇦", "add", later), ("🇧", "remove", later)), (("🇦", later),)
            ),
        },
        3: {OTHER: ShedActs(T0, "🇦", T0, (("🇦", "add", T0),), (("🇦", T0),))},
    }
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
    acts = ShedActs(T0, "🇦", T0, (("🇦", "add", T0),), (("🇦", T0),))
    assert shed.messages == {2: {USER: acts, OTHER: acts}, 3: None}
    assert shed.overflow
    queue.offer(_event(3, USER))  # a fresh record after take_shed()
    assert queue.take_shed().messages == {3: {USER: acts}}


async def _running_poll(h: Harness, **values: object) -> tuple[Engine, int, int]:
    """An engine past its start-up repair, with one poll posted (single-choice unless ``values``
    say otherwise); a second later."""
    engine = h.engine()
    poll_id = await h.add_poll(**values)
    await engine.scheduler.tick()
    message = await h.message_of(poll_id)
    await h.drain(engine)  # the bot's own reactions
    engine.reconciler.mark_all()  # start-up
    await engine.reconciler.repair_marked()
    h.clock.advance(seconds=1)
    return engine, poll_id, message


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
    """The events waiting are lost to a full queue, and the engine's shed handling hands the
    queue's record (whose events, when, the latest add) to the reconciler."""
    full = ReactionEventQueue(1)
    full.offer(_event(0, 0))
    while h.sandbox.event_stats().depth:
        assert not full.offer(await h.sandbox.next_reaction_event())
    record = full.take_shed()
    assert list(record.messages) == [message]
    engine.reconciler.note_shed(message, record.messages[message])


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_a_reaction_older_than_the_vote_stays_a_leftover_when_other_users_events_are_shed(
    db: str, request: pytest.FixtureRequest
) -> None:
    async with harness(request.getfixturevalue(f"{db}_url")) as h:
        engine, poll_id, message = await _running_poll(h)
        await _vote_then_others_shed(h, engine, message)
        for _ in range(2):  # a change of mind would be applied at the second look
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert await h.votes(poll_id) == {USER: {1}, OTHER: {2}}
        assert not h.sandbox.has_reaction(message, USER, "🇦")  # removed as a leftover
        assert engine.reconciler.marked == 0


async def test_the_users_own_event_shed_after_the_vote_is_a_change_of_mind(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        await engine.reconciler.repair_marked()  # the shed add itself: no second look needed
        assert await h.votes(poll_id) == {USER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")
        assert engine.reconciler.marked == 0


async def test_the_latest_shed_add_wins_over_the_option_order_and_over_a_reaction_taken_back(
    sqlite_url: str,
) -> None:
    """Discord does not say which of a user's reactions came last; the shed record does."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇨")
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")  # the latest: 🇨 comes later in option order
        h.sandbox.user_add_reaction(message, OTHER, "🇧")
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, OTHER, "🇨")
        h.sandbox.user_remove_reaction(message, OTHER, "🇨")  # taken back: still OTHER's last choice
        await _shed(h, engine, message)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}, OTHER: {2}}
        for user, emoji in ((USER, "🇦"), (USER, "🇨"), (OTHER, "🇧")):
            assert not h.sandbox.has_reaction(message, user, emoji)
        assert engine.reconciler.marked == 0


async def test_a_message_pushed_out_of_the_shed_record_counts_as_lost_for_everyone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Reconciler, "MAX_LOST_ACTS", 2)
    async with harness(sqlite_url) as h:
        engine = h.engine()
        engine.reconciler.mark_all()
        h.clock.advance(seconds=1)
        at = h.clock.now
        acts = ShedActs(at, "🇦", at)
        engine.reconciler.note_shed(1, {USER: acts})
        assert engine.reconciler.may_have_missed(1, at, USER)
        assert not engine.reconciler.may_have_missed(1, at, OTHER)  # only USER's events were lost
        engine.reconciler.note_shed(2, {USER: acts, OTHER: acts})  # no room for message 1's users
        assert engine.reconciler.may_have_missed(1, at, OTHER)
        assert not engine.reconciler.may_have_missed(1, at + dt.timedelta(seconds=1), OTHER)


async def test_with_no_room_to_say_whose_the_message_counts_as_lost_for_everyone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MAX_LOST_ACTS`` the per-user record falls back to the whole message, which errs
    towards applying a change of mind (as before users were known), never towards dropping one."""
    monkeypatch.setattr(Reconciler, "MAX_LOST_ACTS", 1)
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        filler = ShedActs(h.clock.now, "🇨", h.clock.now)
        engine.reconciler.note_shed(message, {OTHER + 1: filler})  # fills the record
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)  # USER's own act: no room, so the message as a whole
        for _ in range(2):
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert await h.votes(poll_id) == {USER: {1}}


async def test_a_shed_add_is_applied_though_the_reaction_was_taken_back_after_it(sqlite_url: str) -> None:
    """The take-back arrives as an event (applied: it changes no single-choice vote) no earlier
    than the repair's read; the shed add is still the user's last choice."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        h.sandbox.user_remove_reaction(message, USER, "🇧")
        await h.drain(engine)  # seen at the same instant as the read that follows
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}


@pytest.mark.parametrize("db", ["sqlite", "postgres", "mariadb"])
async def test_a_vote_chosen_again_after_a_shed_add_stays_the_latest(
    db: str, request: pytest.FixtureRequest
) -> None:
    """🇦, then 🇧 (shed), then 🇦 again (applied): choosing 🇦 again moves its ``voted_at`` on,
    so the older shed 🇧 is not replayed over it."""
    async with harness(request.getfixturevalue(f"{db}_url")) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # recorded; the bot removes the reaction
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        h.clock.advance(seconds=1)
        chosen_again = h.clock.now
        assert h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        for _ in range(2):
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert await h.votes(poll_id) == {USER: {0}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")  # older than the vote: a leftover
        async with h.database.async_session_scope() as session:
            stamps = (await session.execute(select(Vote.voted_at).where(Vote.poll_id == poll_id))).scalars()
            assert list(stamps) == [chosen_again]


async def test_a_marked_poll_whose_read_answers_404_once_is_read_again_promptly(sqlite_url: str) -> None:
    """A 404 can be transient: the marked poll stays marked for its first few, then it is left to
    the background pass (which tracks gone messages)."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        h.sandbox.set_faults(FaultRates(not_found=1.0))
        await engine.reconciler.repair_marked()
        assert engine.reconciler.marked == 1
        h.sandbox.set_faults(FaultRates())
        h.clock.advance(seconds=3)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}
        assert engine.reconciler.marked == 0
        engine.reconciler.note_shed(message, {OTHER: ShedActs(h.clock.now)})
        h.sandbox.set_faults(FaultRates(not_found=1.0))
        for _ in range(GONE_PROMPT_READS):
            assert engine.reconciler.marked == 1
            await engine.reconciler.repair_marked()
            h.clock.advance(seconds=11)
        assert engine.reconciler.marked == 0  # gone for the prompt pass


async def test_a_poll_marked_again_while_its_read_is_in_flight_stays_marked(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another task (the background pass, a batch given up) can mark a poll while this pass is
    reading it: that read is older than the new mark, so the mark stays."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        fetch = h.sandbox.fetch_message

        async def fetch_then_mark(channel_id: int, message_id: int) -> FetchedMessage:
            got = await fetch(channel_id, message_id)
            engine.reconciler.mark_message(message)  # e.g. a batch of its events given up meanwhile
            return got

        monkeypatch.setattr(h.sandbox, "fetch_message", fetch_then_mark)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}
        assert engine.reconciler.marked == 1  # what the later mark stands for is not in this read
        monkeypatch.setattr(h.sandbox, "fetch_message", fetch)
        h.clock.advance(seconds=3)
        await engine.reconciler.repair_marked()
        assert engine.reconciler.marked == 0


async def test_a_shed_add_is_applied_though_the_message_was_deleted_since(sqlite_url: str) -> None:
    """Its reactions cannot be read any more, but the shed add is an event: it is the vote."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await _shed(h, engine, message)
        h.sandbox.delete_message(message)
        report = await engine.reconciler.repair_marked()
        assert report.gone == 1
        assert await h.votes(poll_id) == {USER: {1}}


async def test_a_repair_reads_the_message_only_after_taking_the_queues_shed_record(sqlite_url: str) -> None:
    """A shed the repair loop has not looked at yet is taken before the read, so the read is
    applied with it: the shed add is replayed at once, not taken for an unconfirmed change."""
    async with harness(sqlite_url, max_events=1) as h:
        engine, poll_id, message = await _running_poll(h)
        h.sandbox.user_add_reaction(message, USER, "🇨")  # queued
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")  # the queue is full: shed
        await h.drain(engine)  # 🇨 recorded, older than the shed 🇧
        assert await h.votes(poll_id) == {USER: {2}}
        engine.reconciler.mark_message(message)  # marked for another reason; the shed not yet noted
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}}


async def test_a_multiple_choice_poll_whose_message_is_gone_gets_each_users_latest_shed_act_per_emoji(
    sqlite_url: str,
) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        engine.reconciler.mark_all()
        await engine.reconciler.repair_marked()
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        h.sandbox.user_add_reaction(message, OTHER, "🇨")
        h.clock.advance(seconds=1)
        h.sandbox.user_remove_reaction(message, USER, "🇦")
        h.sandbox.user_remove_reaction(message, OTHER, "🇨")
        h.sandbox.user_add_reaction(message, OTHER, "🇨")
        await _shed(h, engine, message)
        h.sandbox.delete_message(message)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1}, OTHER: {2}}


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_an_anonymous_multiple_choice_add_shed_counts_though_its_reaction_was_taken_back(
    db: str, request: pytest.FixtureRequest
) -> None:
    """On an anonymous poll a removal never un-votes (the bot's own removals echo back as removals),
    so the add is the vote: the repair replays it though the message no longer shows it."""
    async with harness(request.getfixturevalue(f"{db}_url")) as h:
        engine, poll_id, message = await _running_poll(h, multiple_choice=True, anonymous=True)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        h.sandbox.user_add_reaction(message, USER, "🇧")
        h.sandbox.user_add_reaction(message, OTHER, "🇧")
        await _shed(h, engine, message)
        h.clock.advance(seconds=1)
        h.sandbox.user_remove_reaction(message, USER, "🇦")
        await h.drain(engine)  # the take-back: applied, it changes nothing on an anonymous poll
        removals: list[tuple[int, str]] = []
        remove_reaction = h.sandbox.remove_reaction

        async def counted(channel_id: int, message_id: int, emoji: str, user_id: int) -> None:
            removals.append((user_id, emoji))
            await remove_reaction(channel_id, message_id, emoji, user_id)

        h.sandbox.remove_reaction = counted  # type: ignore[method-assign]
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0, 1}, OTHER: {1}}
        assert not h.sandbox.has_reaction(message, USER, "🇧")  # recorded, then removed as always
        # a shed add the read also shows is applied once, so its reaction is removed once
        assert sorted(removals) == sorted({(USER, "🇦"), (USER, "🇧"), (OTHER, "🇧")})
        await engine.reconciler.repair_marked()  # nothing left to replay: the votes stay
        assert await h.votes(poll_id) == {USER: {0, 1}, OTHER: {1}}


async def test_an_anonymous_multiple_choice_poll_whose_message_is_gone_gets_every_shed_add(
    sqlite_url: str,
) -> None:
    """The latest shed act on 🇦 is the take-back; the add before it is still a vote."""
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h, multiple_choice=True, anonymous=True)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        h.clock.advance(seconds=1)
        h.sandbox.user_remove_reaction(message, USER, "🇦")
        h.sandbox.user_add_reaction(message, OTHER, "🇨")
        await _shed(h, engine, message)
        h.sandbox.delete_message(message)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {0}, OTHER: {2}}


async def test_anonymous_shed_adds_past_max_choices_keep_the_first_taken_in(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine, poll_id, message = await _running_poll(h, multiple_choice=True, anonymous=True, max_choices=2)
        h.sandbox.user_add_reaction(message, USER, "🇨")
        await h.drain(engine)  # one vote recorded: room for one more
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇧")
        h.clock.advance(seconds=1)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await _shed(h, engine, message)
        h.sandbox.delete_message(message)
        await engine.reconciler.repair_marked()
        assert await h.votes(poll_id) == {USER: {1, 2}}
        # 🇦 is not replayed into a refusal (whose reaction removal would be a wasted call each time)
        assert engine.votes.stats.actions.get("rejected_max_choices", 0) == 0


async def test_an_event_taken_in_before_a_repairs_read_does_not_overrule_it_when_applied_after(
    sqlite_url: str,
) -> None:
    """A removal waiting in the queue while the repair read the message (which already shows the
    user's add after it) is older than the read, however late it is applied."""
    async with harness(sqlite_url) as h:
        engine = h.engine()
        votes = engine.votes
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        taken_in = h.clock.now
        removal = dataclasses.replace(_event(message, USER), kind="remove", received_at=taken_in)
        h.clock.advance(seconds=2)
        read_began = h.clock.monotonic()
        h.clock.advance(seconds=3)  # the removal is applied 5 s after it was taken in
        await votes.apply_events([removal])
        assert not votes.superseded(_event(message, USER), read_began)
        later = dataclasses.replace(removal, received_at=h.clock.now - dt.timedelta(seconds=1))
        await votes.apply_events([later])  # taken in after the read began: it wins over the read
        assert votes.superseded(_event(message, USER), read_began)
