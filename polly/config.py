"""Settings: read once, validated once, frozen.

Sources, lowest precedence first (pydantic-settings layers them key by key; see
:mod:`polly.config_sources`):

1. built-in defaults (the field defaults in :mod:`polly.config_models`);
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
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_settings import SettingsError

from polly.config_models import (
    DEFAULT_DATABASE_URL,
    LOADING_SOURCES,
    POLLY_ENV_PREFIX,
    UPSTREAM_DEFAULT_REDIS_URL,
    CacheSettings,
    DatabaseSettings,
    DiscordSettings,
    EngineSettings,
    GeneralSettings,
    LeakDetectionSettings,
    MemoryProfilingSettings,
    MonitoringSettings,
    OtlpSettings,
    PrometheusSettings,
    RedisSettings,
    SecretUrl,
    Settings,
    WebSettings,
)
from polly.config_sources import (
    OTEL_ALIASES,
    UPSTREAM_ALIASES,
    DotEnvFileSource,
    EnvironmentSource,
    KeyPath,
    LoadReport,
    YamlFileSource,
    dig,
    env_name,
    field_annotation,
    names,
    replace_whole,
)
from polly.config_urls import redact_url, url_problems
from polly.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATABASE_URL",
    "OTEL_ENV",
    "POLLY_ENV_PREFIX",
    "UPSTREAM_DEFAULT_REDIS_URL",
    "UPSTREAM_ENV",
    "CacheSettings",
    "DatabaseSettings",
    "DiscordSettings",
    "EngineSettings",
    "GeneralSettings",
    "LeakDetectionSettings",
    "MemoryProfilingSettings",
    "MonitoringSettings",
    "OtlpSettings",
    "PrometheusSettings",
    "RedisSettings",
    "SecretUrl",
    "Settings",
    "WebSettings",
    "env_name",
    "load_settings",
    "redact_url",
]

DEFAULT_CONFIG_PATH = Path("config.yaml")

#: Upstream Polly's environment variables and the key each sets.
UPSTREAM_ENV: Mapping[str, KeyPath] = {
    var: path for path, choices in UPSTREAM_ALIASES.items() for var in names(choices)
}
#: Standard OpenTelemetry variables, their key, and the factor from their unit (ms) to polly's (s).
#: A ``_METRICS_`` variant wins over the generic one, as the OTLP exporters do.
OTEL_ENV: Mapping[str, tuple[KeyPath, float | None]] = {
    var: (path, scale) for path, (choices, scale) in OTEL_ALIASES.items() for var in names(choices)
}


def _is_secret_path(path: tuple[str | int, ...]) -> bool:
    names = {str(p) for p in path}
    return bool(names & {"url", "async_url", "password", "token", "headers", "client_secret", "secret_key"})


def _show(path: tuple[str | int, ...], value: Any) -> str:
    if _is_secret_path(path):
        if isinstance(value, str) and "url" in {str(p) for p in path}:
            return repr(redact_url(value))
        return "'***'"
    return repr(value)


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
    model: Any = Settings if not parent else field_annotation(parent)
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
    if origin is not None and isinstance(value, str) and (rule := _unparsed(loc, value)) is not None:
        return f"{origin} (sets {path}): {_show(loc, value)} is invalid: {rule}"
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


def _unparsed(loc: tuple[str | int, ...], raw: str) -> str | None:
    """Why the text of a variable is not a value of the key's type (parsed as environment text is),
    or ``None`` when it is one (then a rule of the key rejected it)."""
    try:
        TypeAdapter(field_annotation(loc)).validate_python(raw.strip(), strict=False)
    except ValidationError as err:
        return str(err.errors()[0]["msg"])
    return None


def _working_directory() -> Path:
    try:
        return Path.cwd()
    except OSError as err:
        reason = err.strerror or err
        msg = f"the working directory cannot be used ({reason}): polly reads .env and config.yaml there"
        raise ConfigError([msg], source="working directory") from err


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
    report = LoadReport()
    dotenv = DotEnvFileSource(Settings, base_dir / ".env", report)
    env = EnvironmentSource(Settings, os.environ if environ is None else environ, report)

    explicit = config_path if config_path is not None else env.raw.get("POLLY_CONFIG") or None
    explicit = explicit if explicit is not None else dotenv.raw.get("POLLY_CONFIG") or None
    path = Path(explicit) if explicit is not None else DEFAULT_CONFIG_PATH
    if not path.is_absolute():
        path = base_dir / path
    yaml_file = YamlFileSource(Settings, path if explicit is not None or path.exists() else None)

    sources = (env, dotenv, yaml_file)  # highest precedence first
    replace_whole(sources)
    problems = list(dict.fromkeys(report.problems))
    settings: Settings | None = None
    token = LOADING_SOURCES.set(sources)
    try:
        settings = Settings()
    except ValidationError as err:
        problems.extend(_describe(e, report.origins) for e in err.errors(include_url=False))
    except SettingsError as err:  # a value pydantic-settings could not decode (names no value)
        problems.append(str(err))
    finally:
        LOADING_SOURCES.reset(token)
    tree = None if settings is not None else _checked_urls([source() for source in sources])
    problems.extend(url_problems(settings, report.origins, base_dir, tree))
    if problems:
        raise ConfigError(problems, source=f"settings ({path.name})" if yaml_file.yaml_data else "settings")
    assert settings is not None
    return settings


_URL_KEYS: tuple[KeyPath, ...] = (
    ("database", "url"),
    ("database", "async_url"),
    ("general", "monitoring", "otlp", "endpoint"),
)


def _checked_urls(trees: list[dict[str, Any]]) -> dict[str, Any]:
    """The URLs ``url_problems`` checks without valid settings, each from the highest source giving it."""
    picked: dict[str, Any] = {}
    for path in _URL_KEYS:
        value = next((v for tree in trees if (v := dig(tree, path)) is not None), None)
        if value is not None:
            target = picked
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return picked
