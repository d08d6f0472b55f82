"""Database URLs: upstream-style URLs in, the driver polly uses for each engine out.

Upstream Polly deployments set ``DATABASE_URL`` to a bare URL (``sqlite:///./db/polly.db``,
``postgresql://user:pw@host/db``, ``mysql://...``) and sometimes ``ASYNC_DATABASE_URL`` to an
``sqlite+aiosqlite://`` one. polly keeps the backend, host, credentials, database and query of the URL
as given and always chooses the driver itself, one maintained driver per backend and role:

============  ==============  ================
backend       sync engine     async engine
============  ==============  ================
sqlite        pysqlite        aiosqlite
postgresql    psycopg (3)     psycopg (3)
mysql         pymysql         aiomysql
mariadb       pymysql         aiomysql
============  ==============  ================

A driver named in the URL (``postgresql+psycopg2://``, ``sqlite+aiosqlite://``) is replaced, so one URL
serves both engines. Any other backend is a :class:`~polly.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from polly.errors import ConfigError

Backend = Literal["sqlite", "postgresql", "mysql", "mariadb"]
Role = Literal["sync", "async"]

_ALIASES: dict[str, Backend] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
}
_DRIVERS: dict[Backend, dict[Role, str]] = {
    "sqlite": {"sync": "pysqlite", "async": "aiosqlite"},
    "postgresql": {"sync": "psycopg", "async": "psycopg"},
    "mysql": {"sync": "pymysql", "async": "aiomysql"},
    "mariadb": {"sync": "pymysql", "async": "aiomysql"},
}


def parse_url(raw: str) -> URL:
    """Parse ``raw``; a malformed URL is a :class:`ConfigError` that never echoes the URL's secrets."""
    try:
        return make_url(raw)
    except (ArgumentError, ValueError) as err:  # ValueError: a port that is not a number
        msg = (
            "database.url is not a valid URL (expected e.g. sqlite:///./db/polly.db or postgresql://host/db)"
        )
        raise ConfigError([msg], source="database settings") from err


def backend_of(url: URL | str) -> Backend:
    """The backend of ``url`` (``postgres`` counts as ``postgresql``); others raise :class:`ConfigError`."""
    parsed = parse_url(url) if isinstance(url, str) else url
    name = parsed.get_backend_name()
    backend = _ALIASES.get(name)
    if backend is None:
        allowed = ", ".join(sorted(_ALIASES))
        msg = f"database.url: unsupported database {name!r}; allowed: {allowed}"
        raise ConfigError([msg], source="database settings")
    return backend


def driver_url(url: URL | str, role: Role) -> URL:
    """``url`` rewritten to polly's driver for ``role`` (see the module table); everything else kept."""
    parsed = parse_url(url) if isinstance(url, str) else url
    backend = backend_of(parsed)
    return parsed.set(drivername=f"{backend}+{_DRIVERS[backend][role]}")


def to_async_url(url: str) -> str:
    """Upstream's ``_to_async_url``: the async driver URL as a string (password included: not for logs)."""
    return driver_url(url, "async").render_as_string(hide_password=False)


def is_sqlite_memory(url: URL) -> bool:
    """True for an in-memory SQLite URL (``sqlite://`` or ``sqlite:///:memory:``)."""
    return backend_of(url) == "sqlite" and url.database in (None, "", ":memory:")


def pool_name(url: URL, role: Role) -> str:
    """A stable, credential-free pool name: ``<role>:<backend>://<host>[:port]/<database>``.

    The user name is dropped along with the password (it is not a secret, but it is not needed to tell
    pools apart and some deployments treat it as one); query parameters are dropped too.
    """
    backend = backend_of(url)
    if backend == "sqlite":
        return f"{role}:sqlite:///{url.database or ':memory:'}"
    # A host holding "@" is the tail of a password with an unescaped "@": never show it.
    host = (url.host or "localhost").rpartition("@")[2]
    port = f":{url.port}" if url.port else ""
    return f"{role}:{backend}://{host}{port}/{url.database or ''}"
