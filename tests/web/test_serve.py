"""Serving the dashboard: on the supervisor inside polly's loop, off without sign-in settings, a
clear error for a port in use, and ``polly web``'s refusal without its variables."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from polly.cli.main import main
from polly.config import load_settings
from polly.db.engine import Database
from polly.db.schema import create_schema
from polly.errors import PollyError
from polly.supervisor import Supervisor
from polly.web.serve import bind, serve_web
from tests.web.support import World, web_settings


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_served_on_the_supervisor_until_it_shuts_down(
    world: World, sqlite_url: str, tmp_path: Path
) -> None:
    port = _port()
    settings = web_settings(
        world.discord, sqlite_url, tmp_path, POLLY_WEB__HOST="127.0.0.1", POLLY_WEB__PORT=str(port)
    )
    database = Database(settings.database)
    create_schema(database.sync_engine)
    database.open()
    try:
        async with Supervisor(name="t", shutdown_timeout_seconds=5) as sup:
            assert serve_web(settings, database, None, sup)
            await sup.wait_ready(10)
            async with httpx.AsyncClient() as client:
                page = await client.get(f"http://127.0.0.1:{port}/")
            assert page.status_code == 200
            assert "Sign in with Discord" in page.text
            assert "server" not in {k.lower() for k in page.headers}  # no server banner
            assert await sup.shutdown(5) == ()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{port}/")
    finally:
        await database.dispose()


async def test_off_without_sign_in_settings(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        environ={"DATABASE_URL": sqlite_url, "SECRET_KEY": "your-secret-key-change-this"}
    )
    caplog.set_level(logging.INFO, "polly.web")
    async with Supervisor(name="t") as sup:
        assert not serve_web(settings, Database(settings.database), None, sup)
        assert sup.live_count == 0
    assert (
        "dashboard off: DISCORD_CLIENT_ID, DISCORD_CLIENT_SECRET, SECRET_KEY (upstream's placeholder"
        in caplog.text
    )
    disabled = load_settings(environ={"POLLY_WEB__ENABLED": "false"})
    async with Supervisor(name="t") as sup:
        assert not serve_web(disabled, Database(disabled.database), None, sup)


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            PollyError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(Address already in use\)"
        ):
            bind("127.0.0.1", port)


def test_polly_web_refuses_to_start_without_its_variables(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["web"], env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.exit_code == 1
    assert "polly: the dashboard needs DISCORD_CLIENT_ID, DISCORD_CLIENT_SECRET, SECRET_KEY" in result.output
    assert "Traceback" not in result.output


async def test_polly_web_keeps_sessions_in_the_process_redis_pool(
    world: World, sqlite_url: str, tmp_path: Path, redis_url: str
) -> None:
    import asyncio
    import os
    import signal

    import redis as redis_sync

    from polly import redis as polly_redis
    from polly.cli.web_cmd import _serve
    from polly.web.sessions import KEY_PREFIX
    from tests.web.support import sign_in

    port = _port()
    settings = web_settings(
        world.discord, sqlite_url, tmp_path, POLLY_WEB__HOST="127.0.0.1", POLLY_WEB__PORT=str(port),
        POLLY_REDIS__ENABLED="true", REDIS_URL=redis_url,
    )  # fmt: skip
    settings = settings.model_copy(
        update={
            "web": settings.web.model_copy(update={"redirect_uri": f"http://127.0.0.1:{port}/auth/callback"})
        }
    )
    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        tasks.create_task(_serve(settings))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):
                    try:
                        await client.get("/")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
                connector = polly_redis.current_redis()
                assert connector is not None  # the dashboard opened the process's one pool
                await sign_in(client, world.discord, world.manager)
                assert (await client.get("/servers")).status_code == 200
            assert len(redis_sync.Redis.from_url(redis_url).keys(f"{KEY_PREFIX}*")) == 1
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # _serve's own handler: stop, as an operator would
    assert polly_redis.current_redis() is None  # closed at shutdown
