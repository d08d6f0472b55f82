"""Fixtures for the poll management tests: databases with upstream's schema, example files in the future."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.schema import create_schema

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "import"
EXAMPLES = ("simple_poll_example.json", "example_poll.json", "comprehensive_poll_example.json")
IDS = {"server_id": "123456789012345678", "channel_id": "987654321098765432"}


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def schema_url(request: pytest.FixtureRequest) -> str:
    """A SQLite, PostgreSQL or MariaDB database with polly's (upstream's) schema."""
    url = request.getfixturevalue(f"{request.param}_url")
    assert isinstance(url, str)
    create_schema(url)
    return url


@pytest.fixture
def database(schema_url: str) -> Iterator[Database]:
    db = Database(DatabaseSettings(url=SecretUrl(schema_url)))
    try:
        yield db
    finally:
        db.dispose_sync()


def local_time(delta: timedelta, tz_name: str = "US/Eastern") -> str:
    """Now + ``delta`` as ``YYYY-MM-DDTHH:MM`` in ``tz_name`` (the import format)."""
    return (datetime.now(UTC) + delta).astimezone(ZoneInfo(tz_name)).strftime("%Y-%m-%dT%H:%M")


def future_example(name: str, directory: Path) -> Path:
    """Upstream's example file with its times (if any) moved one day into the future."""
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    if "open_time" in data:
        tz_name = data.get("timezone", "US/Eastern")
        data["open_time"] = local_time(timedelta(days=1), tz_name)
        data["close_time"] = local_time(timedelta(days=2, hours=3), tz_name)
    out = directory / name
    out.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out
