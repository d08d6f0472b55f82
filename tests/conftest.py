"""Shared fixtures: real SQLite, PostgreSQL, MariaDB and Redis, each test isolated.

Server URLs come from ``POLLY_TEST_POSTGRES_URL``, ``POLLY_TEST_MARIADB_URL`` and
``POLLY_TEST_REDIS_URL`` and default to the local servers. Each test gets its own PostgreSQL or
MariaDB database (created and dropped around it) or its own Redis db number (claimed atomically, so
parallel test runs on one server never share one, and flushed before and after). When a server is
unreachable its tests skip with a one-line reason, unless ``POLLY_REQUIRE_SERVICES=1``, where they
fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.services import (
    MARIADB_URL,
    POSTGRES_URL,
    REDIS_URL,
    ServiceUnavailableError,
    admin_mariadb,
    admin_postgres,
    claim_redis_db,
    redis_db_url,
    release_redis_db,
    unavailable,
)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's own polly settings from the environment or a stray config.yaml."""
    for var in list(os.environ):
        keep = var.startswith("POLLY_TEST_") or var == "POLLY_REQUIRE_SERVICES"
        if var.startswith(("POLLY_", "OTEL_", "DB_", "REDIS_")) and not keep:
            monkeypatch.delenv(var)
    for var in ("DATABASE_URL", "ASYNC_DATABASE_URL", "DISCORD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _no_process_database_left() -> Iterator[None]:
    """The process's one database (polly.db.current) does not outlive the test that configured it."""
    yield
    from polly.db import current

    current.dispose_database_sync()


@pytest.fixture(autouse=True)
def _no_redis_pool_left_open() -> Iterator[None]:
    """polly has one Redis pool per process: a test that leaves it open fails here, not in a later test."""
    yield
    import polly.redis

    connector = polly.redis.current_redis()
    if connector is not None:
        polly.redis._current = None  # so the next test starts clean
        pytest.fail(f"the test left the process's Redis pool open ({connector.url_redacted})", pytrace=False)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A fresh SQLite file database in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/polly.db"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped (with its connections) afterwards."""
    name = f"polly_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = admin_postgres(POSTGRES_URL)
    except ServiceUnavailableError as err:
        unavailable("PostgreSQL", err)
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        with admin_postgres(POSTGRES_URL) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A MariaDB database of the test's own, dropped afterwards."""
    name = f"polly_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = admin_mariadb(MARIADB_URL)
    except ServiceUnavailableError as err:
        unavailable("MariaDB", err)
        raise
    with admin:
        admin.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield _with_database(MARIADB_URL, name)
    finally:
        with admin_mariadb(MARIADB_URL) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url", "mariadb": "mariadb_url"}[request.param]
    url = request.getfixturevalue(fixture)
    assert isinstance(url, str)
    return url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis db number of the test's own (1-15), empty before and flushed after."""
    try:
        db = claim_redis_db(REDIS_URL)
    except ServiceUnavailableError as err:
        unavailable("Redis", err)
        raise
    url = redis_db_url(REDIS_URL, db)
    try:
        yield url
    finally:
        release_redis_db(REDIS_URL, db)
