from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from polly.db.engine import Database
from tests.discord_standin import DiscordStandin
from tests.web.support import World, build_world, dashboard, web_settings


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with DiscordStandin() as discord:
        yield build_world(discord)


@pytest.fixture
async def web(
    world: World, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, Database]]:
    async with dashboard(web_settings(world.discord, sqlite_url, tmp_path)) as parts:
        yield parts
