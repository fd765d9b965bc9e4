"""The API's settings: one typed class read from ``PILOTWATCH_API_*`` when the service starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from pilotwatch.settings import (
    CommonSettings,
    InfluxConnection,
    ServiceSettings,
    StackConfig,
    refuse_placeholder,
    stack_influx,
)


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_API_", extra="forbid", env_nested_delimiter="__")

    influx: InfluxConnection = InfluxConnection()
    """The API only uses InfluxDB's v1 ``/query`` endpoint (InfluxQL); a read-only token is enough."""

    alerts_state_dir: Path = Path(".pilotwatch/alerts")
    """The alert engine's state folder (its ``PILOTWATCH_ALERTS_STATE_DIR``): the API reads and updates alerts
    and silences in its SQLite store (WAL, so both can write)."""

    keys_file: Path = Path(".pilotwatch/api-keys.yaml")
    """YAML or JSON file of hashed API keys (``pilotwatch api keys add`` writes it); the CLI's default is
    ``<PILOTWATCH_HOME>/api-keys.yaml``."""
    manifest: Path | None = None
    """Pilot manifest; empty means ``PILOTWATCH_MANIFEST`` or the shipped default."""

    notify_state_db: Path = Path(".pilotwatch/notify/notify.db")
    """The notifier's database (its ``PILOTWATCH_NOTIFY_STATE_DB``), read for each alert's deliveries."""
    ack_link_secret: SecretStr | None = None
    """Key of the notifier's signed acknowledge links (the notifier's ``PILOTWATCH_NOTIFY_ACK_LINK_SECRET``)."""

    host: str = "127.0.0.1"
    port: int = 8000

    series_max_limit: int = 10_000
    """Largest ``limit`` that ``GET /series`` accepts."""
    export_chunk_s: int = 86_400
    """An export reads InfluxDB this many seconds of data at a time."""
    export_page_rows: int = 5_000
    """Rows per InfluxDB query inside one chunk (LIMIT/OFFSET paging), bounding the memory of a busy chunk."""
    export_max_concurrent: int = 4
    """Exports served at once; one more is answered 429 with Retry-After, so exports can never take every worker
    thread (and with them ``/health`` and the other routes)."""
    export_timeout_s: float = 900.0
    """An export that has streamed this long stops, with a closing line that says so (the file is marked
    incomplete, never silently cut)."""
    evaluation_cache_s: float = Field(default=900.0, ge=0, le=86_400)
    """A city's evaluation is computed once and served from memory this long (0: computed on every request);
    the answer's ``as_of`` says when it was computed."""
    health_timeout_s: float = 5.0
    """``/health`` answers "degraded" when InfluxDB's ping takes longer than this."""
    shutdown_timeout_s: int = 10
    """On SIGTERM, requests still running after this many seconds (a long export) are cut and the server exits."""

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {
            "keys_file": common.home / "api-keys.yaml",
            "manifest": common.manifest,
            "alerts_state_dir": common.home / "alerts",
            "notify_state_db": common.home / "notify" / "notify.db",
            "influx": stack_influx(stack),
        }

    @field_validator("ack_link_secret")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        refuse_placeholder("ack_link_secret", value)
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port must be between 1 and 65535, got {value}")
        return value

    @model_validator(mode="after")
    def _positive_sizes(self) -> Self:
        for name in (
            "series_max_limit",
            "export_chunk_s",
            "export_page_rows",
            "export_max_concurrent",
            "export_timeout_s",
            "health_timeout_s",
            "shutdown_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return self
