"""The alert engine's one settings class: ``PILOTWATCH_ALERTS_*`` environment variables or keywords.

Building it validates every value and touches no network and no file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from alerts.rules import RuleConfig
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.settings import CommonSettings, InfluxConnection, ServiceSettings, StackConfig, stack_influx


class AlertSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_ALERTS_", extra="forbid", env_nested_delimiter="__")

    influx: InfluxConnection = InfluxConnection()

    manifest: Path | None = None
    state_dir: Path = Path(".pilotwatch/alerts")
    """Folder of the SQLite store (``alerts.sqlite``), shared read-write with the API and the notifier."""
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between two passes."""
    read_window_s: float = Field(default=6 * 3600.0, gt=0)
    """Each pass re-reads this much of the past: readings that arrive this late from an edge buffer are still
    evaluated in sample-time order (match the analytics late window)."""
    rules: RuleConfig = Field(default_factory=RuleConfig)

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {"state_dir": common.home / "alerts", "manifest": common.manifest, "influx": stack_influx(stack)}

    @property
    def store_path(self) -> Path:
        return self.state_dir / ALERT_STORE_FILE
