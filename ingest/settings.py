"""Ingest's one settings class. Values come from keyword arguments, ``PILOTWATCH_INGEST_*`` environment variables
(``PILOTWATCH_INGEST_INFLUX__URL``, ``PILOTWATCH_INGEST_MQTT__HOST`` for the connection sub-models) and the local
stack of ``--home`` (:class:`pilotwatch.settings.ServiceSettings`); building it validates everything and touches
no network."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from ingest.clock import DEFAULT_WINDOW_S
from ingest.writers import V1Writer, V2Writer, Writer
from pilotwatch.settings import (
    CommonSettings,
    InfluxApi,
    InfluxConnection,
    MqttConnection,
    ServiceSettings,
    StackConfig,
    stack_influx,
    stack_mqtt,
)

_GROUP_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# MQTT packet ids are 16 bit; holding more unacknowledged messages than this cannot be tracked by anyone.
MQTT_PACKET_ID_SPACE = 65_535


class ConflictCheck(enum.StrEnum):
    ON = "on"
    OFF = "off"  # trusted sources only: a reading that re-uses a stored sample time then overwrites it silently


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_INGEST_", extra="forbid", env_nested_delimiter="__")

    mqtt: MqttConnection = MqttConnection()
    influx: InfluxConnection = InfluxConnection(timeout_s=10.0)
    """``timeout_s`` is the write timeout: past it a batch is retried, then spooled."""

    # -- MQTT session -----------------------------------------------------------------------------------------
    client_id: str = Field(default="pilotwatch-ingest-1", min_length=1, max_length=64)
    """Stable per worker: the broker keeps this worker's session (queued messages) under it across restarts."""
    share_group: str | None = "ingest"
    """Workers with the same group split the readings between them (``$share/<group>/...``); empty = no sharing."""
    session_expiry_s: int = Field(default=7 * 86_400, ge=0)
    max_unacked: int = Field(default=1_000, ge=1, le=20_000)
    """MQTT messages received but not yet safe; the broker sends no more than this (MQTT 5 receive maximum)."""

    # -- batching, retry, spool -----------------------------------------------------------------------------
    batch_readings: int = Field(default=5_000, ge=1, le=100_000)
    batch_interval_s: float = Field(default=0.2, gt=0, le=60)
    retry_initial_s: float = Field(default=0.2, gt=0, le=60)
    retry_max_s: float = Field(default=10.0, gt=0, le=600)
    spool_after_s: float = Field(default=5.0, ge=0, le=3600)
    """How long a batch is retried against InfluxDB before it goes to the disk spool instead."""
    spool_max_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)

    # -- validation -----------------------------------------------------------------------------------------
    max_future_s: float = Field(default=300.0, ge=0)
    """A sample time more than this ahead of ingest's clock is refused (the device clock is wrong)."""
    clock_jump_s: float = Field(default=120.0, ge=0)
    """A sample time more than this after the message's own send time means the device clock jumped."""
    clock_window_s: float = Field(default=DEFAULT_WINDOW_S, ge=0.01)
    """Each device's clock offset is the smallest receive-minus-sent lag over this much receive time (ingest.clock)."""
    dedupe_window: int = Field(default=200_000, ge=0)
    """Sequence numbers per device remembered (with a content digest) to drop re-sends without a write."""
    conflict_check: ConflictCheck = ConflictCheck.ON
    """Refuse a reading that would overwrite a stored (device, sensor, time) with another value."""
    conflict_cache: int = Field(default=100_000, ge=1, le=10_000_000)
    """Recent samples remembered per device, so the conflict check needs no query for a stream moving forward."""

    # -- dead letters ---------------------------------------------------------------------------------------
    deadletter_payload_bytes: int = Field(default=4096, ge=64, le=1024 * 1024)
    """Payload bytes kept per dead letter; beyond, only a SHA-256 of the whole payload and its size are kept."""
    deadletter_max_bytes: int = Field(default=256 * 1024**2, ge=1024 * 1024)
    """Bound on what the dead-letter store keeps; the oldest entries are dropped (and counted) past it."""
    deadletter_retention_days: float = Field(default=90.0, gt=0)
    deadletter_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """How long a write waits for the dead-letter database when another process holds its lock."""

    # -- health ---------------------------------------------------------------------------------------------
    state_dir: Path = Path(".pilotwatch/ingest")
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; unset = no endpoint, 0 = any free port."""
    silence_after_s: float = Field(default=300.0, gt=0)
    """Connected but no message for this long: the status says 'silent'."""
    state_interval_s: float = Field(default=1.0, gt=0, le=60)
    stale_after_s: float = Field(default=60.0, gt=0)
    """A thread that has not gone round its loop for this long makes the status 'stale' and the health check fail."""
    delivery_interval_s: float = Field(default=10.0, gt=0, le=3600)
    """How often the gap ledger is published to InfluxDB as ``delivery`` points (and once more at shutdown)."""
    manifest: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.share_group is not None and self.share_group != "" and not _GROUP_PATTERN.match(self.share_group):
            raise ValueError(f"share_group {self.share_group!r} must match {_GROUP_PATTERN.pattern}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(f"retry_max_s {self.retry_max_s} must be >= retry_initial_s {self.retry_initial_s}")
        return self

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {
            "state_dir": common.home / "ingest",
            "manifest": common.manifest,
            "influx": stack_influx(stack),
            "mqtt": stack_mqtt(stack),
        }

    @classmethod
    def for_local_stack(
        cls,
        stack: StackConfig,
        state_dir: Path,
        client_id: str,
        *,
        database: str | None = None,
        mqtt_port: int | None = None,
        influx: InfluxConnection | None = None,
        **extra: Any,
    ) -> IngestSettings:
        """Settings for an ingest on a :class:`~commands.stack.LocalStack` (demo, benchmarks, tests); ``mqtt_port``
        names another broker in front of the stack's (a proxy or a second broker in a test), ``influx`` another
        InfluxDB endpoint (a v2 API in front of the stack's)."""
        if influx is None:
            influx = InfluxConnection(url=stack.influx_url, database=database or stack.database, timeout_s=10.0)
        return cls(
            mqtt=MqttConnection(host=stack.host, port=mqtt_port or stack.mqtt_port),
            influx=influx,
            state_dir=state_dir,
            client_id=client_id,
            **extra,
        )

    @property
    def subscription(self) -> str:
        from pilotwatch.wire import READINGS_SUBSCRIPTION  # noqa: PLC0415

        return f"$share/{self.share_group}/{READINGS_SUBSCRIPTION}" if self.share_group else READINGS_SUBSCRIPTION

    def make_writer(self) -> Writer:
        """The writer these settings describe (constructed only; it connects on its first write)."""
        influx = self.influx
        if influx.api is InfluxApi.V2:
            assert influx.token is not None
            assert influx.org
            assert influx.bucket
            return V2Writer(
                influx.url, influx.token.get_secret_value(), influx.org, influx.bucket, timeout_s=influx.timeout_s
            )
        return V1Writer(
            influx.url,
            influx.database,
            username=influx.username,
            password=influx.password.get_secret_value() if influx.password else None,
            token=influx.token.get_secret_value() if influx.token else None,
            timeout_s=influx.timeout_s,
        )
