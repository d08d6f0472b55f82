"""``polly run --sandbox`` stopped and started again on the same database keeps working."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from polly.config import load_settings
from polly.engine.runner import RunOptions, run

pytestmark = pytest.mark.timeout(90)


def _counts(url: str) -> tuple[int, list[str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        votes = int(conn.execute(text("SELECT count(*) FROM votes")).scalar_one())
        ids = [
            str(m) for (m,) in conn.execute(text("SELECT message_id FROM polls WHERE message_id IS NOT NULL"))
        ]
    engine.dispose()
    return votes, ids


async def _run_until_votes(url: str, caplog: pytest.LogCaptureFixture, votes_before: int) -> None:
    settings = load_settings(
        environ={
            "DATABASE_URL": url,
            "POLLY_ENGINE__STATUS_INTERVAL_SECONDS": "1",
            "POLLY_REDIS__ENABLED": "false",
        }
    )
    stop = asyncio.Event()
    runner = asyncio.ensure_future(
        run(settings, RunOptions(sandbox=True, events_per_second=40, voters=10), stop=stop)
    )
    try:
        for _ in range(150):
            await asyncio.sleep(0.1)
            if await asyncio.to_thread(lambda: _counts(url)[0]) > votes_before + 3:
                break
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


async def test_a_second_run_continues_the_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path}/polly.db"
    caplog.set_level(logging.INFO)
    await _run_until_votes(url, caplog, 0)
    first_votes, first_ids = _counts(url)
    assert first_votes > 0
    assert len(first_ids) == 3

    # A poll created between the runs gets a message id from the second run's sandbox.
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO polls (name, question, options_json, emojis_json, server_id, channel_id,"
                " creator_id, status, timezone, open_time, close_time, open_immediately, anonymous,"
                " multiple_choice)"
                " SELECT 'later', question, options_json, emojis_json, server_id, channel_id, creator_id,"
                " 'scheduled', timezone, open_time, close_time, 1, 0, 1 FROM polls LIMIT 1"
            )
        )
    engine.dispose()
    caplog.clear()
    await _run_until_votes(url, caplog, first_votes)
    second_votes, second_ids = _counts(url)
    assert "continued 3 poll message(s)" in caplog.text
    assert second_votes > first_votes, "the second run recorded no vote"
    assert len(second_ids) == 4
    assert len(set(second_ids)) == len(second_ids), f"duplicate message ids: {second_ids}"
    assert set(first_ids) < set(second_ids)
