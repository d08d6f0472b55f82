"""The fixtures reach every real server and isolate each test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pymysql
import redis

from tests.services import MARIADB_URL


def test_postgres_fixture_gives_an_empty_database_of_its_own(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert name is not None
    assert name[0].startswith("polly_t_")
    assert tables == (0,)


def test_mariadb_fixture_gives_an_empty_database_of_its_own(mariadb_url: str) -> None:
    database = mariadb_url.rsplit("/", 1)[1]
    assert database.startswith("polly_t_")
    conn = pymysql.connect(host="127.0.0.1", user="root", database=database)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            assert cur.fetchall() == ()
    finally:
        conn.close()
    assert MARIADB_URL.startswith("mysql://")


def test_redis_fixture_claims_an_empty_db_other_than_zero(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.connection_pool.connection_kwargs["db"] != 0
        assert client.dbsize() == 0
        client.set("probe", "1")
        assert client.get("probe") == b"1"
    finally:
        client.close()


def _run_pytest_with(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(env_overrides)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).name}::test_postgres_fixture_gives_an_empty_database_of_its_own",
        ],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_unreachable_server_skips_with_a_one_line_reason() -> None:
    result = _run_pytest_with(
        {"POLLY_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:9/test", "POLLY_REQUIRE_SERVICES": "0"}
    )
    assert result.returncode == 0, result.stdout
    skip_lines = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skip_lines) == 1
    assert "PostgreSQL unreachable" in skip_lines[0]


def test_unreachable_server_fails_when_services_are_required() -> None:
    result = _run_pytest_with(
        {"POLLY_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:9/test", "POLLY_REQUIRE_SERVICES": "1"}
    )
    assert result.returncode == 1
    assert "POLLY_REQUIRE_SERVICES=1 requires it" in result.stdout
