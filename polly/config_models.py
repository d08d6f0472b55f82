"""The settings' shape: every section, key, default and rule (the sources live in ``config_sources``).

Sections are frozen, strict pydantic models: ``config.yaml`` values must already have the key's type,
unknown keys are errors. Secrets (passwords inside URLs, tokens, OTLP headers) are
:class:`~pydantic.SecretStr` values; :class:`SecretUrl` shows its URL with the password redacted.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from polly.config_urls import redact_url, redis_url

DEFAULT_DATABASE_URL = "sqlite:///./db/polly.db"
UPSTREAM_DEFAULT_REDIS_URL = "redis://localhost:6379"
POLLY_ENV_PREFIX = "POLLY_"

#: The sources of the :class:`Settings` being built by ``load_settings`` (none otherwise).
LOADING_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "polly_settings_sources", default=()
)


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
        4,
        ge=1,
        le=64,
        description="vote writers (on SQLite one writes at a time); one message's events stay in order",
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


class Settings(BaseSettings):
    """Everything polly reads. Build it with :func:`polly.config.load_settings`.

    ``Settings()`` is the built-in defaults (plus any keyword arguments): the files and the
    environment are sources only while :func:`~polly.config.load_settings` builds one.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_default=True,
        env_prefix=POLLY_ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        env_file=None,
        case_sensitive=True,
    )

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    caches: CacheSettings = Field(default_factory=CacheSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - replaced by load_settings' own
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the sources :func:`~polly.config.load_settings` opened (highest first)."""
        return (init_settings, *LOADING_SOURCES.get())

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data with every secret redacted (for printing)."""
        return cast("dict[str, Any]", _redact_tree(self.model_dump()))


def _redact_tree(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return str(value)
    if isinstance(value, dict):
        return {k: _redact_tree(v) for k, v in value.items()}
    return value
