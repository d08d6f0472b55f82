"""A new gateway session (a re-identify, not a resume) missed every event sent between the two:
the engine then repairs every active poll, as after downtime; a resume changes nothing."""

from __future__ import annotations

import random

from polly.engine.service import Engine
from polly.sandbox.gateway import SandboxGateway
from tests.polly.engine.harness import harness


class _Sessions(SandboxGateway):
    started = 1

    def sessions_started(self) -> int:
        return self.started


async def test_a_new_session_marks_every_active_poll(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        gateway = _Sessions(rng=random.Random(1))
        engine = Engine(h.settings, h.database, gateway, clock=h.clock)
        try:
            engine.note_shed()  # the first look only records the session count (start-up repairs all)
            assert not engine.reconciler._mark_all
            engine.note_shed()  # the same session (resumes do not count): nothing to repair
            assert not engine.reconciler._mark_all
            gateway.started = 2  # re-identified
            engine.note_shed()
            assert engine.reconciler._mark_all
        finally:
            engine.close()
