"""The analytics service's one settings class: ``PILOTWATCH_ANALYTICS_*`` environment variables or keywords.

Building it validates every value and touches no network and no file. The deployment sets
``PILOTWATCH_ANALYTICS_INFLUX__URL``, ``_INFLUX__DATABASE``, ``_INFLUX__TOKEN`` and ``_STATE_DIR``; everything
else has a default that suits 300 s / 900 s sensors. From the command line, flags come first and the local stack
of ``--home`` last (:class:`pilotwatch.settings.ServiceSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from pilotwatch.qc_config import Labels
from pilotwatch.settings import CommonSettings, InfluxConnection, ServiceSettings, StackConfig, stack_influx

STATE_FILE = "qc_state.json"
"""The checkpoint's file name inside ``state_dir``."""


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_ANALYTICS_", extra="forbid", env_nested_delimiter="__")

    influx: InfluxConnection = InfluxConnection()
    """InfluxDB (v1 HTTP API: /query and /write; InfluxDB 2.x/3.x through their v1 compatibility)."""

    # -- what and when ----------------------------------------------------------------------------------------
    manifest: Path | None = None
    """Pilot manifest with each sensor's ``qc:`` section; unset = ``PILOTWATCH_MANIFEST`` or the shipped one."""
    state_dir: Path = Path(".pilotwatch/analytics")
    """Checkpoint folder: per series the committed horizon and the detectors' state (``qc_state.json``)."""
    interval_s: float = Field(default=60.0, gt=0, le=86_400)
    """Seconds between two evaluations of the live stream."""
    late_window_s: float = Field(default=6 * 3600.0, ge=0)
    """Readings up to this late (an edge buffer flushing after an outage) are evaluated exactly as on time."""
    context_s: float = Field(default=24 * 3600.0, ge=0)
    """History re-read before the horizon for the windowed tests; at least every flat-line/attenuated window."""
    start_lookback_s: float = Field(default=86_400.0, ge=0)
    """Without a checkpoint, the first run evaluates this far back."""
    max_window_s: float = Field(default=86_400.0, gt=0)
    """A longer window (a catch-up, ``--since``) is evaluated in steps of this, as the live stream would be."""

    reconcile_interval_s: float = Field(default=600.0, ge=0)
    """Seconds between two reconciliation passes (QC for stored readings the live pass missed); 0 disables."""
    reconcile_lookback_s: float = Field(default=7 * 86_400.0, ge=0)
    """How far back the reconciliation pass compares readings with qc points."""
    reconcile_max_hours: int = Field(default=24, ge=1)
    """At most this many hours of data (oldest first) are back-filled per reconciliation pass; the rest next."""

    # -- labels -----------------------------------------------------------------------------------------------
    agreement_window_s: float = Field(default=3 * 3600.0, gt=0)
    min_agree: int = Field(default=2, ge=2)
    low_battery_pct: float = Field(default=5.0, ge=0, le=100)
    """Readings of a device whose last status reported a battery below this are labelled fault (brown-out)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.late_window_s < self.agreement_window_s:
            raise ValueError(
                f"late_window_s ({self.late_window_s}) must cover agreement_window_s ({self.agreement_window_s}): "
                "a label depends on readings that far after it"
            )
        return self

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {"state_dir": common.home / "analytics", "manifest": common.manifest, "influx": stack_influx(stack)}

    @property
    def labels(self) -> Labels:
        return Labels(agreement_window=self.agreement_window_s, min_agree=self.min_agree)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE
