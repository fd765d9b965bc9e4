"""The alert engine's one settings class: ``PILOTWATCH_ALERTS_*`` environment variables or keywords.

Building it validates every value and touches no network and no file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from alerts.rules import RuleConfig

STORE_FILE = "alerts.sqlite"


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_ALERTS_", extra="forbid", env_nested_delimiter="__")

    influx_url: str = "http://127.0.0.1:8086"
    database: str = Field(default="pilotwatch", min_length=1)
    influx_token: SecretStr | None = None
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = Field(default=30.0, gt=0, le=600)

    manifest: Path | None = None
    state_dir: Path = Path(".pilotwatch/alerts")
    """Folder of the SQLite store (``alerts.sqlite``), shared read-write with the API."""
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between two passes."""
    read_window_s: float = Field(default=6 * 3600.0, gt=0)
    """Each pass re-reads this much of the past: readings that arrive this late from an edge buffer are still
    evaluated in sample-time order (match the analytics late window)."""
    rules: RuleConfig = Field(default_factory=RuleConfig)

    @field_validator("influx_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"influx_url must start with http:// or https://, got {value!r}")
        return value

    @property
    def store_path(self) -> Path:
        return self.state_dir / STORE_FILE
