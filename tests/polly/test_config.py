"""Settings: precedence, every validation rule, and secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from polly.cli import main
from polly.config import Settings, load_settings, redact_url
from polly.errors import ConfigError

SECRETS = ("hunter2", "tok.en.secret", "Bearer abc123")


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env or {}, cwd=tmp_path)
    return str(info.value)


def test_defaults_match_the_documented_values(tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=tmp_path)
    mp = s.general.monitoring.memory_profiling
    assert (mp.enabled, mp.interval_seconds, mp.top_n_classes) == (False, 60, 50)
    assert s.database.url.get_secret_value() == "sqlite:///./db/polly.db"
    assert (s.database.pool_size, s.database.max_overflow) == (5, 10)
    assert (s.database.pool_timeout_seconds, s.database.pool_recycle_seconds) == (30.0, 3600)
    assert s.redis.effective_url().get_secret_value() == "redis://localhost:6379/0"
    assert s.general.monitoring.otlp.endpoint is None
    assert s.general.monitoring.otlp.protocol == "grpc"


def test_the_documented_section_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "general:\n  monitoring:\n    memory_profiling:\n      enabled: true\n"
        "      interval_seconds: 10\n      top_n_classes: 1\n",
    )
    mp = load_settings(path, environ={}, cwd=tmp_path).general.monitoring.memory_profiling
    assert (mp.enabled, mp.interval_seconds, mp.top_n_classes) == (True, 10, 1)


def test_precedence_defaults_then_yaml_then_env(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  pool_size: 7\n  max_overflow: 3\n")
    s = load_settings(path, environ={"DB_POOL_SIZE": "9"}, cwd=tmp_path)
    assert s.database.pool_size == 9  # env beats yaml
    assert s.database.max_overflow == 3  # yaml beats default
    assert s.database.pool_timeout_seconds == 30.0  # default


def test_upstream_env_names_map_to_their_keys(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db/polly",
        "ASYNC_DATABASE_URL": "postgresql+psycopg://u:pw@db/polly",
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "2",
        "DB_POOL_TIMEOUT": "5",
        "DB_POOL_RECYCLE": "600",
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6380",
        "REDIS_DB": "2",
        "REDIS_PASSWORD": "hunter2",
        "DISCORD_TOKEN": "tok.en.secret",
    }
    s = load_settings(environ=env, cwd=tmp_path)
    assert s.database.url.get_secret_value() == env["DATABASE_URL"]
    assert s.database.async_url is not None
    assert (s.database.pool_size, s.database.max_overflow) == (4, 2)
    assert (s.database.pool_timeout_seconds, s.database.pool_recycle_seconds) == (5.0, 600)
    assert s.redis.effective_url().get_secret_value() == "redis://:hunter2@cache:6380/2"
    assert s.discord.token is not None
    assert s.discord.token.get_secret_value() == "tok.en.secret"


def test_redis_url_wins_unless_it_is_upstreams_default(tmp_path: Path) -> None:
    chosen = load_settings(environ={"REDIS_URL": "redis://r:6390/1", "REDIS_HOST": "x"}, cwd=tmp_path)
    assert chosen.redis.effective_url().get_secret_value() == "redis://r:6390/1"
    default = load_settings(environ={"REDIS_URL": "redis://localhost:6379", "REDIS_HOST": "x"}, cwd=tmp_path)
    assert default.redis.effective_url().get_secret_value() == "redis://x:6379/0"


def test_otel_variables_keep_their_standard_meaning(tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:4318/v1/metrics",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc123,x-tenant=a",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_SERVICE_NAME": "polly-eu",
    }
    m = load_settings(environ=env, cwd=tmp_path).general.monitoring
    assert m.otlp.endpoint == "http://metrics:4318/v1/metrics"  # the _METRICS_ variant wins
    assert m.otlp.protocol == "http/protobuf"
    assert m.otlp.headers["authorization"].get_secret_value() == "Bearer abc123"
    assert m.otlp.timeout_seconds == 2.5
    assert m.otlp.export_interval_seconds == 15.0
    assert m.service_name == "polly-eu"
    assert (
        load_settings(environ={"OTEL_SDK_DISABLED": "true"}, cwd=tmp_path).general.monitoring.enabled is False
    )


def test_polly_prefixed_variables_reach_every_key(tmp_path: Path) -> None:
    env = {"POLLY_ENGINE__TICK_SECONDS": "2.5", "POLLY_GENERAL__MONITORING__MEMORY_PROFILING__ENABLED": "yes"}
    s = load_settings(environ=env, cwd=tmp_path)
    assert s.engine.tick_seconds == 2.5
    assert s.general.monitoring.memory_profiling.enabled is True


def test_other_polly_variables_are_left_alone_but_near_misses_are_named(tmp_path: Path) -> None:
    s = load_settings(
        environ={"POLLY_TEST_POSTGRES_URL": "postgresql://x/y", "POLLY_HOME": "/srv"}, cwd=tmp_path
    )
    assert s.engine.tick_seconds == 5.0
    text = problems(tmp_path, env={"POLLY_ENGINE_TICK_SECONDS": "2"})
    assert "POLLY_ENGINE_TICK_SECONDS: not a setting; keys are POLLY_<SECTION>__<KEY>" in text


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    write(tmp_path, "DB_POOL_SIZE=3\nDB_MAX_OVERFLOW=1\n", name=".env")
    s = load_settings(environ={"DB_POOL_SIZE": "8"}, cwd=tmp_path)
    assert (s.database.pool_size, s.database.max_overflow) == (8, 1)


def test_config_path_from_polly_config(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  tick_seconds: 3\n", name="custom.yaml")
    s = load_settings(environ={"POLLY_CONFIG": str(path)}, cwd=tmp_path)
    assert s.engine.tick_seconds == 3.0


def test_below_minimum_names_key_value_and_rule(tmp_path: Path) -> None:
    text = problems(tmp_path, "general:\n  monitoring:\n    memory_profiling:\n      interval_seconds: 5\n")
    assert (
        "general.monitoring.memory_profiling.interval_seconds: 5 is out of range: the minimum is 10" in text
    )


def test_wrong_type_is_rejected_not_coerced(tmp_path: Path) -> None:
    text = problems(tmp_path, "general:\n  monitoring:\n    memory_profiling:\n      top_n_classes: '50'\n")
    assert "general.monitoring.memory_profiling.top_n_classes: '50' (str) must be an integer" in text
    text = problems(tmp_path, "general:\n  monitoring:\n    memory_profiling:\n      enabled: 1\n")
    assert "memory_profiling.enabled: 1 (int) must be true or false" in text


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    text = problems(tmp_path, "general:\n  monitoring:\n    memory_profiling:\n      top_n: 3\n")
    assert "general.monitoring.memory_profiling.top_n: unknown key" in text
    assert "enabled, interval_seconds, top_n_classes" in text
    assert "databse: unknown key" in problems(tmp_path, "databse: {}\n")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = problems(tmp_path, "database:\n  pool_size: 0\n  max_overflow: -1\nengine:\n  tick_seconds: 0\n")
    assert "3 problem(s)" in text
    for key in ("database.pool_size", "database.max_overflow", "engine.tick_seconds"):
        assert key in text


def test_enum_rule_names_the_allowed_values(tmp_path: Path) -> None:
    text = problems(tmp_path, "general:\n  monitoring:\n    otlp:\n      protocol: udp\n")
    assert "otlp.protocol: 'udp' is not allowed: must be one of 'grpc' or 'http/protobuf'" in text


def test_malformed_yaml_names_the_position(tmp_path: Path) -> None:
    text = problems(tmp_path, "general:\n  monitoring: [\n")
    assert "malformed YAML at line" in text


def test_non_mapping_top_level_is_rejected(tmp_path: Path) -> None:
    assert "the top level must be a mapping" in problems(tmp_path, "- a\n- b\n")


def test_unreadable_and_missing_explicit_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "missing.yaml", environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, environ={}, cwd=tmp_path)  # a directory
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"engine:\n  tick_seconds: 5 # \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(bad, environ={}, cwd=tmp_path)


def test_bad_env_values_name_the_variable(tmp_path: Path) -> None:
    text = problems(tmp_path, env={"DB_POOL_SIZE": "many", "POLLY_ENGINE__NOPE": "1"})
    assert "DB_POOL_SIZE (sets database.pool_size): 'many' is invalid" in text
    assert "POLLY_ENGINE__NOPE: unknown setting 'engine.nope'" in text
    assert "database.pool_size (from DB_POOL_SIZE): 0 is out of range" in problems(
        tmp_path, env={"DB_POOL_SIZE": "0"}
    )


def test_secrets_never_appear_in_repr_str_or_redacted_dump(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://polly:hunter2@db/polly",
        "REDIS_PASSWORD": "hunter2",
        "DISCORD_TOKEN": "tok.en.secret",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc123",
    }
    s = load_settings(environ=env, cwd=tmp_path)
    for text in (repr(s), str(s), str(s.redacted()), repr(s.redis.effective_url())):
        for secret in SECRETS:
            assert secret not in text
    assert s.redacted()["database"]["url"] == "postgresql://polly:***@db/polly"


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        "database:\n  url: 5\n",
        env={"REDIS_URL": "redis://:hunter2@r:notaport/0", "REDIS_PORT": "x", "REDIS_PASSWORD": "hunter2"},
    )
    assert "hunter2" not in text
    text = problems(tmp_path, "redis:\n  password: 12345\n  url: 'redis://:hunter2@h'\n  db: -1\n")
    assert "12345" not in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("mysql://root@h/db", "mysql://root@h/db"),
        ("sqlite:///./db/polly.db", "sqlite:///./db/polly.db"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        s.engine.tick_seconds = 1  # type: ignore[misc]
    assert isinstance(s, Settings)


def test_cli_config_check_prints_redacted_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://polly:hunter2@db/polly")
    result = CliRunner().invoke(main, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "postgresql://polly:***@db/polly" in result.stdout
    assert "hunter2" not in result.output
    assert "interval_seconds: 60" in result.stdout


def test_cli_config_check_fails_with_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "general:\n  monitoring:\n    memory_profiling:\n      interval_seconds: 1\n")
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert "general.monitoring.memory_profiling.interval_seconds: 1 is out of range" in result.stderr
    assert "Traceback" not in result.output


def test_cli_version_and_help() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("polly, version ")
    assert "config" in runner.invoke(main, ["--help"]).output


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    paths: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_leaf_paths(annotation, (*prefix, name)))
        else:
            paths.append(".".join((*prefix, name)))
    return paths


def test_every_key_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [path for path in _leaf_paths(Settings) if f"`{path}`" not in doc]
    assert missing == []


def test_settings_built_directly_are_the_defaults_whatever_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "9")
    monkeypatch.setenv("POLLY_ENGINE__TICK_SECONDS", "2")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "POLLY_DATABASE__MAX_OVERFLOW=1\n", name=".env")
    assert Settings() == load_settings(environ={}, cwd=tmp_path / "nowhere")
    assert load_settings(cwd=tmp_path).database.pool_size == 9  # load_settings reads them


def test_otlp_headers_from_a_variable_replace_the_files_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "general:\n  monitoring:\n    otlp:\n      headers: {x-old: a}\n")
    headers = load_settings(
        path, environ={"OTEL_EXPORTER_OTLP_HEADERS": "x-new=b"}, cwd=tmp_path
    ).general.monitoring.otlp.headers
    assert sorted(headers) == ["x-new"]
    assert sorted(load_settings(path, environ={}, cwd=tmp_path).general.monitoring.otlp.headers) == ["x-old"]


def test_names_are_case_sensitive(tmp_path: Path) -> None:
    assert "Database: unknown key" in problems(tmp_path, "Database: {}\n")
    s = load_settings(environ={"polly_engine__tick_seconds": "2", "db_pool_size": "9"}, cwd=tmp_path / "x")
    assert (s.engine.tick_seconds, s.database.pool_size) == (5.0, 5)


def test_a_polly_name_beats_upstreams_and_the_environment_beats_dotenv(tmp_path: Path) -> None:
    env = {"DB_POOL_SIZE": "3", "POLLY_DATABASE__POOL_SIZE": "4"}
    assert load_settings(environ=env, cwd=tmp_path).database.pool_size == 4
    write(tmp_path, "POLLY_DATABASE__POOL_SIZE=6\nDB_MAX_OVERFLOW=2\n", name=".env")
    s = load_settings(environ={"DB_POOL_SIZE": "7"}, cwd=tmp_path)
    assert (s.database.pool_size, s.database.max_overflow) == (7, 2)
    text = problems(tmp_path, env={"DB_POOL_SIZE": "0"})
    assert "database.pool_size (from DB_POOL_SIZE): 0 is out of range" in text


def test_monitoring_enabled_reads_as_written_and_otel_sdk_disabled_inverts_it(tmp_path: Path) -> None:
    base = {"DISCORD_TOKEN": "x"}
    for env, expected in (
        ({"POLLY_GENERAL__MONITORING__ENABLED": "true"}, True),
        ({"POLLY_GENERAL__MONITORING__ENABLED": "false"}, False),
        ({"OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SDK_DISABLED": "false"}, True),
    ):
        settings = load_settings(environ={**base, **env}, cwd=tmp_path)
        assert settings.general.monitoring.enabled is expected, env
