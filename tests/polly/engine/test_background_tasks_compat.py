"""Upstream's ``polly.background_tasks`` scheduler functions, mapped onto the engine."""

from __future__ import annotations

import pytest

from polly import background_tasks
from polly.db.current import configure_database, dispose_database
from polly.engine.service import set_current_engine
from tests.polly.engine.harness import harness, settings_for


async def test_functions_drive_the_running_engine(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        engine = h.engine()
        due = await h.add_poll()
        set_current_engine(engine)
        try:
            assert await background_tasks.start_scheduler() is True
            assert background_tasks.get_scheduler() is engine.scheduler
            assert background_tasks.scheduler is engine.scheduler
            assert await background_tasks.restore_scheduled_jobs() == 1
            assert (await h.poll(due)).status == "active"
            message = await h.message_of(due)
            result = await background_tasks.close_poll(due)
            assert result == {"success": True, "message": f"poll {due} closed"}
            assert (await h.poll(due)).status == "closed"
            assert h.sandbox.truth(message).reactions == {}
            again = await background_tasks.close_poll(due)
            assert again["message"] == f"poll {due} was not active"
            assert await background_tasks.cleanup_polls_with_deleted_messages() == 0
            await background_tasks.shutdown_scheduler()
            await background_tasks.start_reaction_safeguard()
        finally:
            set_current_engine(None)
    with pytest.raises(background_tasks.EngineNotRunningError, match="only inside `polly run`"):
        background_tasks.get_scheduler()
    assert await background_tasks.start_scheduler() is False
    assert await background_tasks.restore_scheduled_jobs() == 0


async def test_close_poll_without_an_engine_closes_the_row(sqlite_url: str) -> None:
    async with harness(sqlite_url) as h:
        poll_id = await h.add_poll()
        configure_database(settings_for(sqlite_url).database)
        try:
            result = await background_tasks.close_poll(poll_id)
        finally:
            await dispose_database()
        assert result["success"] is True
        assert (await h.poll(poll_id)).status == "closed"


def test_unknown_module_attributes_still_raise() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = background_tasks.nope
