"""``polly run``: the sandbox on embedded defaults, a clear error without a token, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from polly.cli import main
from polly.config import load_settings
from polly.engine.runner import RunOptions, run


async def test_sandbox_run_opens_polls_records_votes_and_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/polly.db"
    settings = load_settings(
        environ={
            "DATABASE_URL": url,
            "POLLY_ENGINE__STATUS_INTERVAL_SECONDS": "1",
            "POLLY_REDIS__ENABLED": "false",
        }
    )
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    runner = asyncio.ensure_future(
        run(settings, RunOptions(sandbox=True, events_per_second=20, voters=10), stop=stop)
    )
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if "votes recorded=" in caplog.text and "votes recorded=0 " not in caplog.text.splitlines()[-1]:
                break
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
    engine = create_engine(url)
    with engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(text("SELECT status, count(*) FROM polls GROUP BY status")).all()
        )
        votes = conn.execute(text("SELECT count(*) FROM votes")).scalar_one()
    engine.dispose()
    assert states == {"active": 3}
    assert votes > 0
    assert "polly is running" in caplog.text
    assert "stopping" in caplog.text


def test_run_without_a_token_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run"], env={"DATABASE_URL": f"sqlite:///{tmp_path}/p.db"})
    assert result.exit_code == 2  # a settings problem
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert "polly run --sandbox" in result.stderr
