"""Settings: read once, validated once, frozen.

Sources, lowest precedence first:

1. built-in defaults (the field defaults below);
2. ``config.yaml`` (``--config`` or ``POLLY_CONFIG``, default ``./config.yaml``; optional);
3. a ``.env`` file in the working directory (as upstream Polly reads it: a real environment
   variable always wins over the file);
4. the environment: upstream Polly's names (``DATABASE_URL``, ``REDIS_URL``, ``DB_POOL_SIZE`` ...),
   the standard ``OTEL_*`` variables with their standard meaning, and ``POLLY_<SECTION>__<KEY>`` for
   every other key (``POLLY_ENGINE__TICK_SECONDS=2``).

Every problem is reported at once, each with its key path, the value given (secrets redacted) and
the rule, as a :class:`~polly.errors.ConfigError`. Secrets (passwords inside URLs, tokens, OTLP
headers) are :class:`~pydantic.SecretStr` values: ``repr``, ``str`` and :meth:`Settings.redacted`
never show them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from polly.config_urls import redact_url as redact_url  # noqa: PLC0414 - an explicit re-export
from polly.config_urls import redis_url, url_problems
from polly.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config.yaml")
DEFAULT_DATABASE_URL = "sqlite:///./db/polly.db"
UPSTREAM_DEFAULT_REDIS_URL = "redis://localhost:6379"


class SecretUrl(SecretStr):
    """A URL that may carry a password; displays with the password redacted."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


# --- general.monitoring ------------------------------------------------------------------------------


class MemoryProfilingSettings(_Section):
    """The documented ``general.monitoring.memory_profiling`` section."""

    enabled: bool = False
    interval_seconds: int = Field(60, ge=10)
    top_n_classes: int = Field(50, ge=1)


class LeakDetectionSettings(_Section):
    """How censuses and RSS samples are turned into leak warnings."""

    consecutive_snapshots: int = Field(
        3, ge=2, description="K: a class growing in each of the last K censuses is a suspect"
    )
    max_type_names: int = Field(
        200, ge=1, description="type names ever reported; later entrants go to `other`"
    )
    rss_window_seconds: int = Field(3600, ge=60, description="window for the RSS growth rate")
    rss_growth_warn_percent_per_hour: float = Field(10.0, ge=0, description="0 disables the warning")


class OtlpSettings(_Section):
    """OTLP metric export. With no endpoint nothing is exported over the network."""

    endpoint: str | None = None
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_seconds: float = Field(10.0, gt=0, description="one export request")
    export_interval_seconds: float = Field(60.0, ge=1)
    export_timeout_seconds: float = Field(30.0, gt=0, description="one collect-and-export cycle")
    insecure: bool | None = None


class PrometheusSettings(_Section):
    """An optional scrape endpoint for operators without a collector."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=1, le=65535)


class MonitoringSettings(_Section):
    enabled: bool = True
    service_name: str = Field("polly", min_length=1)
    service_instance_id: str | None = None
    memory_profiling: MemoryProfilingSettings = Field(default_factory=MemoryProfilingSettings)
    leak_detection: LeakDetectionSettings = Field(default_factory=LeakDetectionSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)


class GeneralSettings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)


# --- database, redis, discord, caches, engine ----------------------------------------------------------


class DatabaseSettings(_Section):
    url: SecretUrl = Field(SecretUrl(DEFAULT_DATABASE_URL))
    async_url: SecretUrl | None = None
    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(10, ge=0)
    pool_timeout_seconds: float = Field(30.0, gt=0)
    pool_recycle_seconds: int = Field(3600, ge=-1, description="-1 never recycles")
    pool_pre_ping: bool = True
    echo: bool = False
    slow_checkout_seconds: float = Field(30.0, gt=0, description="a checkout held longer is logged once")
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    connect_retry_max_seconds: float = Field(30.0, gt=0, description="cap of the reconnect backoff")


class RedisSettings(_Section):
    enabled: bool = True
    url: SecretUrl | None = None
    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    password: SecretStr | None = None
    max_connections: int = Field(20, ge=1)
    acquire_timeout_seconds: float = Field(1.0, gt=0)
    socket_connect_timeout_seconds: float = Field(1.0, gt=0)
    socket_timeout_seconds: float = Field(1.0, gt=0)
    health_check_interval_seconds: float = Field(30.0, ge=0)
    retry_attempts: int = Field(2, ge=0)
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_probe_interval_seconds: float = Field(2.0, gt=0)
    fallback_cache_max_entries: int = Field(10_000, ge=1)
    fallback_cache_ttl_seconds: float = Field(300.0, gt=0)

    def effective_url(self) -> SecretUrl:
        """The URL polly connects to, chosen as upstream does.

        ``REDIS_URL`` wins when set and different from upstream's default; otherwise the URL is built
        from host, port, db and password.
        """
        if self.url is not None and self.url.get_secret_value() != UPSTREAM_DEFAULT_REDIS_URL:
            return self.url
        password = self.password.get_secret_value() if self.password is not None else None
        return SecretUrl(redis_url(self.host, self.port, self.db, password))


class DiscordSettings(_Section):
    token: SecretStr | None = None
    api_base: str | None = Field(None, description="override Discord's REST base URL (tests, proxies)")
    gateway_url: str | None = Field(
        None,
        description="override Discord's gateway URL (unset with api_base: GET {api_base}/gateway/bot)",
    )


class CacheSettings(_Section):
    failure_tracker_max_entries: int = Field(10_000, ge=1)
    failure_tracker_ttl_seconds: float = Field(3600.0, gt=0)
    max_fetch_retries: int = Field(5, ge=1)
    retry_window_minutes: float = Field(30.0, gt=0)
    log_throttle_window_seconds: float = Field(60.0, gt=0)
    log_throttle_max_categories: int = Field(1000, ge=1)


class EngineSettings(_Section):
    tick_seconds: float = Field(5.0, ge=0.1)
    embed_update_interval_seconds: float = Field(5.0, ge=0.1)
    confirmation_dms: bool = False
    dm_max_per_minute: int = Field(30, ge=1)
    reconcile_interval_seconds: float = Field(60.0, ge=1)
    reconcile_budget_per_tick: int = Field(50, ge=1, description="Discord calls one reconcile pass may make")
    reconcile_lookback_hours: float = Field(24.0, gt=0)
    orphan_after_seconds: float = Field(6 * 3600.0, ge=60)
    vote_queue_max: int = Field(10_000, ge=1)
    vote_workers: int = Field(
        4, ge=1, le=64, description="concurrent vote writers; one message's events stay in order"
    )
    vote_batch_size: int = Field(
        500, ge=1, le=5000, description="most reaction events one vote transaction applies"
    )
    vote_flush_seconds: float = Field(
        0.01, ge=0, le=1, description="longest wait for more events when a vote worker holds only one"
    )
    startup_timeout_seconds: float = Field(60.0, gt=0)
    shutdown_timeout_seconds: float = Field(10.0, gt=0)
    status_interval_seconds: float = Field(10.0, ge=1)
    image_root: str = Field(
        ".", min_length=1, description="directory upstream's poll image_path is relative to"
    )


class WebSettings(_Section):
    """The dashboard (``polly run`` serves it beside the engine when signing in is configured)."""

    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 - upstream's address: the dashboard is meant to be reached
    port: int = Field(8000, ge=1, le=65535)
    client_id: str | None = Field(None, description="Discord application id (DISCORD_CLIENT_ID)")
    client_secret: SecretStr | None = None
    redirect_uri: str = "http://localhost:8000/auth/callback"
    secret_key: SecretStr | None = Field(None, description="signs session cookies (SECRET_KEY)")
    super_admin_ids: str = Field("", pattern=r"^[0-9,\s]*$", description="comma-separated user ids")
    oauth_authorize_url: str = "https://discord.com/oauth2/authorize"
    session_max_age_seconds: int = Field(7 * 24 * 3600, ge=60)
    upload_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    discord_cache_ttl_seconds: float = Field(60.0, gt=0)
    discord_cache_max_entries: int = Field(1000, ge=1)

    def super_admins(self) -> frozenset[str]:
        """The ids in ``super_admin_ids`` (blank items ignored)."""
        return frozenset(i.strip() for i in self.super_admin_ids.split(",") if i.strip())


class Settings(_Section):
    """Everything polly reads. Build it with :func:`load_settings`."""

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    caches: CacheSettings = Field(default_factory=CacheSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data with every secret redacted (for printing)."""
        return cast("dict[str, Any]", _redact_tree(self.model_dump()))


def _redact_tree(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return str(value)
    if isinstance(value, dict):
        return {k: _redact_tree(v) for k, v in value.items()}
    return value


# --- environment mapping -----------------------------------------------------------------------------

#: Upstream Polly's environment variables and the key each sets.
UPSTREAM_ENV: Mapping[str, tuple[str, ...]] = {
    "DATABASE_URL": ("database", "url"),
    "ASYNC_DATABASE_URL": ("database", "async_url"),
    "DB_POOL_SIZE": ("database", "pool_size"),
    "DB_MAX_OVERFLOW": ("database", "max_overflow"),
    "DB_POOL_TIMEOUT": ("database", "pool_timeout_seconds"),
    "DB_POOL_RECYCLE": ("database", "pool_recycle_seconds"),
    "DB_ECHO": ("database", "echo"),
    "REDIS_URL": ("redis", "url"),
    "REDIS_HOST": ("redis", "host"),
    "REDIS_PORT": ("redis", "port"),
    "REDIS_DB": ("redis", "db"),
    "REDIS_PASSWORD": ("redis", "password"),
    "DISCORD_TOKEN": ("discord", "token"),
    "DISCORD_CLIENT_ID": ("web", "client_id"),
    "DISCORD_CLIENT_SECRET": ("web", "client_secret"),
    "DISCORD_REDIRECT_URI": ("web", "redirect_uri"),
    "SECRET_KEY": ("web", "secret_key"),
    "SUPER_ADMIN_IDS": ("web", "super_admin_ids"),
}

_MON = ("general", "monitoring")
_OTLP = (*_MON, "otlp")

#: Standard OpenTelemetry variables, their key, and the factor from their unit (ms) to polly's (s).
#: A ``_METRICS_`` variant wins over the generic one, as the OTLP exporters do.
OTEL_ENV: Mapping[str, tuple[tuple[str, ...], float | None]] = {
    "OTEL_SERVICE_NAME": ((*_MON, "service_name"), None),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ((*_OTLP, "endpoint"), None),
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ((*_OTLP, "endpoint"), None),
    "OTEL_EXPORTER_OTLP_PROTOCOL": ((*_OTLP, "protocol"), None),
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": ((*_OTLP, "protocol"), None),
    "OTEL_EXPORTER_OTLP_HEADERS": ((*_OTLP, "headers"), None),
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS": ((*_OTLP, "headers"), None),
    "OTEL_EXPORTER_OTLP_TIMEOUT": ((*_OTLP, "timeout_seconds"), 0.001),
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": ((*_OTLP, "timeout_seconds"), 0.001),
    "OTEL_EXPORTER_OTLP_INSECURE": ((*_OTLP, "insecure"), None),
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": ((*_OTLP, "insecure"), None),
    "OTEL_METRIC_EXPORT_INTERVAL": ((*_OTLP, "export_interval_seconds"), 0.001),
    "OTEL_METRIC_EXPORT_TIMEOUT": ((*_OTLP, "export_timeout_seconds"), 0.001),
    "OTEL_SDK_DISABLED": ((*_MON, "enabled"), None),
}

POLLY_ENV_PREFIX = "POLLY_"
_RESERVED_POLLY_ENV = frozenset({"POLLY_CONFIG", "POLLY_REQUIRE_SERVICES"})


def env_name(path: tuple[str, ...]) -> str:
    """The ``POLLY_`` variable for a key path.

    ``("engine", "tick_seconds")`` → ``POLLY_ENGINE__TICK_SECONDS``.
    """
    return POLLY_ENV_PREFIX + "__".join(p.upper() for p in path)


def _field_annotation(path: tuple[str, ...]) -> Any:
    model: type[BaseModel] = Settings
    annotation: Any = None
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return None
            model = annotation
    return annotation


def _is_section(path: tuple[str, ...]) -> bool:
    annotation = _field_annotation(path)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parse_headers(raw: str) -> dict[str, str]:
    """OTEL header syntax: ``k1=v1,k2=v2`` with URL-encoded values."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = "expected comma-separated key=value pairs"
            raise ValueError(msg)
        headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _convert_env(path: tuple[str, ...], raw: str, scale: float | None) -> Any:
    """Turn an environment string into the type the key wants (lax parsing: env values are text)."""
    if path[-1] == "headers":
        return _parse_headers(raw)
    if path == (*_MON, "enabled"):  # OTEL_SDK_DISABLED=true means monitoring off
        return not TypeAdapter(bool).validate_python(raw.strip())
    annotation = _field_annotation(path)
    value: Any = TypeAdapter(annotation).validate_python(raw.strip(), strict=False)
    if scale is not None:
        value = value * scale
    return value


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _is_secret_path(path: tuple[str | int, ...]) -> bool:
    names = {str(p) for p in path}
    return bool(names & {"url", "async_url", "password", "token", "headers", "client_secret", "secret_key"})


def _show(path: tuple[str | int, ...], value: Any) -> str:
    if _is_secret_path(path):
        if isinstance(value, str) and "url" in {str(p) for p in path}:
            return repr(redact_url(value))
        return "'***'"
    return repr(value)


def _env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str], list[str]]:
    tree: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    problems: list[str] = []

    def apply(var: str, path: tuple[str, ...], scale: float | None = None) -> None:
        raw = environ[var]
        try:
            value = _convert_env(path, raw, scale)
        except (ValidationError, ValueError) as err:
            rule = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            problems.append(f"{var} (sets {'.'.join(path)}): {_show(path, raw)} is invalid: {rule}")
            return
        _set(tree, path, value)
        sources[path] = var

    for var, path in UPSTREAM_ENV.items():
        if environ.get(var, "") != "":
            apply(var, path)
    # generic variants first so the _METRICS_ ones overwrite them
    for var, (path, scale) in sorted(OTEL_ENV.items(), key=lambda kv: "_METRICS_" in kv[0]):
        if environ.get(var, "") != "":
            apply(var, path, scale)
    sections = tuple(f"{POLLY_ENV_PREFIX}{name.upper()}_" for name in Settings.model_fields)
    for var in sorted(environ):
        if not var.startswith(POLLY_ENV_PREFIX) or var in _RESERVED_POLLY_ENV:
            continue
        if "__" not in var:
            # Only POLLY_<SECTION>__<KEY> names are settings; other POLLY_ variables belong to
            # someone else, unless they look like a setting with one underscore too few.
            if var.startswith(sections):
                problems.append(
                    f"{var}: not a setting; keys are POLLY_<SECTION>__<KEY>, e.g. POLLY_ENGINE__TICK_SECONDS"
                )
            continue
        path = tuple(p.lower() for p in var[len(POLLY_ENV_PREFIX) :].split("__"))
        if _field_annotation(path) is None or _is_section(path):
            problems.append(
                f"{var}: unknown setting {'.'.join(path)!r}; see docs/configuration.md for the keys"
            )
            continue
        apply(var, path)
    return tree, sources, problems


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "headers":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot be read: {err.strerror or err}"], source="config file") from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            [f"{path}: is not UTF-8 text ({err.reason} at byte {err.start})"], "config file"
        ) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"{path}: malformed YAML{where}: {problem}"], source="config file") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"], "config file"
        )
    return data


_RULES: Mapping[str, str] = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    parent = tuple(str(p) for p in loc[:-1])
    model: Any = Settings if not parent else _field_annotation(parent)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _describe(error: Mapping[str, Any], sources: Mapping[tuple[str, ...], str]) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    path = ".".join(str(p) for p in loc)
    origin = sources.get(tuple(str(p) for p in loc))
    where = f"{path} (from {origin})" if origin else path
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc))
        return f"{where}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{where}: required key is missing"
    shown = _show(loc, value)
    scale = OTEL_ENV[origin][1] if origin is not None and origin in OTEL_ENV else None
    if scale is not None and isinstance(value, int | float):
        shown = f"{value / scale:g} ms"  # speak in the variable's own unit
        ctx = {k: f"{v / scale:g} ms" if isinstance(v, int | float) else v for k, v in ctx.items()}
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()))
        word = {
            "greater_than_equal": f"the minimum is {bound}",
            "greater_than": f"must be greater than {bound}",
            "less_than_equal": f"the maximum is {bound}",
            "less_than": f"must be less than {bound}",
        }[kind]
        return f"{where}: {shown} is out of range: {word}"
    if kind == "literal_error":
        return f"{where}: {shown} is not allowed: must be one of {ctx.get('expected')}"
    rule = _RULES.get(kind, error.get("msg", kind))
    return f"{where}: {shown} ({type(value).__name__}) {rule}"


def _working_directory() -> Path:
    try:
        return Path.cwd()
    except OSError as err:
        reason = err.strerror or err
        msg = f"the working directory cannot be used ({reason}): polly reads .env and config.yaml there"
        raise ConfigError([msg], source="working directory") from err


def _read_dotenv(path: Path) -> dict[str, str]:
    """``.env`` as upstream reads it (UTF-8); absent is fine, unreadable or not UTF-8 is one clear line."""
    try:
        if not path.is_file():
            return {}
        return {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}
    except UnicodeDecodeError as err:
        msg = f"{path}: is not UTF-8 text (invalid byte at offset {err.start}); polly reads .env as UTF-8"
        raise ConfigError([msg], source=".env file") from err
    except OSError as err:
        msg = f"{path}: cannot be read ({err.strerror or err}); polly needs read access to it"
        raise ConfigError([msg], source=".env file") from err


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read and validate every setting, or raise :class:`ConfigError` listing all problems.

    ``config_path`` given explicitly (or by ``POLLY_CONFIG``) must exist; the default
    ``./config.yaml`` is optional. ``environ`` defaults to ``os.environ``; ``cwd`` (for ``.env`` and
    the default config path) to the working directory.
    """
    base_dir = Path(cwd) if cwd is not None else _working_directory()
    env: dict[str, str] = {}
    env.update(_read_dotenv(base_dir / ".env"))
    env.update(os.environ if environ is None else environ)

    explicit = config_path if config_path is not None else env.get("POLLY_CONFIG") or None
    path = Path(explicit) if explicit is not None else DEFAULT_CONFIG_PATH
    if not path.is_absolute():
        path = base_dir / path
    file_tree: dict[str, Any] = {}
    if explicit is not None or path.exists():
        file_tree = _read_yaml(path)

    env_tree, sources, problems = _env_overrides(env)
    merged = _merge(file_tree, env_tree)
    # Env values arrive already typed; wrap secrets so strict validation accepts them.
    try:
        settings = Settings.model_validate(_wrap_secrets(merged))
    except ValidationError as err:
        problems.extend(_describe(e, sources) for e in err.errors(include_url=False))
        settings = None
    problems.extend(url_problems(settings, sources, base_dir, merged))
    if problems:
        source = f"settings ({path.name})" if file_tree else "settings"
        raise ConfigError(problems, source=source)
    assert settings is not None
    return settings


_SECRET_FIELDS: Mapping[tuple[str, ...], type[SecretStr]] = {
    ("database", "url"): SecretUrl,
    ("database", "async_url"): SecretUrl,
    ("redis", "url"): SecretUrl,
    ("redis", "password"): SecretStr,
    ("discord", "token"): SecretStr,
    ("web", "client_secret"): SecretStr,
    ("web", "secret_key"): SecretStr,
}


def _wrap_secrets(tree: dict[str, Any]) -> dict[str, Any]:
    """Wrap plain strings at secret keys in their secret type (strict mode accepts no bare str)."""
    out = _merge({}, tree)
    for path, kind in _SECRET_FIELDS.items():
        node: Any = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            node[path[-1]] = kind(node[path[-1]])
    monitoring = out.get("general", {}).get("monitoring", {}) if isinstance(out.get("general"), dict) else {}
    otlp = monitoring.get("otlp") if isinstance(monitoring, dict) else None
    if isinstance(otlp, dict) and isinstance(otlp.get("headers"), dict):
        otlp["headers"] = {k: SecretStr(v) if isinstance(v, str) else v for k, v in otlp["headers"].items()}
    return out
