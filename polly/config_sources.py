"""Where settings come from: ``config.yaml``, ``.env`` and the environment, as pydantic-settings sources.

:func:`polly.config.load_settings` opens the three sources and pydantic-settings layers them over the
defaults (environment over ``.env`` over ``config.yaml``, key by key). Each source only reads and
names things; the models validate:

* :class:`YamlFileSource`: the YAML file, with one clear line when it cannot be read or parsed;
* :class:`DotEnvFileSource`: ``.env`` read as upstream reads it (UTF-8);
* :class:`EnvironmentSource`: the environment (or a given mapping).

Both variable sources accept ``POLLY_<SECTION>__<KEY>`` (the nested delimiter is ``__``), upstream
Polly's names and the standard ``OTEL_*`` variables. Those are :class:`~pydantic.AliasChoices` of a
key (the first one set wins, so a ``_METRICS_`` variant beats the generic one); a ``POLLY_`` name beats
them. OpenTelemetry's units and syntax (milliseconds, ``k=v,k=v`` headers, ``OTEL_SDK_DISABLED``) are
turned into polly's before validation. Which variable set each key is kept in a :class:`LoadReport`,
so errors can name it; a variable that cannot be a setting is a problem there too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import AliasChoices, BaseModel, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource, YamlConfigSettingsSource

from polly.config_models import POLLY_ENV_PREFIX, Settings
from polly.errors import ConfigError

KeyPath = tuple[str, ...]

_MON = ("general", "monitoring")
_OTLP = (*_MON, "otlp")
_MS = 0.001  # OpenTelemetry speaks milliseconds, polly seconds

#: Upstream Polly's variables for each key they set.
UPSTREAM_ALIASES: Mapping[KeyPath, AliasChoices] = {
    ("database", "url"): AliasChoices("DATABASE_URL"),
    ("database", "async_url"): AliasChoices("ASYNC_DATABASE_URL"),
    ("database", "pool_size"): AliasChoices("DB_POOL_SIZE"),
    ("database", "max_overflow"): AliasChoices("DB_MAX_OVERFLOW"),
    ("database", "pool_timeout_seconds"): AliasChoices("DB_POOL_TIMEOUT"),
    ("database", "pool_recycle_seconds"): AliasChoices("DB_POOL_RECYCLE"),
    ("database", "echo"): AliasChoices("DB_ECHO"),
    ("redis", "url"): AliasChoices("REDIS_URL"),
    ("redis", "host"): AliasChoices("REDIS_HOST"),
    ("redis", "port"): AliasChoices("REDIS_PORT"),
    ("redis", "db"): AliasChoices("REDIS_DB"),
    ("redis", "password"): AliasChoices("REDIS_PASSWORD"),
    ("discord", "token"): AliasChoices("DISCORD_TOKEN"),
    ("web", "client_id"): AliasChoices("DISCORD_CLIENT_ID"),
    ("web", "client_secret"): AliasChoices("DISCORD_CLIENT_SECRET"),
    ("web", "redirect_uri"): AliasChoices("DISCORD_REDIRECT_URI"),
    ("web", "secret_key"): AliasChoices("SECRET_KEY"),
    ("web", "super_admin_ids"): AliasChoices("SUPER_ADMIN_IDS"),
}


def _otel(name: str) -> AliasChoices:
    """``OTEL_EXPORTER_OTLP_METRICS_<name>`` first, then ``OTEL_EXPORTER_OTLP_<name>``."""
    return AliasChoices(f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}")


#: The standard OpenTelemetry variables for each key they set, and the factor from their unit to polly's.
OTEL_ALIASES: Mapping[KeyPath, tuple[AliasChoices, float | None]] = {
    (*_MON, "service_name"): (AliasChoices("OTEL_SERVICE_NAME"), None),
    (*_OTLP, "endpoint"): (_otel("ENDPOINT"), None),
    (*_OTLP, "protocol"): (_otel("PROTOCOL"), None),
    (*_OTLP, "headers"): (_otel("HEADERS"), None),
    (*_OTLP, "timeout_seconds"): (_otel("TIMEOUT"), _MS),
    (*_OTLP, "insecure"): (_otel("INSECURE"), None),
    (*_OTLP, "export_interval_seconds"): (AliasChoices("OTEL_METRIC_EXPORT_INTERVAL"), _MS),
    (*_OTLP, "export_timeout_seconds"): (AliasChoices("OTEL_METRIC_EXPORT_TIMEOUT"), _MS),
    (*_MON, "enabled"): (AliasChoices("OTEL_SDK_DISABLED"), None),  # true means monitoring off
}

_ALIASES: tuple[tuple[KeyPath, AliasChoices, float | None], ...] = (
    *((path, choices, None) for path, choices in UPSTREAM_ALIASES.items()),
    *((path, choices, scale) for path, (choices, scale) in OTEL_ALIASES.items()),
)
#: Keys a higher source replaces whole instead of merging into (the OTLP headers are one value).
WHOLE_KEYS: tuple[KeyPath, ...] = ((*_OTLP, "headers"),)
_RESERVED_POLLY_ENV = frozenset({"POLLY_CONFIG", "POLLY_REQUIRE_SERVICES"})


def names(choices: AliasChoices) -> list[str]:
    """The variable names of ``choices``, highest priority first."""
    return [str(choice) for choice in choices.choices]


def env_name(path: KeyPath) -> str:
    """The ``POLLY_`` variable for a key path.

    ``("engine", "tick_seconds")`` → ``POLLY_ENGINE__TICK_SECONDS``.
    """
    return POLLY_ENV_PREFIX + "__".join(p.upper() for p in path)


def field_annotation(path: tuple[str | int, ...]) -> Any:
    """The annotation of the key at ``path`` (a section's model class for a section), or ``None``."""
    model: type[BaseModel] = Settings
    annotation: Any = None
    for i, part in enumerate(path):
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        annotation = info.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return None
            model = annotation
    return annotation


def is_section(path: tuple[str | int, ...]) -> bool:
    annotation = field_annotation(path)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


@dataclass
class LoadReport:
    """What the variable sources found: which variable set each key, and what could not be a setting."""

    origins: dict[KeyPath, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


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


def _in_polly_units(var: str, path: KeyPath, raw: str, scale: float | None, report: LoadReport) -> str | None:
    """``raw`` as the text pydantic reads for ``path``; an unparseable number or flag is passed on
    unchanged, for validation to reject in the variable's own words."""
    if path[-1] == "headers":
        try:
            return json.dumps(_parse_headers(raw))
        except ValueError as err:
            report.problems.append(f"{var} (sets {'.'.join(path)}): '***' is invalid: {err}")
            return None
    try:
        if path == (*_MON, "enabled") and var == "OTEL_SDK_DISABLED":
            return "false" if TypeAdapter(bool).validate_python(raw.strip()) else "true"
        if scale is not None:
            return repr(TypeAdapter(float).validate_python(raw.strip()) * scale)
    except ValidationError:
        return raw
    return raw.strip()


def translate(environ: Mapping[str, str | None], report: LoadReport) -> dict[str, str]:
    """The variables of ``environ`` that set keys, named as the :class:`Settings` source reads them
    (``POLLY_`` + the lower-case path joined by ``__``); everything else is left alone."""
    out: dict[str, str] = {}

    def put(var: str, path: KeyPath, scale: float | None = None) -> None:
        value = _in_polly_units(var, path, environ[var] or "", scale, report)
        if value is not None:
            out[POLLY_ENV_PREFIX + "__".join(path)] = value
            report.origins[path] = var

    for path, choices, scale in _ALIASES:
        var = next((v for v in names(choices) if environ.get(v)), None)
        if var is not None:
            put(var, path, scale)
    sections = tuple(f"{POLLY_ENV_PREFIX}{name.upper()}_" for name in Settings.model_fields)
    for var in sorted(environ):
        if not var.startswith(POLLY_ENV_PREFIX) or var in _RESERVED_POLLY_ENV or not environ[var]:
            continue
        if "__" not in var:
            # Only POLLY_<SECTION>__<KEY> names are settings; other POLLY_ variables belong to
            # someone else, unless they look like a setting with one underscore too few.
            if var.startswith(sections):
                report.problems.append(
                    f"{var}: not a setting; keys are POLLY_<SECTION>__<KEY>, e.g. POLLY_ENGINE__TICK_SECONDS"
                )
            continue
        path = tuple(p.lower() for p in var[len(POLLY_ENV_PREFIX) :].split("__"))
        if field_annotation(path) is None or is_section(path):
            report.problems.append(
                f"{var}: unknown setting {'.'.join(path)!r}; see docs/configuration.md for the keys"
            )
            continue
        put(var, path)  # after the aliases: a POLLY_ name wins
    return out


def dig(tree: Mapping[str, Any], path: KeyPath) -> Any:
    """The value at ``path`` in a nested mapping, or ``None``."""
    node: Any = tree
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


class _Replaceable:
    """A source whose values at ``replaced`` key paths are left out (a higher source gives them)."""

    replaced: set[KeyPath]

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = super().__call__()  # type: ignore[misc]
        for path in getattr(self, "replaced", ()):
            parent = dig(data, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        return data


def replace_whole(sources: tuple[_Replaceable, ...]) -> None:
    """For each of :data:`WHOLE_KEYS`, hide the values of sources below the highest one giving it."""
    for path in WHOLE_KEYS:
        given = False
        for source in sources:  # highest first
            if given:
                source.replaced = {*getattr(source, "replaced", ()), path}
            else:
                given = dig(source(), path) is not None


class EnvironmentSource(_Replaceable, EnvSettingsSource):
    """The environment variables in ``environ`` (``os.environ`` in production) that set keys."""

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str | None], report: LoadReport
    ) -> None:
        self.raw = dict(environ)
        self._report = report
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return translate(self.raw, self._report)


class DotEnvFileSource(_Replaceable, DotEnvSettingsSource):
    """``.env`` at ``path`` (absent is fine; unreadable or not UTF-8 is one clear line)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, report: LoadReport) -> None:
        self.raw: dict[str, str | None] = {}
        self._report = report
        super().__init__(
            settings_cls, env_file=path, env_file_encoding="utf-8", dotenv_filtering="only_existing",
            case_sensitive=True,
        )  # fmt: skip

    def _read_env_file(self, file_path: Path) -> Mapping[str, str | None]:
        try:
            self.raw = {k: v for k, v in super()._read_env_file(file_path).items() if v is not None}
        except UnicodeDecodeError as err:
            where = f"invalid byte at offset {err.start}"
            msg = f"{file_path}: is not UTF-8 text ({where}); polly reads .env as UTF-8"
            raise ConfigError([msg], source=".env file") from err
        except OSError as err:
            msg = f"{file_path}: cannot be read ({err.strerror or err}); polly needs read access to it"
            raise ConfigError([msg], source=".env file") from err
        return self.raw

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return translate(self._read_env_files(), self._report)


class YamlFileSource(_Replaceable, YamlConfigSettingsSource):
    """The YAML file at ``path`` (``None``: no file), whose top level maps section names to sections."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:  # noqa: ARG002
        # an explicitly named file must exist, so do not skip a missing one as pydantic-settings does
        return {} if files is None else self._read_file(Path(files))

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            text = Path(file_path).read_text(encoding="utf-8")
        except OSError as err:
            msg = f"{file_path}: cannot be read: {err.strerror or err}"
            raise ConfigError([msg], source="config file") from err
        except UnicodeDecodeError as err:
            msg = f"{file_path}: is not UTF-8 text ({err.reason} at byte {err.start})"
            raise ConfigError([msg], "config file") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(
                [f"{file_path}: malformed YAML{where}: {problem}"], source="config file"
            ) from err
        if data is None:
            return {}
        if not isinstance(data, dict):
            kind = type(data).__name__
            msg = f"{file_path}: the top level must be a mapping of sections, got {kind}"
            raise ConfigError([msg], "config file")
        return data
