"""Continuing a sandbox on a database an earlier ``polly run --sandbox`` used.

The sandbox's Discord lives in memory, so after a restart it knows none of the messages the
database's polls point at. :func:`continue_sandbox` recreates the message of every active poll
(same id, same channel, the bot's reactions), so the simulated voters vote on it again, and makes
new message ids start above every id the database holds, so a new poll never gets the id of an
old one (whose votes would then land on the old poll).
"""

from __future__ import annotations

from sqlalchemy import select

from polly.db.engine import Database
from polly.db.models import Poll
from polly.db.poll_rows import poll_view
from polly.errors import CorruptPollError
from polly.sandbox.gateway import SandboxGateway


async def continue_sandbox(database: Database, sandbox: SandboxGateway) -> int:
    """Adopt the active polls' messages into ``sandbox``; returns how many were recreated.

    A corrupt row or a non-numeric message id (a claim) is left to the engine, which reports it.
    """
    async with database.async_session_scope() as session:
        rows = list((await session.scalars(select(Poll).where(Poll.message_id.is_not(None)))).all())
        highest = 0
        active = []
        for row in rows:
            if str(row.message_id).isdigit():
                highest = max(highest, int(str(row.message_id)))
                if row.status == "active":
                    active.append(row)
        views = []
        for row in active:
            try:
                views.append(poll_view(row))
            except CorruptPollError:
                continue
    sandbox.continue_after(highest)
    adopted = 0
    for view in views:
        assert view.message_id is not None
        sandbox.ensure_channel(view.channel_id, view.server_id)
        adopted += sandbox.adopt_message(view.message_id, view.channel_id, view.emojis)
    return adopted
