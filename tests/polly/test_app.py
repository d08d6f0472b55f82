"""The assembly point: one database and one Redis pool per process, shared with upstream-compatible
callers, released in reverse order whichever step failed, and the shared loops on one supervisor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import polly.database
import polly.redis
from polly.app import App, open_app, start_telemetry
from polly.config import Settings, load_settings
from polly.db import current
from polly.errors import RedisMisconfiguredError, SchemaError
from polly.supervisor import Supervisor


def _settings(tmp_path: Path, **env: str) -> Settings:
    base = {
        "DISCORD_TOKEN": "x",
        "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
        "POLLY_REDIS__ENABLED": "false",
    }
    return load_settings(environ={**base, **env}, cwd=tmp_path)


async def test_upstream_callers_share_the_apps_one_database(tmp_path: Path) -> None:
    async with open_app(_settings(tmp_path)) as app:
        assert current.get_database() is app.database
        session = polly.database.get_db_session()
        try:
            assert session.get_bind() is app.database.sync_engine  # no second pool
            assert session.execute(text("select count(*) from polls")).scalar() == 0  # schema prepared
        finally:
            session.close()
    assert current._current is None  # released with the app


async def test_redis_is_the_process_connector_and_closed_after(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, POLLY_REDIS__ENABLED="true", REDIS_URL=redis_url)
    async with open_app(settings) as app:
        assert app.redis is not None
        assert polly.redis.current_redis() is app.redis
    assert polly.redis.current_redis() is None
    async with open_app(settings, redis=False) as app:
        assert app.redis is None


async def test_a_failing_step_releases_what_was_opened(tmp_path: Path, redis_url: str) -> None:
    wrong_db = redis_url.rsplit("/", 1)[0] + "/99"  # beyond the server's databases: misconfigured
    settings = _settings(tmp_path, POLLY_REDIS__ENABLED="true", REDIS_URL=wrong_db)
    with pytest.raises(RedisMisconfiguredError):
        async with open_app(settings):
            pytest.fail("must not get here")
    assert current._current is None
    assert polly.redis.current_redis() is None


async def test_an_unusable_database_is_refused_and_released(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("create table polls (id integer primary key)")  # upstream's table, columns missing
    with pytest.raises(SchemaError, match="polly db upgrade"):
        async with open_app(_settings(tmp_path)):
            pytest.fail("must not get here")
    assert current._current is None


class _Handle:
    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.finished = False
        self.shut = False

    async def run(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.finished = True

    def shutdown(self) -> None:
        self.shut = True


async def test_telemetry_runs_on_the_supervisor_and_is_awaited_at_shutdown(tmp_path: Path) -> None:
    handle = _Handle()
    async with open_app(_settings(tmp_path)) as opened:
        app = App(opened.settings, opened.database, None, [handle])
        async with Supervisor(name="t", shutdown_timeout_seconds=5) as sup:
            app.supervise(sup)
            await sup.wait_ready(5)
            assert handle.running.is_set()
            assert {"telemetry", "db-slow-checkouts"} <= {t.name for t in sup.live()}
            assert await sup.shutdown(5) == ()
        assert handle.finished  # cancelled and awaited, not abandoned


def test_telemetry_plugins_are_started_for_the_owner_to_run(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    class _Ep:
        name = "fake"

        def load(self) -> Any:
            def plugin(settings: Settings, **kw: Any) -> _Handle:
                calls.append(kw)
                return _Handle()

            return plugin

    class _Broken(_Ep):
        name = "broken"

        def load(self) -> Any:
            raise ImportError("no such module")

    settings = _settings(tmp_path)  # monitoring is on by default
    handles = start_telemetry(settings, lambda: [_Ep(), _Broken()])
    assert calls == [{"run_by_owner": True}]
    assert len(handles) == 1  # the broken plugin is logged and skipped
    off = _settings(tmp_path, OTEL_SDK_DISABLED="true")
    assert start_telemetry(off, lambda: [_Ep()]) == []


async def test_a_command_in_a_running_process_uses_its_database(tmp_path: Path) -> None:
    from polly.app import open_database

    settings = _settings(tmp_path)
    async with open_app(settings) as app:
        with open_database(settings) as database:
            assert database is app.database  # no second pool beside the running one
        assert current.configured() is app.database  # and the command left it open
    with open_database(settings) as database:
        assert current.configured() is database
    assert current.configured() is None
