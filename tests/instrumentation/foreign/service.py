"""A small foreign asyncio service (not polly) with no instrumentation code in it.

aiohttp, its own async SQLAlchemy engine on PostgreSQL (asyncpg) and a ``redis.asyncio`` pool. Run
it under ``opentelemetry-instrument python service.py``; everything it reports comes from the
instrumentation's zero-code discovery. Configuration by environment: ``SERVICE_PORT``,
``SERVICE_DATABASE_URL`` (``postgresql+asyncpg://...``), ``SERVICE_REDIS_URL``.

``GET /work?sleep=S``: one query, one Redis round trip, then ``S`` seconds of sleep (so request
tasks are alive long enough to be counted). ``GET /health``: 200.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ENGINE = create_async_engine(os.environ["SERVICE_DATABASE_URL"], pool_size=3, max_overflow=2)
REDIS = aioredis.Redis.from_url(os.environ["SERVICE_REDIS_URL"], max_connections=5)


async def work(request: web.Request) -> web.Response:
    seconds = float(request.query.get("sleep", "0"))
    async with ENGINE.connect() as connection:
        value = (await connection.execute(text("SELECT 1"))).scalar_one()
    await REDIS.set("foreign-service:hits", str(value))
    await asyncio.sleep(seconds)
    return web.Response(text="ok")


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def close(_app: web.Application) -> None:
    await ENGINE.dispose()
    await REDIS.aclose()


def main() -> None:
    app = web.Application()
    app.router.add_get("/work", work)
    app.router.add_get("/health", health)
    app.on_cleanup.append(close)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["SERVICE_PORT"]), print=None)


if __name__ == "__main__":
    main()
