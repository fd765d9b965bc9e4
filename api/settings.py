"""The API's settings: one typed class read from ``PILOTWATCH_API_*`` when the service starts."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that sample files and tutorials put where a secret belongs. A deployment that still carries one has not
# been configured, and the API refuses to start rather than run with a guessable credential.
PLACEHOLDER_SECRETS = frozenset(
    {"changethis", "changeme", "change-me", "change_me", "secret", "password", "token", "admin", "example", "xxx"}
)


def refuse_placeholder(name: str, value: SecretStr | None) -> None:
    if value is None:
        return
    text = value.get_secret_value()
    if text.strip().lower() in PLACEHOLDER_SECRETS or "changethis" in text.lower() or "changeme" in text.lower():
        raise ValueError(f"{name} is a placeholder value; set a real secret (e.g. from `openssl rand -hex 32`)")
    if text.strip() == "":
        raise ValueError(f"{name} is empty; leave it unset or set a real secret")


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_API_", extra="forbid")

    influx_url: str = "http://127.0.0.1:8086"
    """InfluxDB base URL; the API only uses its v1 ``/query`` endpoint (InfluxQL)."""
    influx_database: str = "pilotwatch"
    """Database (1.x) or DBRP-mapped database name (2.x)."""
    influx_token: SecretStr | None = None
    """InfluxDB 2.x/3.x token, sent as ``Authorization: Token ...``; a read-only token is enough."""
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = 30.0

    ingest_state_dir: Path = Path(".pilotwatch/ingest")
    """Ingest's state folder (its ``PILOTWATCH_INGEST_STATE_DIR``), read for the delivery ledger."""

    keys_file: Path = Path(".pilotwatch/api-keys.yaml")
    """YAML or JSON file of hashed API keys (``pilotwatch api keys add`` writes it); the CLI's default is
    ``<PILOTWATCH_HOME>/api-keys.yaml``."""
    manifest: Path | None = None
    """Pilot manifest; empty means ``PILOTWATCH_MANIFEST`` or the shipped default."""

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
    health_timeout_s: float = 5.0
    """``/health`` answers "degraded" when InfluxDB's ping takes longer than this."""
    shutdown_timeout_s: int = 10
    """On SIGTERM, requests still running after this many seconds (a long export) are cut and the server exits."""

    @field_validator("influx_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"influx_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("influx_token", "influx_password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None, info: object) -> SecretStr | None:
        refuse_placeholder(getattr(info, "field_name", "secret"), value)
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
        if self.influx_token is not None and self.influx_username is not None:
            raise ValueError("set influx_token (InfluxDB 2.x/3.x) or influx_username/password (1.x), not both")
        return self
