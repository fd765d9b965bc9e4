"""Edge agent settings: the broker, credentials, buffer and delivery windows of one device.

Sources, strongest first: command-line flags, the local TOML file (``--config``, see
``edge/local.sample.toml``), the environment (``PILOTWATCH_EDGE_*``), defaults. What a device measures and how
often comes from the pilot manifest, never from here. Constructing settings validates them and touches nothing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pilotwatch.settings import refuse_placeholder

# paho loses publishes silently past 65,535 unacknowledged; the broker's own queue bound is 60,000.
MAX_INFLIGHT_LIMIT = 1_000
MAX_UNACKED_LIMIT = 5_000


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_EDGE_", extra="forbid")

    device: str = Field(default="", description="device id as in the manifest")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65_535)
    username: str | None = Field(default=None, description="MQTT user; the device id when a password is set")
    password: SecretStr | None = None
    tls_ca: Path | None = Field(default=None, description="CA file; setting it turns TLS on")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = Field(default=60, ge=5, le=3_600)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=120, ge=1)

    buffer_dir: Path = Path(".pilotwatch/edge")
    max_buffer_readings: int = Field(default=2_000_000, ge=10)
    min_free_disk_mb: float = Field(default=200.0, ge=0)

    batch_max_readings: int = Field(default=100, ge=1, le=1_000)
    linger_s: float = Field(default=1.0, ge=0)
    max_inflight: int = Field(default=200, ge=1, le=MAX_INFLIGHT_LIMIT)
    max_unacked_messages: int = Field(default=1_000, ge=2, le=MAX_UNACKED_LIMIT)
    live_reserve: int = Field(default=2, ge=0, description="unacked-message slots kept for live readings")
    ack_timeout_s: float = Field(default=30.0, gt=0)
    resend_chunk: int = Field(default=50, ge=1)
    status_interval_s: float = Field(default=60.0, gt=0)

    i2c_bus: int = Field(default=1, ge=0)
    w1_dir: Path = Path("/sys/bus/w1/devices")
    counters: dict[str, Path] = Field(default_factory=dict, description="pulse counter name -> sysfs count file")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s {self.reconnect_max_s} is below reconnect_min_s {self.reconnect_min_s}")
        if self.live_reserve >= self.max_unacked_messages:
            raise ValueError(f"live_reserve {self.live_reserve} must be below max_unacked_messages")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("a client certificate needs tls_ca as well")
        refuse_placeholder("password", self.password)
        return self

    @property
    def mqtt_username(self) -> str | None:
        if self.username:
            return self.username
        return self.device if self.password is not None else None

    def buffer_path(self, device: str | None = None) -> Path:
        return self.buffer_dir / f"{device or self.device}.sqlite"


def read_local_config(path: Path) -> dict[str, Any]:
    """The local TOML file as settings values; unknown keys are reported by :class:`EdgeSettings`."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read the edge config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    edge = data.pop("edge", {})
    if data:
        raise ValueError(f"{path}: only an [edge] table is read, found {sorted(data)}")
    if not isinstance(edge, dict):
        raise ValueError(f"{path}: [edge] must be a table")
    return edge


def load_edge_settings(config: Path | None = None, **overrides: Any) -> EdgeSettings:
    values = read_local_config(config) if config is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EdgeSettings(**values)
