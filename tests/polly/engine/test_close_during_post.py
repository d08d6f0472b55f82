"""A poll closed (by ``polly poll close`` or by its close time) while a replica is posting it: the
close releases the claim, the post still stores its message id, and the engine finalizes that
message like any poll closed elsewhere, so no open-looking poll is left behind on Discord."""

from __future__ import annotations

from typing import Any

from polly.polls.service import close_poll
from polly.sandbox.gateway import SandboxGateway
from tests.polly.engine.harness import harness


async def test_a_poll_closed_while_being_posted_is_finalized(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        poll_id = await h.add_poll()
        post = SandboxGateway.post_poll_message
        seen: list[tuple[str | None, str | None]] = []

        async def closing_post(self: SandboxGateway, channel_id: int, **kwargs: Any) -> Any:
            before = await h.poll(poll_id)
            assert close_poll(h.database, poll_id) == "active"  # the operator closes it mid-post
            after = await h.poll(poll_id)
            seen.extend([(before.status, before.message_id), (after.status, after.message_id)])
            return await post(self, channel_id, **kwargs)

        h.sandbox.post_poll_message = closing_post.__get__(h.sandbox)  # type: ignore[method-assign]
        await engine.scheduler.tick()
        (status, claim), released = seen
        assert status == "active"
        assert claim is not None
        assert claim.startswith("claim:")
        assert released == ("closed", None)
        message = await h.message_of(poll_id)  # the post landed on the closed poll
        assert (await h.poll(poll_id)).status == "closed"
        assert engine.scheduler.stats.late_claims == 0
        await engine.scheduler.tick()  # the closed poll is followed and finalized
        assert h.sandbox.truth(message).reactions == {}
        assert engine.scheduler.stats.finalized_external == 1
