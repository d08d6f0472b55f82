"""URLs in the settings: redaction that knows where the password is, and the checks ``run`` applies.

Redaction does not trust a generic URL parser to find the password: operators paste database URLs
with unescaped ``#``, ``/``, ``?`` or ``@`` in the password, which SQLAlchemy accepts (its parser
takes everything up to the last ``@`` before the host as credentials) while :func:`urllib.parse.urlsplit`
cuts the URL elsewhere and would print part of the password as "host" or "path". So
:func:`redact_url` takes everything between ``scheme://`` and the **last** ``@`` as credentials and
keeps only the user name; query parameters named like secrets (``password``, ``token``...) are masked
too. Over-redaction (an ``@`` in a query value hides the host) is preferred to any leak.

:func:`url_problems` returns, for the database, Redis and OTLP URLs of a settings tree, every reason
``polly run`` would refuse them, each a one-line message naming the key and never the password.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

#: Query parameter names whose values are secrets.
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "token", "secret", "api_key", "apikey"})
MASK = "***"

_DB_BACKENDS = ("mariadb", "mysql", "postgres", "postgresql", "sqlite")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_OTLP_SCHEMES = ("http", "https")


def redact_url(url: str) -> str:
    """``url`` with the password (userinfo or a secret query parameter) replaced by ``***``.

    ``postgresql://u:Pw#S3/c@h:5432/db`` → ``postgresql://u:***@h:5432/db``; a URL without
    credentials is returned unchanged.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}:{MASK}@{rest[at + 1 :]}" if colon else f"{user}@{rest[at + 1 :]}"
    path, qmark, query = rest.partition("?")
    if qmark:
        query = "&".join(_mask_query(query.split("&")))
    return f"{head}{sep}{path}{qmark}{query}"


def _mask_query(pairs: list[str]) -> Iterable[str]:
    """Secret values masked; a piece without ``=`` after a secret is the rest of it (an unescaped ``&``)."""
    in_secret = False
    for pair in pairs:
        key, eq, _value = pair.partition("=")
        if eq:
            in_secret = key.strip().lower() in SECRET_QUERY_KEYS
            yield f"{key}={MASK}" if in_secret else pair
        elif not in_secret:
            yield pair


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret (as given and percent-encoded) masked.

    For messages built by libraries (driver errors) that may quote a password they were given.
    """
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, MASK)
    return text


def redis_url(host: str, port: int, db: int, password: str | None) -> str:
    """The ``redis://`` URL for upstream's ``REDIS_HOST/PORT/DB/PASSWORD``, every part quoted.

    redis-py unquotes the password, so ``p@ss/w#rd`` arrives intact; an IPv6 host gets brackets.
    """
    auth = f":{quote(password, safe='')}@" if password is not None else ""
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"redis://{auth}{quote(shown_host, safe='[]:')}:{port}/{db}"


# --- the checks run applies ----------------------------------------------------------------------------


def database_url_problem(raw: str) -> str | None:  # noqa: PLR0911 - one return per rule
    """Why SQLAlchemy (as polly drives it) cannot use ``raw``, or ``None``. Never echoes the password."""
    from sqlalchemy.engine import make_url  # keeps `import polly.config` light
    from sqlalchemy.exc import ArgumentError

    example = "e.g. sqlite:///./db/polly.db or postgresql://user:password@host:5432/db"
    try:
        url = make_url(raw)
    except ArgumentError:
        return f"is not a database URL ({example})"
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    backend = url.get_backend_name()
    if backend not in _DB_BACKENDS:
        return f"unsupported database {backend!r}; allowed: {', '.join(_DB_BACKENDS)} ({example})"
    if url.port is not None and not 1 <= url.port <= 65535:
        return "has a port that is not a number from 1 to 65535"
    credentials = _credentials(raw)
    if backend != "sqlite" and credentials is not None and "@" in credentials:
        return "has a password containing @: percent-encode it as %40"
    if backend != "sqlite" and not url.host:
        return f"has no host ({example})"
    return None


def redis_url_problem(raw: str) -> str | None:
    """Why redis-py cannot use ``raw``, or ``None``. redis-py's own parser decides (as at connect)."""
    from redis.connection import parse_url  # keeps `import polly.config` light

    example = "e.g. redis://localhost:6379/0 or rediss://:password@host:6380/0"
    scheme = raw.partition("://")[0].lower() if "://" in raw else ""
    if scheme not in _REDIS_SCHEMES:
        return f"must start with redis://, rediss:// or unix:// ({example})"
    credentials = _credentials(raw)
    if scheme != "unix" and credentials is not None and any(ch in credentials for ch in "/?#@"):
        return "has a password with a reserved character; percent-encode it (@ %40, / %2F, # %23, ? %3F)"
    try:
        kwargs = parse_url(raw)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as err:
        # redis-py's message may quote a piece of the URL: only show it when there are no credentials
        detail = f": {err}" if credentials is None else " (check the host, port and db number)"
        return f"cannot be used by redis-py{detail}"
    if scheme != "unix" and not kwargs.get("host"):
        return f"has no host ({example})"
    db = urlsplit(raw).path.strip("/")
    if scheme != "unix" and db and not db.isdigit():  # redis-py would silently use db 0
        return f"has {db!r} where the db number belongs ({example})"
    return None


def _credentials(raw: str) -> str | None:
    rest = raw.partition("://")[2]
    at = rest.rfind("@")
    return rest[:at] if at >= 0 else None


def otlp_endpoint_problem(raw: str) -> str | None:
    """Why the OTLP exporters cannot use ``raw`` (they need ``http://`` or ``https://`` and a host)."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if parts.scheme.lower() not in _OTLP_SCHEMES or not parts.hostname:
        return "must be an http:// or https:// URL with a host, e.g. http://localhost:4317"
    if port is not None and port == 0:
        return "has a port that is not a number from 1 to 65535"
    return None


def sqlite_path_problem(raw: str, cwd: Path) -> str | None:  # noqa: PLR0911 - one return per rule
    """Why polly (as the current user) cannot open or create the SQLite file of ``raw``, or ``None``.

    polly needs to read and write the file and, because SQLite writes a journal beside it, to write
    its directory; a missing file is created (with missing directories) on first use, so the nearest
    existing directory must be writable.
    """
    from sqlalchemy.engine import make_url  # keeps `import polly.config` light

    try:
        url = make_url(raw)
    except ValueError:
        return None  # reported by database_url_problem
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database).expanduser()
    path = path if path.is_absolute() else cwd / path
    if path.is_dir():
        return f"the SQLite path {path} is a directory: polly needs a file path"
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return f"the SQLite file {path} is read-only for this user: polly needs to read and write it"
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return (
                f"the directory {path.parent} is not writable for this user: SQLite needs to write its "
                "journal next to the database file"
            )
        return None
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"cannot create the SQLite file {path}: {existing} is not a writable directory for this user; "
            "polly creates the file (and missing directories) on first use: make it writable or point "
            "DATABASE_URL elsewhere"
        )
    return None


def url_problems(
    settings: Any, sources: Mapping[tuple[str, ...], str], cwd: Path, tree: Mapping[str, Any] | None = None
) -> list[str]:
    """Every URL problem of validated :class:`~polly.config.Settings`, each naming its key and source.

    With ``settings`` ``None`` (other keys are invalid), the database URLs and the OTLP endpoint are
    still checked from the raw settings ``tree``, so every problem is reported at once.
    """
    problems: list[str] = []

    def add(path: tuple[str, ...], value: str, problem: str | None) -> None:
        if problem:
            origin = sources.get(path)
            key = ".".join(path) + (f" (from {origin})" if origin else "")
            problems.append(f"{key}: {redact_url(value)!r} {problem}")

    if settings is None:
        for path in (
            ("database", "url"),
            ("database", "async_url"),
            ("general", "monitoring", "otlp", "endpoint"),
        ):
            node: Any = tree
            for part in path:
                node = node.get(part) if isinstance(node, Mapping) else None
            value = node.get_secret_value() if hasattr(node, "get_secret_value") else node
            if isinstance(value, str) and path[-1] == "endpoint":
                add(path, value, otlp_endpoint_problem(value))
            elif isinstance(value, str):
                add(path, value, database_url_problem(value) or sqlite_path_problem(value, cwd))
        return problems
    db = settings.database
    for name, secret in (("url", db.url), ("async_url", db.async_url)):
        if secret is not None:
            value = secret.get_secret_value()
            add(("database", name), value, database_url_problem(value) or sqlite_path_problem(value, cwd))
    if settings.redis.enabled:
        value = settings.redis.effective_url().get_secret_value()
        path = ("redis", "url") if settings.redis.url is not None else ("redis", "host")
        add(path, value, redis_url_problem(value))
    endpoint = settings.general.monitoring.otlp.endpoint
    if endpoint is not None:
        add(("general", "monitoring", "otlp", "endpoint"), endpoint, otlp_endpoint_problem(endpoint))
    return problems
