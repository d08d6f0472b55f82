"""Stopping with a backlog: what was not applied is repaired at the next start, and no reaction the
stopped replica still had to remove is left to look like a choice."""

from __future__ import annotations

import pytest

from polly.sandbox.gateway import FaultRates
from polly.supervisor import Supervisor
from tests.polly.engine.harness import USER, harness

pytestmark = pytest.mark.timeout(120)


async def test_sigterm_with_a_backlog_ends_with_every_vote_after_the_restart(sqlite_url: str) -> None:
    async with harness(sqlite_url, shutdown_timeout_seconds=0.001) as h:
        engine = h.engine()
        single = await h.add_poll()
        multiple = await h.add_poll(multiple_choice=True)
        anonymous = await h.add_poll(multiple_choice=True, anonymous=True)
        await engine.scheduler.tick()
        s, m, a = [await h.message_of(p) for p in (single, multiple, anonymous)]
        h.sandbox.user_add_reaction(s, USER, "🇦")
        h.sandbox.user_add_reaction(m, USER, "🇦")
        h.sandbox.user_add_reaction(m, USER, "🇧")
        await h.drain(engine)
        assert (await h.votes(single), await h.votes(multiple)) == ({USER: {0}}, {USER: {0, 1}})
        h.clock.advance(seconds=1)
        async with Supervisor(name="t", registry=None) as sup:
            engine.start(sup)
            await sup.wait_ready(10)
            # The backlog at SIGTERM: a change of mind, a removal, new votes on every kind.
            h.sandbox.user_add_reaction(s, USER, "🇧")
            h.sandbox.user_remove_reaction(m, USER, "🇦")
            for i in range(1, 200):
                h.sandbox.user_add_reaction(s, USER + i, "🇨")
                h.sandbox.user_add_reaction(m, USER + i, "🇧")
                h.sandbox.user_add_reaction(a, USER + i, "🇦")
            await sup.shutdown(0.001)  # nothing of it is applied in time
        assert await h.votes(single) == {USER: {0}}  # the backlog was not applied
        assert await h.votes(multiple) == {USER: {0, 1}}
        while h.sandbox.event_stats().depth:  # gone with the stopped process
            await h.sandbox.next_reaction_event()
        h.clock.advance(seconds=5)
        restarted = h.engine(replica="again")
        restarted.reconciler.mark_all()  # what start-up does
        await restarted.reconciler.repair_marked()
        h.clock.advance(seconds=11)  # the change of mind over a recorded vote needs its second look
        await restarted.reconciler.repair_marked()
        assert restarted.reconciler.marked == 0
        assert await h.votes(single) == {USER: {1}} | {USER + i: {2} for i in range(1, 200)}
        assert await h.votes(multiple) == {USER: {1}} | {USER + i: {1} for i in range(1, 200)}
        assert await h.votes(anonymous) == {USER + i: {0} for i in range(1, 200)}
        assert not any(h.sandbox.has_reaction(s, USER + i, "🇨") for i in range(200))


async def test_the_removals_still_pending_at_shutdown_are_made_before_stopping(sqlite_url: str) -> None:
    async with harness(sqlite_url, shutdown_timeout_seconds=5) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        await engine.scheduler.tick()
        message = await h.message_of(poll_id)
        h.sandbox.set_faults(FaultRates(server_error=1.0))
        h.sandbox.user_add_reaction(message, USER, "🇦")
        await h.drain(engine)  # recorded; the removal failed and waits for its retry
        h.sandbox.set_faults(FaultRates())
        assert engine.remover.pending == 1
        async with Supervisor(name="t", registry=None) as sup:
            engine.start(sup)
            await sup.wait_ready(10)
            assert await sup.shutdown(5) == ()
        assert engine.remover.pending == 0
        assert not h.sandbox.has_reaction(message, USER, "🇦")
        assert await h.votes(poll_id) == {USER: {0}}
