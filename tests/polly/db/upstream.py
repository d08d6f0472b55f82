"""Upstream's side of the compatibility tests: its DDL and raw-SQL access through the drivers only.

Nothing here uses polly's code, so a test can build a database exactly as upstream would have and
check, with upstream's conventions, what polly wrote.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql


def naive_utc(*fields: int) -> datetime:
    """A naive UTC datetime from (year, month, day[, hour, minute, second]): upstream's stored form."""
    year, month, day, hour, minute, second = (*fields, 0, 0, 0)[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).replace(tzinfo=None)


SCHEMA_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "schema"
DDL = {
    "sqlite": "upstream-sqlite-v11.sql",
    "sqlite-v4": "upstream-sqlite-v4.sql",
    "postgresql": "upstream-postgresql.sql",
    "mysql": "upstream-mariadb.sql",
}


def kind_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+")[0]
    return {"postgres": "postgresql", "mariadb": "mysql"}.get(scheme, scheme)


def statements(name: str) -> list[str]:
    text = (SCHEMA_DIR / DDL[name]).read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


class RawDB:
    """A plain DB-API connection to ``url``; ``?`` placeholders work on every backend."""

    def __init__(self, url: str) -> None:
        self.kind = kind_of(url)
        parts = urlsplit(url)
        if self.kind == "sqlite":
            self.conn: Any = sqlite3.connect(url.split(":///", 1)[1])
        elif self.kind == "postgresql":
            self.conn = psycopg.connect(url)
        else:
            self.conn = pymysql.connect(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 3306,
                user=unquote(parts.username or "root"),
                password=unquote(parts.password or ""),
                database=parts.path.lstrip("/"),
                charset="utf8mb4",
            )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind != "sqlite":
            sql = sql.replace("?", "%s")
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            rows = list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()
        self.conn.commit()
        return rows

    def apply(self, ddl_name: str) -> None:
        for statement in statements(ddl_name):
            self.execute(statement)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RawDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_upstream_schema(url: str, sqlite_variant: str = "sqlite") -> None:
    """Build upstream's schema at ``url`` from the reference DDL (``sqlite_variant``: sqlite/sqlite-v4)."""
    kind = kind_of(url)
    with RawDB(url) as raw:
        raw.apply(sqlite_variant if kind == "sqlite" else kind)
