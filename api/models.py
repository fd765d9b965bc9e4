"""Response models, one family per entity (``XPublic`` for one, ``XsPublic`` for a list)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from pilotwatch.manifest import LimitStatistic, Parameter, Period, Role, SiteKind, SiteRole


class Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class HealthPublic(Public):
    status: str
    """``ok``, or ``degraded`` (answered with 503) when InfluxDB or the keys file is not usable."""
    influxdb: str
    keys: str
    """``ok``, or ``unreadable``: the keys file is corrupt or cannot be read, so every keyed route answers 503."""
    version: str


class LimitPublic(Public):
    limit_set: str
    standard: str
    citation: str
    param: Parameter
    min: float | None
    max: float | None
    statistic: LimitStatistic
    confirmed: bool
    note: str


class SensorPublic(Public):
    id: str
    param: Parameter
    unit: str
    interval_s: float
    valid_range: tuple[float, float]


class DevicePublic(Public):
    id: str
    model: str
    commissioned: dt.date
    sensors: list[SensorPublic]


class LocationPublic(Public):
    lat: float
    lon: float
    description: str


class PeriodsPublic(Public):
    baseline: Period
    intervention: Period


class SitePublic(Public):
    id: str
    name: str
    city: str
    city_name: str
    timezone: str
    kind: SiteKind
    role: SiteRole
    location: LocationPublic
    periods: PeriodsPublic
    limits: list[LimitPublic]
    devices: list[DevicePublic]


class SitesPublic(Public):
    data: list[SitePublic]
    count: int


class LatestReadingPublic(Public):
    device: str
    sensor: str
    param: str
    value: float
    unit: str
    time: dt.datetime
    """Sample time, set at the sensor."""
    qc_flag: int | None
    """QARTOD flag from analytics; null while the reading has not been evaluated."""
    edge_flag: int | None
    """Flag the edge attached, when it sent one."""


class SiteLatestPublic(Public):
    site: str
    data: list[LatestReadingPublic]
    count: int


class SeriesPointPublic(Public):
    time: dt.datetime
    value: float
    qc_flag: int | None
    edge_flag: int | None
    qc_late: bool = False
    """The reading arrived after analytics' late window and was QC'd by its reconciliation (docs/qc.md):
    QARTOD flags as on time, detector scores from the detectors' state at that later time."""


class SeriesPublic(Public):
    device: str
    sensor: str
    param: Parameter
    unit: str
    start: dt.datetime
    end: dt.datetime
    limit: int
    truncated: bool
    """True when the range holds more points than ``limit``; ask again from the last point's time."""
    count: int
    data: list[SeriesPointPublic]


class DeviceHealthPublic(Public):
    device: str
    city: str
    site: str
    state: str
    """online / offline / lost as the device (or its last will) said; ``never_seen`` before its first status."""
    status_time: dt.datetime | None
    battery_pct: float | None
    signal_dbm: float | None
    uptime_s: float | None
    buffer_depth: int | None
    """Readings waiting in the edge buffer."""
    oldest_unsent: dt.datetime | None
    """Sample time of the oldest reading still in the edge buffer."""
    disk_free_mb: float | None
    last_seq: int | None
    last_reading_time: dt.datetime | None
    last_seen: dt.datetime | None
    """The later of the last status and the last reading stored."""


class DeliveryPublic(Public):
    """The gap ledger of one device as ingest keeps it: what is stored, what is missing, what waits on the edge."""

    device: str
    city: str
    site: str
    seen: bool
    """False until ingest has stored anything of this device (all counts are then zero)."""
    stored: int
    """Messages (sequence numbers) safely stored."""
    stored_through: int
    """Every sequence number up to this one is stored (-1: none yet)."""
    missing: int
    """Sequence numbers below the highest stored that never arrived."""
    gaps: list[tuple[int, int]]
    """The missing sequence numbers as inclusive ranges."""
    recovered: int
    """Gaps that closed when a re-send arrived: late, not lost."""
    duplicates: int
    dead_lettered: int
    buffered_on_device: int | None
    """Readings the device last reported as waiting in its buffer."""
    oldest_unsent: dt.datetime | None
    device_last_seq: int | None
    last_seen: dt.datetime | None
    clock_offset_s: float | None = None
    """How far the device's clock runs ahead of ingest's (negative: behind), from its recent messages; the
    ``device.clock_off`` alert fires when it stays beyond its threshold (docs/alerts.md)."""


class ApiKeyScopePublic(Public):
    name: str
    role: Role
    cities: list[str]
    sites: list[str]


# ------------------------------------------------------------------------------------------------ alerts
class AlertPublic(Public):
    """One alert as the alert engine stored it (docs/alerts.md)."""

    alert_id: str
    rule: str
    kind: str
    city: str
    site: str
    device: str
    sensor: str
    severity: str
    title: str
    status: str
    firing: bool
    silenced: bool
    episode_start: dt.datetime
    fired: dt.datetime
    resolved: dt.datetime | None
    ack_by: str | None
    ack_time: dt.datetime | None
    assignee: str | None
    value: float | None
    body: dict[str, object]


class AlertsPublic(Public):
    data: list[AlertPublic]
    count: int
    limit: int
    offset: int


class CommentPublic(Public):
    author: str
    time: dt.datetime
    text: str


class AlertReadingsPublic(Public):
    """The stored readings of one sensor around an alert, with their QC flags."""

    device: str
    sensor: str
    data: list[SeriesPointPublic]


class NotificationPublic(Public):
    """One notification of the alert to one recipient (the notifier's delivery state)."""

    transition_id: int
    reason: str
    step: int
    channel: str
    recipient: str
    status: str
    attempts: int
    last_error: str
    sent: dt.datetime | None
    idempotency_key: str


class AlertDetailPublic(AlertPublic):
    comments: list[CommentPublic]
    readings: list[AlertReadingsPublic]
    deliveries: list[NotificationPublic]


class AlertActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = ""


class AlertAssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: str


class AlertCommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class SilenceCreate(BaseModel):
    """A maintenance window: alerts of the city (or one site / device, optionally one kind) that fire inside it
    are recorded but marked silenced."""

    model_config = ConfigDict(extra="forbid")
    city: str
    site: str = ""
    device: str = ""
    kind: str = ""
    start: dt.datetime
    end: dt.datetime
    reason: str


class SilencePublic(Public):
    id: int
    city: str
    site: str
    device: str
    kind: str
    start: dt.datetime
    end: dt.datetime
    reason: str
    created_by: str
