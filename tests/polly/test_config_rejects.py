"""``polly config check`` refuses what ``polly run`` would refuse, in one line per problem, exit 2."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from polly.cli import main
from polly.config import load_settings
from polly.errors import ConfigError


def check(**env: str) -> Result:
    return CliRunner().invoke(main, ["config", "check"], env=env)


def assert_refused(result: Result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "settings are valid" not in result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "garbage"}, "is not a database URL"),
        ({"DATABASE_URL": "postgress://u@h/db"}, "unsupported database 'postgress'"),
        ({"DATABASE_URL": "postgresql://u:pw@h:abc/db"}, "port that is not a number"),
        ({"DATABASE_URL": "postgresql://u:pw@h:99999/db"}, "port that is not a number"),
        ({"DATABASE_URL": "postgresql:///db"}, "has no host"),
        ({"ASYNC_DATABASE_URL": "oracle://h/db"}, "database.async_url"),
        ({"REDIS_URL": "garbage"}, "must start with redis://"),
        ({"REDIS_URL": "redis://localhost:notaport/0"}, "cannot be used by redis-py"),
        ({"REDIS_URL": "redis://localhost:6379/abc"}, "where the db number belongs"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"}, "must be an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:4317"}, "must be an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:port"}, "port that is not a number"),
    ],
)
def test_config_check_refuses_what_run_refuses(env: dict[str, str], expected: str, tmp_path: Path) -> None:
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp_path}/p.db")
    assert_refused(check(**env), expected)
    run = CliRunner().invoke(main, ["run", "--sandbox", "--duration", "1"], env=env)
    assert run.exit_code == 2, run.output  # run refuses it the same way, before starting anything
    assert expected in run.output


def test_redis_url_is_not_checked_when_redis_is_off() -> None:
    settings = load_settings(environ={"REDIS_URL": "garbage", "POLLY_REDIS__ENABLED": "false"})
    assert settings.redis.enabled is False


def test_otel_errors_speak_milliseconds() -> None:
    result = check(OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_EXPORTER_OTLP_TIMEOUT="0")
    assert_refused(
        result,
        "OTEL_METRIC_EXPORT_INTERVAL): 500 ms is out of range: the minimum is 1000 ms",
        "OTEL_EXPORTER_OTLP_TIMEOUT): 0 ms is out of range: must be greater than 0 ms",
    )
    assert "0.5" not in result.output
    assert (
        load_settings(
            environ={"OTEL_METRIC_EXPORT_INTERVAL": "1500"}
        ).general.monitoring.otlp.export_interval_seconds
        == 1.5
    )


def test_a_non_utf8_dotenv_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"DATABASE_URL=sqlite:///caf\xe9.db\n")
    result = check()
    assert_refused(result, ".env: is not UTF-8 text", "polly reads .env as UTF-8")
    assert result.output.count("\n") <= 3


def _as_unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge access by the permission bits, as for a user who owns nothing (CI runs as root)."""

    def access(path: str | os.PathLike[str], mode: int) -> bool:
        bits = Path(path).stat().st_mode
        wanted = [(os.R_OK, stat.S_IROTH), (os.W_OK, stat.S_IWOTH), (os.X_OK, stat.S_IXOTH)]
        return all(bits & flag for want, flag in wanted if mode & want)

    if os.geteuid() == 0:
        monkeypatch.setattr("polly.config_urls.os.access", access)


def test_unwritable_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_unprivileged(monkeypatch)
    cwd = tmp_path / "ro"
    cwd.mkdir()
    cwd.chmod(0o555)
    monkeypatch.chdir(cwd)
    try:
        result = check()  # the default database is ./db/polly.db
        assert_refused(result, "cannot create the SQLite file", f"{cwd} is not a writable directory")
        upgrade = CliRunner().invoke(main, ["db", "upgrade"])
        assert upgrade.exit_code == 2, upgrade.output
        assert "Traceback" not in upgrade.output
    finally:
        cwd.chmod(0o755)


def test_read_only_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_unprivileged(monkeypatch)
    directory = tmp_path / "data"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    file = directory / "p.db"
    file.write_bytes(b"")
    file.chmod(0o444)
    url = f"sqlite:///{file}"
    assert_refused(check(DATABASE_URL=url), "is read-only for this user", "needs to read and write it")
    for args in (["db", "check"], ["poll", "list"]):
        result = CliRunner().invoke(main, args, env={"DATABASE_URL": url})
        assert result.exit_code == 2, result.output
        assert "read-only" in result.output


def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    assert_refused(check(DATABASE_URL=f"sqlite:///{tmp_path}"), "is a directory")


def test_a_writable_new_sqlite_path_is_fine(tmp_path: Path) -> None:
    result = check(DATABASE_URL=f"sqlite:///{tmp_path}/new/dir/p.db")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["config", "check"],
        ["db", "check"],
        ["db", "upgrade"],
        ["poll", "list"],
        ["poll", "show", "1"],
    ],
)
def test_settings_problems_exit_2_everywhere(args: list[str], tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/p.db"}
    if args != ["run"]:
        env["DB_POOL_SIZE"] = "zero"
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "2  invalid settings" in result.output
    assert "1  a runtime failure" in result.output


def test_load_settings_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": "garbage", "REDIS_URL": "garbage", "DB_POOL_SIZE": "0"})
    # a model error does not hide the URL problems (Redis needs valid settings to build its URL)
    assert len(info.value.problems) == 2
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": "garbage", "REDIS_URL": "garbage"})
    assert len(info.value.problems) == 2
