"""Connections to the test servers, used by the fixtures in ``conftest.py``.

Admin work (creating and dropping databases, claiming Redis db numbers) uses the drivers directly so
the fixtures do not depend on the code under test.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pymysql
import pytest
import redis

POSTGRES_URL = os.environ.get("POLLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("POLLY_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("POLLY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

REDIS_TEST_DBS = range(1, 16)
_CLAIM_SECONDS = 3600
_owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


REQUIRE_SERVICES = os.environ.get("POLLY_REQUIRE_SERVICES", "") == "1"


class ServiceUnavailableError(Exception):
    """The server could not be reached."""


def unavailable(name: str, err: BaseException) -> NoReturn:
    """Skip the test with a one-line reason, or fail it when ``POLLY_REQUIRE_SERVICES=1``."""
    first_line = str(err).splitlines()[0] if str(err) else ""
    reason = f"{name} unreachable ({type(err).__name__}: {first_line})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; POLLY_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)


class _Cursorish:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._conn.cursor() as cur:
            cur.execute(sql, params or None)

    def __enter__(self) -> _Cursorish:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


def admin_postgres(url: str) -> _Cursorish:
    """An autocommit connection to the PostgreSQL maintenance database."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.Error as err:
        raise ServiceUnavailableError(str(err)) from err
    return _Cursorish(conn)


def admin_mariadb(url: str) -> _Cursorish:
    """An autocommit connection to the MariaDB server."""
    parts = urlsplit(url)
    try:
        conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            autocommit=True,
            connect_timeout=3,
        )
    except pymysql.MySQLError as err:
        raise ServiceUnavailableError(str(err)) from err
    return _Cursorish(conn)


def redis_db_url(url: str, db: int) -> str:
    """``url`` pointing at db number ``db`` (the URL's path wins over a ``db=`` argument in redis-py)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@contextmanager
def _redis_admin(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_db_url(url, 0), socket_connect_timeout=3, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


def claim_redis_db(url: str) -> int:
    """Claim a free db number (1-15) with ``SET NX`` in db 0 and flush it; raises when none is free."""
    try:
        with _redis_admin(url) as admin:
            admin.ping()
            for db in REDIS_TEST_DBS:
                if admin.set(f"polly:test:claim:{db}", _owner, nx=True, ex=_CLAIM_SECONDS):
                    with redis.Redis.from_url(redis_db_url(url, db)) as client:
                        client.flushdb()
                    return db
    except redis.RedisError as err:
        raise ServiceUnavailableError(str(err)) from err
    msg = f"all Redis test dbs {REDIS_TEST_DBS.start}-{REDIS_TEST_DBS.stop - 1} are claimed"
    raise RuntimeError(msg)


def release_redis_db(url: str, db: int) -> None:
    """Flush the claimed db and release the claim."""
    with _redis_admin(url) as admin:
        with redis.Redis.from_url(redis_db_url(url, db)) as client:
            client.flushdb()
        if admin.get(f"polly:test:claim:{db}") == _owner.encode():
            admin.delete(f"polly:test:claim:{db}")
