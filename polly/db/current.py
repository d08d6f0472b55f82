"""The process-wide :class:`~polly.db.engine.Database` that compatibility callers reach.

``polly run`` calls :func:`configure_database` once with its settings; code written against upstream's
module-level names (``polly.database.get_db_session`` ...) calls :func:`get_database`, which, if nothing
was configured, loads the settings the way ``polly`` does (environment, ``.env``, ``config.yaml``) on
first use. Nothing connects at import time, and no engine exists until a session is asked for.
"""

from __future__ import annotations

import threading

from polly.config import DatabaseSettings, load_settings
from polly.db.engine import Database

_lock = threading.Lock()
_current: Database | None = None


def configure_database(settings: DatabaseSettings) -> Database:
    """Make a :class:`Database` for ``settings`` the process-wide one and return it.

    Raises :class:`RuntimeError` when one is already configured: dispose it first
    (:func:`dispose_database`), so its pooled connections are not leaked.
    """
    global _current  # noqa: PLW0603 - the one process-wide instance is the point of this module
    with _lock:
        if _current is not None:
            msg = f"a database is already configured ({_current.redacted_url}); call dispose_database() first"
            raise RuntimeError(msg)
        _current = Database(settings)
        return _current


def configured() -> Database | None:
    """The process-wide database if one is configured (never creates one)."""
    return _current


def get_database() -> Database:
    """The process-wide database, configured from the loaded settings on first use."""
    global _current  # noqa: PLW0603 - see configure_database
    current = _current
    if current is not None:
        return current
    settings = load_settings().database
    with _lock:
        if _current is None:
            _current = Database(settings)
        return _current


async def dispose_database() -> None:
    """Dispose the process-wide database (both engines) and forget it; a no-op when none exists."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        await current.dispose()


def dispose_database_sync() -> None:
    """:func:`dispose_database` for callers without an event loop (disposes the sync engine only)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.dispose_sync()
