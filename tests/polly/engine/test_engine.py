"""The engine end to end on the sandbox: lifecycle, restarts, replicas, votes, faults, corrupt rows."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from polly.db.engine import Database
from polly.db.poll_rows import poll_view
from polly.engine.gateway import PostedMessage
from polly.errors import RateLimitedError, ServerError
from polly.sandbox.gateway import FaultRates, SandboxGateway
from polly.sandbox.soak_check import ReplicaGateway, VoteAudit, audit_poll
from tests.polly.engine.harness import CHANNEL, USER, Harness, harness

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def url(request: pytest.FixtureRequest) -> str:
    value = request.getfixturevalue(f"{request.param}_url")
    assert isinstance(value, str)
    return value


async def test_full_lifecycle_post_vote_change_close(url: str) -> None:
    """Scheduled → posted with its reactions → votes (replaced, reaction removed) → closed with results."""
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(emojis=["🍎", "🍐", "🍒"])
        await engine.scheduler.tick()
        poll = await h.poll(poll_id)
        assert poll.status == "active"
        message = await h.message_of(poll_id)
        truth = h.sandbox.truth(message)
        assert set(truth.reactions) == {"🍎", "🍐", "🍒"}
        assert truth.embed is not None
        assert "Which colour?" in (truth.embed.description or "")

        assert h.sandbox.user_add_reaction(message, USER + 1, "🍎")
        assert h.sandbox.user_add_reaction(message, USER + 2, "🍒")
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER + 1: {0}, USER + 2: {2}}
        assert not h.sandbox.has_reaction(message, USER + 1, "🍎")  # single choice: removed after recording

        assert h.sandbox.user_add_reaction(message, USER + 1, "🍐")  # changes their mind
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER + 1: {1}, USER + 2: {2}}
        assert await h.vote_rows(poll_id) == 2

        h.clock.advance(hours=2)
        await engine.scheduler.tick()
        assert (await h.poll(poll_id)).status == "closed"
        final = h.sandbox.truth(message)
        assert final.reactions == {}
        assert final.embed is not None
        assert "Closed" in final.embed.fields[0].value
        assert [t for _, t, _ in h.transitions] == ["scheduled->active", "active->closed"]
        assert await h.votes(poll_id) == {USER + 1: {1}, USER + 2: {2}}  # votes survive closing


async def test_restart_opens_and_closes_every_overdue_poll_on_the_first_tick(url: str) -> None:
    async with harness(url) as h:
        before = h.engine(replica="before")
        active = [await h.add_poll(name=f"active {i}") for i in range(4)]
        await before.scheduler.tick()
        h.clock.advance(hours=3)  # the process was down for three hours
        overdue_open = [
            await h.add_poll(name=f"open {i}", open_time=h.clock.now - timedelta(hours=2)) for i in range(6)
        ]
        expired = [
            await h.add_poll(name=f"expired {i}", close_time=h.clock.now - timedelta(minutes=5))
            for i in range(3)
        ]
        after = h.engine(replica="after")
        await after.scheduler.tick()
        for poll_id in overdue_open:
            assert (await h.poll(poll_id)).status == "active"
            await h.message_of(poll_id)
        for poll_id in (*expired, *active):
            assert (await h.poll(poll_id)).status == "closed"
        assert after.scheduler.stats.closed_unopened == 3


async def test_two_replicas_never_transition_a_poll_twice(postgres_url: str) -> None:
    async with harness(postgres_url) as h:
        ids = [await h.add_poll(name=f"p{i}") for i in range(60)]
        second = Database(h.settings.database)
        try:
            gateways = [ReplicaGateway(h.sandbox, 1000), ReplicaGateway(h.sandbox, 1000)]
            one = h.engine(gateways[0], replica="one")
            two = h.engine(gateways[1], replica="two", database=second)
            await asyncio.gather(one.scheduler.tick(), two.scheduler.tick())
            await asyncio.gather(one.scheduler.tick(), two.scheduler.tick())
            h.clock.advance(hours=2)
            await asyncio.gather(one.scheduler.tick(), two.scheduler.tick())
        finally:
            await second.dispose()
        counts = Counter((p, t) for p, t, _ in h.transitions)
        assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
        assert len(counts) == 2 * len(ids)
        assert len(h.sandbox.message_ids()) == len(ids)  # each poll was posted exactly once
        assert {r for _, _, r in h.transitions} == {"one", "two"}


async def test_multiple_choice_adds_removes_and_enforces_max_choices(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True, max_choices=2, options=["a", "b", "c", "d"])
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        for emoji in ("🇦", "🇧", "🇨"):
            h.sandbox.user_add_reaction(message, USER, emoji)
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {0, 1}}
        assert not h.sandbox.has_reaction(message, USER, "🇨")  # over the cap: reaction taken away
        assert h.sandbox.has_reaction(message, USER, "🇦")  # kept: multiple choice, not anonymous
        h.sandbox.user_remove_reaction(message, USER, "🇦")
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {1}}
        h.sandbox.user_add_reaction(message, USER, "🇨")
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {1, 2}}
        assert engine.votes.stats.actions["rejected_max_choices"] == 1


async def test_anonymous_multiple_choice_removes_reactions_and_ignores_the_echo(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True, anonymous=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        h.sandbox.user_add_reaction(message, USER, "🇧")
        await h.drain(engine)  # the bot's removals raise remove events naming the user
        await h.drain(engine)
        assert await h.votes(poll_id) == {USER: {0, 1}}
        assert h.sandbox.truth(message).reactions.get("🇦", frozenset()) == {h.sandbox.bot_user_id}


async def test_unknown_message_emoji_and_closed_poll_are_ignored(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        caplog.set_level(logging.DEBUG, logger="polly.engine.votes")
        h.sandbox.user_add_reaction(message, USER, "🦄")
        await h.drain(engine)
        h.clock.advance(hours=2)  # past close_time, before the tick closes it
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        assert await h.votes(poll_id) == {}
        assert engine.votes.stats.actions == {"ignored_emoji": 1, "ignored_closed": 1}
        assert "ignored: ignored_emoji" in caplog.text


async def test_replayed_events_change_nothing(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        event = await h.sandbox.next_reaction_event()
        while event.user_id != USER:
            event = await h.sandbox.next_reaction_event()
        for _ in range(5):
            await engine.votes.handle(event)
        assert await h.vote_rows(poll_id) == 1


async def test_reconciler_recovers_missed_votes_and_never_toggles(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        single = await h.add_poll(name="single")
        multi = await h.add_poll(name="multi", multiple_choice=True)
        await engine.scheduler.tick()
        m_single, m_multi = await h.message_of(single), await h.message_of(multi)
        h.sandbox.user_add_reaction(m_single, USER + 1, "🇧")
        h.sandbox.user_add_reaction(m_multi, USER + 2, "🇦")
        h.sandbox.user_add_reaction(m_multi, USER + 2, "🇨")
        while h.sandbox.event_stats().depth:  # the bot was down: these events are lost
            await h.sandbox.next_reaction_event()
        report = await engine.reconciler.pass_once()
        assert report.votes_added == 3
        assert await h.votes(single) == {USER + 1: {1}}
        assert await h.votes(multi) == {USER + 2: {0, 2}}
        assert not h.sandbox.has_reaction(m_single, USER + 1, "🇧")  # single choice: cleaned up
        for _ in range(3):  # kept multiple-choice reactions are re-read, never toggled away
            await engine.reconciler.pass_once()
        assert await h.votes(multi) == {USER + 2: {0, 2}}


async def test_reconciler_respects_its_call_budget(url: str) -> None:
    async with harness(url, reconcile_budget_per_tick=3) as h:
        engine = h.engine()
        for i in range(10):
            await h.add_poll(name=f"p{i}", multiple_choice=True)
        await engine.scheduler.tick()
        calls = h.sandbox.counters().calls
        report = await engine.reconciler.pass_once()
        assert report.calls <= 3
        assert h.sandbox.counters().calls - calls == report.calls


async def test_a_missing_message_orphans_the_poll_after_the_period_and_keeps_votes(url: str) -> None:
    async with harness(url, orphan_after_seconds=3600) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)
        h.sandbox.delete_message(message)
        await engine.reconciler.pass_once()
        assert (await h.poll(poll_id)).status == "active"  # a first 404 is not "gone"
        for minutes in (20, 20, 25):  # gone for 20, 40, then 65 minutes of a 60-minute period
            h.clock.advance(minutes=minutes)
            engine.reconciler._retry_at.clear()
            await engine.reconciler.pass_once()
            if minutes == 20:
                assert (await h.poll(poll_id)).status == "active"
        poll = await h.poll(poll_id)
        assert poll.status == "closed"
        assert await h.votes(poll_id) == {USER: {0}}
        assert engine.scheduler.stats.orphaned == 1


async def test_transient_errors_never_count_as_gone(url: str) -> None:
    async with harness(url, orphan_after_seconds=60) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        h.sandbox.set_faults(FaultRates(server_error=0.5, rate_limited=0.25, forbidden=0.25))
        for _ in range(20):
            engine.reconciler._retry_at.clear()
            engine.reconciler._held.clear()
            await engine.reconciler.pass_once()
        assert (await h.poll(poll_id)).status == "active"
        assert engine.scheduler.stats.orphaned == 0


async def test_a_corrupt_row_is_reported_and_left_alone(url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with harness(url) as h:
        engine = h.engine()
        good = await h.add_poll(name="good")
        bad = await h.add_poll(name="bad")
        async with h.database.async_session_scope() as session:
            await session.execute(
                text("UPDATE polls SET options_json = '{not json' WHERE id = :id"), {"id": bad}
            )
        await engine.scheduler.tick()
        assert (await h.poll(good)).status == "active"
        assert f"poll {bad}: options_json: is not valid JSON" in caplog.text
        assert (await h.poll(bad)).status == "scheduled"


async def test_fault_storm_loses_no_vote_and_deletes_no_poll(url: str) -> None:
    faults = FaultRates(server_error=0.12, rate_limited=0.06, not_found=0.05, forbidden=0.04, latency=0.0)
    async with harness(url, faults=faults) as h:
        engine = h.engine()
        ids = [
            await h.add_poll(name=f"p{i}", multiple_choice=i % 3 == 1, anonymous=i % 4 == 0)
            for i in range(12)
        ]
        for _ in range(12):  # opens are retried after failures until every poll has a message
            await engine.scheduler.tick()
            h.clock.advance(minutes=3)
        rng = random.Random(3)
        for _ in range(600):
            picked = h.sandbox.pick_votable(rng)
            if picked is None:
                break
            message, emojis = picked
            user, emoji = USER + rng.randrange(15), rng.choice(emojis)
            if h.sandbox.has_reaction(message, user, emoji):
                h.sandbox.user_remove_reaction(message, user, emoji)
            else:
                h.sandbox.user_add_reaction(message, user, emoji)
            if rng.random() < 0.2:
                h.clock.advance(seconds=1)
                await h.drain(engine)
        await h.drain(engine)
        h.sandbox.set_faults(FaultRates())
        for _ in range(5):
            h.clock.advance(seconds=5)
            engine.reconciler._retry_at.clear()
            engine.reconciler._held.clear()
            await engine.reconciler.pass_once()
            await h.drain(engine)
        audit = VoteAudit()
        for poll_id in ids:
            row = await h.poll(poll_id)
            view = poll_view(row)
            assert view.message_id is not None, f"poll {poll_id} never got a message"
            audit_poll(audit, view, h.sandbox.truth(view.message_id), await h.votes(poll_id), exact=True)
        assert audit.expected_votes > 50
        assert (audit.lost_votes, audit.phantom_votes) == (0, 0), audit.examples
        assert len(ids) == len({(await h.poll(i)).id for i in ids})
        assert sum(h.sandbox.counters().faults.values()) > 20


async def test_polls_closed_elsewhere_get_their_final_embed(url: str) -> None:
    async with harness(url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        async with h.database.async_session_scope() as session:
            await session.execute(text("UPDATE polls SET status = 'closed' WHERE id = :id"), {"id": poll_id})
        await engine.scheduler.tick()
        truth = h.sandbox.truth(message)
        assert truth.reactions == {}
        assert truth.embed is not None
        assert "Closed" in truth.embed.fields[0].value


async def test_embed_edits_are_coalesced(url: str) -> None:
    async with harness(url, embed_update_interval_seconds=60) as h:
        engine = h.engine()
        poll_id = await h.add_poll(multiple_choice=True)
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        for i in range(20):
            h.sandbox.user_add_reaction(message, USER + i, "🇦")
        await h.drain(engine)
        await engine.embeds.flush_due()
        await engine.embeds.flush_due()
        assert engine.embeds.edits == 1
        assert engine.embeds.pending == 0
        h.sandbox.user_add_reaction(message, USER + 99, "🇦")
        await h.drain(engine)
        await engine.embeds.flush_due()  # within the interval: marked, not edited
        assert (engine.embeds.edits, engine.embeds.pending) == (1, 1)
        h.clock.advance(seconds=61)
        await engine.embeds.flush_due()
        assert (engine.embeds.edits, engine.embeds.pending) == (2, 0)


def test_harness_is_typed() -> None:
    """Every function of the harness annotates its parameters and result, and mypy --strict checks it,
    so a test driving the engine through it is type-checked (an untyped def would be skipped)."""
    import ast
    import inspect
    import sys
    import tomllib

    tree = ast.parse(inspect.getsource(sys.modules[Harness.__module__]))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    untyped = []
    for fn in functions:
        a = fn.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(p for p in (a.vararg, a.kwarg) if p)]
        missing = [p.arg for p in params if p.annotation is None and p.arg not in ("self", "cls")]
        untyped += [f"{fn.name}({', '.join(missing)})"] if missing else []
        untyped += [f"{fn.name} -> ?"] if fn.returns is None else []
    assert len(functions) >= 10, "the harness's functions were not found"
    assert untyped == []
    mypy = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert "tests" in mypy["files"]


async def test_a_failed_post_is_retried_after_seconds_not_the_claim_lease(url: str) -> None:
    async with harness(url, faults=FaultRates(server_error=1.0)) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        assert (await h.poll(poll_id)).message_id.startswith("claim:")  # type: ignore[union-attr]
        h.sandbox.set_faults(FaultRates())
        h.clock.advance(seconds=1)
        await engine.scheduler.tick()  # backoff (2 s) not over: still claimed
        assert (await h.poll(poll_id)).message_id.startswith("claim:")  # type: ignore[union-attr]
        h.clock.advance(seconds=2)
        await engine.scheduler.tick()
        await h.message_of(poll_id)
        assert len(h.sandbox.message_ids()) == 1
        assert engine.scheduler.stats.takeovers == 1


class _LimitedChannel(SandboxGateway):
    """A sandbox whose one channel answers every post with 429."""

    limited: int = 0

    async def post_poll_message(self, channel_id: int, **kwargs: Any) -> PostedMessage:
        if channel_id == self.limited:
            raise RateLimitedError("429 on the limited channel", retry_after_seconds=30.0)
        return await super().post_poll_message(channel_id, **kwargs)


async def test_a_rate_limited_channel_holds_only_that_channel(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        gateway = _LimitedChannel(rng=random.Random(1), clock=h.clock.monotonic)
        gateway.limited = CHANNEL + 1
        engine = h.engine(gateway)
        held = [await h.add_poll(name=f"held {i}", channel_id=str(CHANNEL + 1)) for i in range(3)]
        free = [await h.add_poll(name=f"free {i}") for i in range(3)]
        await engine.scheduler.tick()
        assert engine.scheduler.stats.errors["RateLimitedError"] == 1  # one 429, then the channel waits
        for poll_id in free:
            await h.message_of(poll_id)
        assert [(await h.poll(p)).status for p in held].count("scheduled") == 2
        gateway.limited = 0
        h.clock.advance(seconds=31)
        await engine.scheduler.tick()
        for poll_id in held:
            await h.message_of(poll_id)


async def test_a_failed_final_edit_is_retried_on_the_next_tick(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.clock.advance(hours=2)
        await engine.scheduler.tick()
        assert (await h.poll(poll_id)).status == "closed"
        assert h.sandbox.truth(message).reactions != {}  # the final edit failed
        h.sandbox.set_faults(FaultRates())
        await engine.scheduler.tick()
        assert h.sandbox.truth(message).reactions == {}
        embed = h.sandbox.truth(message).embed
        assert embed is not None
        assert "Closed" in embed.fields[0].value


async def test_the_message_id_is_stored_before_any_reaction_and_failed_reactions_come_later(
    sqlite_url: str,
) -> None:
    async with harness(sqlite_url) as h:
        seen: list[str | None] = []

        class Flaky(SandboxGateway):
            failures = 1

            async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
                seen.append((await h.poll(poll_id)).message_id)
                if self.failures:
                    self.failures -= 1
                    raise ServerError("503")
                await super().add_reaction(channel_id, message_id, emoji)

        gateway = Flaky(rng=random.Random(2), clock=h.clock.monotonic)
        engine = h.engine(gateway)
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        assert set(seen) == {str(message)}  # stored before the first reaction was tried
        assert gateway.failures == 0
        # The failed reaction was completed later in the same tick, by the pass over unfinished posts.
        assert set(gateway.truth(message).reactions) == {"🇦", "🇧", "🇨"}


async def test_a_polls_image_goes_out_first_with_its_text(sqlite_url: str, tmp_path: Path) -> None:
    uploads = tmp_path / "static" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "cats.png").write_bytes(b"\x89PNG" + bytes(100))
    async with harness(sqlite_url, image_root=str(tmp_path)) as h:
        engine = h.engine()
        with_image = await h.add_poll(image_path="static/uploads/cats.png", image_message_text="Cats!")
        missing = await h.add_poll(image_path="static/uploads/gone.png", image_message_text="Dogs!")
        escaping = await h.add_poll(image_path="../../etc/passwd")
        await engine.scheduler.tick()
        first, *_ = h.sandbox.message_ids()
        truth = h.sandbox.truth(first)
        assert (truth.content, truth.attachment) == ("Cats!", "cats.png")
        assert first < await h.message_of(with_image)  # the image went out before the poll
        texts = {h.sandbox.truth(m).content: h.sandbox.truth(m).attachment for m in h.sandbox.message_ids()}
        assert texts["Dogs!"] is None  # a missing file: the text goes out alone
        await h.message_of(missing)
        await h.message_of(escaping)  # a path outside image_root is never read
        assert len(h.sandbox.message_ids()) == 5


async def test_failure_records_go_with_the_claim(sqlite_url: str) -> None:
    async with harness(sqlite_url, faults=FaultRates(not_found=1.0)) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        assert poll_id in engine.scheduler._open_failed_since
        async with h.database.async_session_scope() as session:
            await session.execute(text("UPDATE polls SET status = 'closed' WHERE id = :id"), {"id": poll_id})
        await engine.scheduler.tick()
        assert engine.scheduler._open_failed_since == {}
        assert engine.scheduler._retry_post == {}
