"""The one pool-naming scheme, for discovered pools and for pools an application reports itself.

``db.client.connection.pool.name`` is, in order:

1. the name the pool was given (SQLAlchemy ``pool_logging_name``);
2. for a redis-py pool while redis-py's own metrics are on, redis-py's name for it
   (``host:port_<id>``), so that its series and these join under one pool name;
3. otherwise the semantic-convention fallback ``server.address:server.port/db.namespace``
   (``sqlite:<path>`` for a SQLite file, ``unix:<path>/<db>`` for a Redis socket). User names,
   passwords and query parameters never appear.

When a second live pool in the process would get the same name, it gets ``#async`` appended if it
is an asyncio pool and that is free, else ``#2``, ``#3``, ...: names stay unique, as the
convention asks, and stable for the pool's life.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def fallback_pool_name(host: str | None, port: int | None, namespace: str | None) -> str:
    """``server.address:server.port/db.namespace``; missing parts are left out."""
    address = host or "localhost"
    where = f"{address}:{port}" if port else address
    return f"{where}/{namespace}" if namespace else where


def sqlalchemy_base_name(engine: Any) -> str:
    """The engine's ``pool_logging_name`` if set, else the fallback from its URL."""
    sync = getattr(engine, "sync_engine", engine)
    logging_name = getattr(sync.pool, "_orig_logging_name", None) or getattr(sync.pool, "logging_name", None)
    if logging_name:
        return str(logging_name)
    url = sync.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{url.database or ':memory:'}"
    return fallback_pool_name(url.host, url.port, url.database)


def redis_base_name(pool: Any) -> str:
    """The fallback name of a redis-py pool, from its connection arguments."""
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return fallback_pool_name(kwargs.get("host"), kwargs.get("port"), str(kwargs.get("db", 0)))


def unique_name(base: str, taken: Collection[str], *, is_async: bool) -> str:
    """``base``, or the first free of ``base#async`` (asyncio pools) and ``base#2``, ``base#3``, ..."""
    if base not in taken:
        return base
    if is_async and f"{base}#async" not in taken:
        return f"{base}#async"
    n = 2
    while f"{base}#{n}" in taken:
        n += 1
    return f"{base}#{n}"
