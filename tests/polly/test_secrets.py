"""No password, with any URL-special character in it, appears in any output polly produces.

Every password is ``Pw<c>S3cret`` for one special character ``<c>``; each output is checked for the
tail ``S3cret`` too, so a password cut in two by a misparsed URL is caught as well as a whole one.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from redis.connection import parse_url as redis_parse_url

from polly.cli import main
from polly.config import load_settings
from polly.config_urls import redact_url
from polly.db.engine import Database
from polly.errors import ConfigError, RedisMisconfiguredError
from polly.redis import RedisConnector
from polly.redis_client import RedisClient

SPECIAL = [*"#/?@:%&=+ []!$'()*,;~", "%40", "%2F", "p@ss/w#rd"]
PASSWORDS = [f"Pw{c}S3cret" for c in SPECIAL]


def leaks(text: str, password: str) -> bool:
    return password in text or "S3cret" in text or quote(password, safe="") in text


def with_password(url: str, password: str) -> str:
    """``url`` (``scheme://user@host...``) with ``password`` inserted as given, unescaped."""
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}"


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_url_hides_every_password_form(password: str) -> None:
    for url in (
        f"postgresql://postgres:{password}@127.0.0.1:5432/db",
        f"mysql://root:{password}@db.example:3306/polly?charset=utf8mb4",
        f"redis://:{password}@localhost:6379/0",
        f"postgresql://u@h/db?sslmode=require&password={password}",
    ):
        shown = redact_url(url)
        assert not leaks(shown, password), shown
        assert "***" in shown


def test_redact_url_keeps_urls_without_credentials() -> None:
    assert redact_url("sqlite:///./db/polly.db") == "sqlite:///./db/polly.db"
    assert redact_url("postgresql://u:x@h:5432/db") == "postgresql://u:***@h:5432/db"


@pytest.mark.parametrize("password", PASSWORDS)
def test_database_password_never_shown_by_settings_or_database(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://postgres:{password}@127.0.0.1:5432/db"
    env = {"DATABASE_URL": url, "DB_POOL_SIZE": "0"}  # one more problem: the error lists both
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert not leaks(str(info.value), password), str(info.value)
    if "@" in password.replace("%40", ""):  # an unescaped "@" is refused: the message must be clean
        with pytest.raises(ConfigError, match="percent-encode") as refused:
            load_settings(environ={"DATABASE_URL": url})
        assert not leaks(str(refused.value), password), str(refused.value)
        return
    settings = load_settings(environ={"DATABASE_URL": url})
    outputs = [repr(settings), str(settings), repr(settings.database), str(settings.redacted())]
    database = Database(settings.database)
    outputs += [repr(database), database.redacted_url, *(p.name for p in database.engine_stats())]
    outputs.append(caplog.text)
    for text in outputs:
        assert not leaks(text, password), text


@pytest.mark.parametrize("password", PASSWORDS)
def test_config_check_and_db_check_never_print_the_password(
    password: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = with_password(postgres_url, password)  # the test server trusts loopback: any password works
    env = {"DATABASE_URL": url, "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {quote(password)}"}
    runner = CliRunner()
    for args in (["config", "check"], ["db", "check"], ["db", "upgrade"], ["poll", "list"]):
        result = runner.invoke(main, args, env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert not leaks(result.output, password), (args, result.output)
        if "@" not in password and args == ["db", "check"]:
            assert result.exit_code in (0, 1), result.output
            assert "database: postgresql://postgres:***@127.0.0.1" in result.output
    assert not leaks(caplog.text, password)


@pytest.mark.parametrize("password", PASSWORDS)
def test_redis_parts_are_quoted_so_the_password_arrives_intact(password: str) -> None:
    settings = load_settings(environ={"REDIS_HOST": "cache.internal", "REDIS_PASSWORD": password})
    url = settings.redis.effective_url()
    parsed = redis_parse_url(url.get_secret_value())  # type: ignore[no-untyped-call]
    assert parsed["host"] == "cache.internal"
    assert parsed["password"] == password
    assert parsed["port"] == 6379
    connector = RedisConnector(settings.redis)  # builds the pool (its metric name), connects nothing
    shown = [str(url), repr(url), repr(settings.redis), str(settings.redacted())]
    shown += [connector.name, connector.url_redacted, str(connector.pool)]
    for text in shown:
        assert not leaks(text, password), text


@pytest.mark.parametrize("password", ["Pw#S3cret", "p@ss/w#rdS3cret", "Pw?S3cret"])
def test_redis_url_with_unescaped_password_is_refused_without_showing_it(password: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"REDIS_URL": f"redis://:{password}@localhost:6379/0"})
    assert "percent-encode" in str(info.value)
    assert not leaks(str(info.value), password)


async def test_redis_connect_logs_at_debug_name_no_secret(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "p@ss/w#rd S3cret"
    host, _, rest = redis_url.removeprefix("redis://").partition(":")
    port, _, db = rest.partition("/")
    settings = load_settings(
        environ={"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_DB": db, "REDIS_PASSWORD": password}
    )
    client = RedisClient(settings.redis)
    message = ""
    try:
        await client.connect()  # the test server refuses or ignores the password
    except RedisMisconfiguredError as err:
        message = str(err)
    finally:
        await client.disconnect()
    assert not leaks(message, password), message
    assert not leaks(caplog.text, password), caplog.text
    assert "Redis at redis://:***@" in caplog.text + message
