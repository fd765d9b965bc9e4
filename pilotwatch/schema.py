"""The storage schema: every InfluxDB measurement pilotwatch writes, its tags and field types, the QARTOD flag
values, and the one line-protocol writer.

Contract:

- Each measurement is a :class:`Measurement` with a :class:`MeasurementSpec` in :data:`SCHEMA`: its tags (identity
  only; a point's identity is (measurement, tags, time), so a replay overwrites instead of duplicating) and its
  fields, each with one fixed :class:`FieldType`. InfluxDB refuses a write whose field type differs from what a
  shard already holds, so a field's type must never depend on the value: :func:`line` formats by the declared
  type, and refuses a field the spec does not declare.
- Times are epoch milliseconds, the sample time set at the sensor (``precision=ms`` on every write).
- :class:`QartodFlag` holds the IOOS QARTOD primary flags (identical to ``ioos_qc.qartod.QartodFlags``). Every
  package that stores, computes or serves a flag uses these values; the Numba kernels take ``np.uint8`` copies.

Writers (ingest, analytics, alerts), readers (api, dashboards) and tests all import from here, so a name or a
type cannot drift between the one who writes a point and the one who reads it. docs/wire-format.md ("Storage")
is the prose version.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


class QartodFlag(enum.IntEnum):
    """QARTOD primary flags."""

    GOOD = 1
    UNKNOWN = 2  # "not evaluated"
    SUSPECT = 3
    FAIL = 4
    MISSING = 9


QARTOD_FLAG_VALUES: Final = frozenset(int(f) for f in QartodFlag)


class Measurement(enum.StrEnum):
    READING = "reading"
    DEVICE_STATUS = "device_status"
    QC = "qc"
    DELIVERY = "delivery"
    ALERT = "alert"


class FieldType(enum.StrEnum):
    FLOAT = "float"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"


SERIES_TAGS: Final = ("city", "site", "device", "sensor", "param")
"""Tags of one sensor's series (``reading`` and ``qc``): identity, in this order wherever a key is a tuple."""
DEVICE_TAGS: Final = ("city", "site", "device")
ALERT_TAGS: Final = ("city", "site", "device", "sensor", "kind", "rule")
"""Tags of an ``alert`` point: where it is, what kind and which rule; one point per alert at its firing time."""

QC_TEST_FIELDS: Final = (
    "gross_range",
    "climatology",
    "spike",
    "rate_of_change",
    "flat_line",
    "attenuated_signal",
    "neighbor",
)
"""Per-test flag fields of ``qc``: the QARTOD tests the analytics core runs (their ``*_test`` names without it)."""
QC_FAULT_FIELDS: Final = ("fouling",)
"""Flag fields of ``qc`` from the analytics core's fault-verdict detectors (SUSPECT where the signature holds)."""


@dataclass(frozen=True, slots=True)
class MeasurementSpec:
    measurement: Measurement
    tags: tuple[str, ...]
    fields: Mapping[str, FieldType]
    doc: str


SCHEMA: Final[Mapping[Measurement, MeasurementSpec]] = {
    Measurement.READING: MeasurementSpec(
        Measurement.READING,
        SERIES_TAGS,
        {"value": FieldType.FLOAT, "unit": FieldType.STRING, "seq": FieldType.INTEGER, "flag": FieldType.INTEGER},
        "one sensor reading as the device sent it; flag is the edge's QARTOD flag, when it sent one",
    ),
    Measurement.DEVICE_STATUS: MeasurementSpec(
        Measurement.DEVICE_STATUS,
        DEVICE_TAGS,
        {
            "state": FieldType.STRING,
            "battery_pct": FieldType.FLOAT,
            "signal_dbm": FieldType.FLOAT,
            "uptime_s": FieldType.FLOAT,
            "disk_free_mb": FieldType.FLOAT,
            "buffer_depth": FieldType.INTEGER,
            "oldest_unsent_ms": FieldType.INTEGER,
            "last_seq": FieldType.INTEGER,
        },
        "a device's retained status message (online, lost, battery, buffer)",
    ),
    Measurement.QC: MeasurementSpec(
        Measurement.QC,
        SERIES_TAGS,
        {
            "flag": FieldType.INTEGER,
            **dict.fromkeys(QC_TEST_FIELDS, FieldType.INTEGER),
            **dict.fromkeys(QC_FAULT_FIELDS, FieldType.INTEGER),
            "anomaly_score": FieldType.FLOAT,
            "anomaly": FieldType.INTEGER,
            "label": FieldType.STRING,
            "late": FieldType.INTEGER,
        },
        "the analytics core's verdict on one reading: aggregate and per-test QARTOD flags, detector, label;"
        " late=1 on a verdict the reconciliation pass wrote for a reading that arrived after the live pass had"
        " moved on (absent on live verdicts)",
    ),
    Measurement.DELIVERY: MeasurementSpec(
        Measurement.DELIVERY,
        DEVICE_TAGS,
        {
            "stored": FieldType.INTEGER,
            "stored_through": FieldType.INTEGER,
            "highest_stored": FieldType.INTEGER,
            "missing": FieldType.INTEGER,
            "gaps": FieldType.STRING,
            "recovered": FieldType.INTEGER,
            "duplicates": FieldType.INTEGER,
            "dead_lettered": FieldType.INTEGER,
            "buffered_on_device": FieldType.INTEGER,
            "oldest_unsent_ms": FieldType.INTEGER,
            "device_last_seq": FieldType.INTEGER,
            "device_state": FieldType.STRING,
            "last_seen_ms": FieldType.INTEGER,
            "newest_sample_ms": FieldType.INTEGER,
            "clock_offset_ms": FieldType.INTEGER,
            "clock_checked_ms": FieldType.INTEGER,
        },
        "ingest's gap ledger of one device as published (merged over the workers of a state folder): the newest"
        " point is the current state; gaps is a JSON list of the first missing [first, last] seq ranges;"
        " clock_offset_ms is the device clock minus ingest's (smallest receive-minus-sent lag over a window, so"
        " short of the truth by at most the fastest transit), clock_checked_ms when ingest last measured it",
    ),
    Measurement.ALERT: MeasurementSpec(
        Measurement.ALERT,
        ALERT_TAGS,
        {
            "alert_id": FieldType.STRING,
            "title": FieldType.STRING,
            "severity": FieldType.STRING,
            "status": FieldType.STRING,
            "firing": FieldType.INTEGER,
            "silenced": FieldType.INTEGER,
            "value": FieldType.FLOAT,
            "resolved_ms": FieldType.INTEGER,
        },
        "an alert the alert engine decided, at the sample time it fired; rewritten when its status changes",
    ),
}

DEVICE_STATUS_FIELDS: Final = tuple(SCHEMA[Measurement.DEVICE_STATUS].fields)

FieldValue = float | int | str | bool


# ------------------------------------------------------------------------------------------------ line protocol
def escape_tag(value: str) -> str:
    """Escape a measurement name, tag key, tag value or field key for line protocol."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_field_string(value: str) -> str:
    """A string field value, quoted and escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_float(value: float) -> str:
    """A float field: ``repr`` always has a decimal point or exponent, so the type can never flip to integer."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"InfluxDB cannot store the non-finite float {value}")
    return repr(value)


def format_field(value: FieldValue, kind: FieldType) -> str:
    if kind is FieldType.FLOAT:
        return format_float(float(value))
    if kind is FieldType.INTEGER:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"integer field got the fractional value {value!r}")
        return f"{int(value)}i"
    if kind is FieldType.BOOLEAN:
        return "true" if value else "false"
    return escape_field_string(str(value))


def tag_prefix(measurement: Measurement | str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted (InfluxDB's own order, fastest to index) and empty tags left
    out; callers on a hot path build it once per series and append fields and time to it."""
    measurement = Measurement(measurement)
    spec = SCHEMA[measurement]
    unknown = set(tags) - set(spec.tags)
    if unknown:
        raise ValueError(f"{measurement.value} has no tag {sorted(unknown)}; its tags are {list(spec.tags)}")
    tag_part = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != "")
    return f"{escape_tag(measurement.value)}{tag_part}"


def field_set(measurement: Measurement | str, fields: Mapping[str, FieldValue | None]) -> str:
    """The field part of a line, each field formatted by its declared type; ``None`` values are left out."""
    measurement = Measurement(measurement)
    declared = SCHEMA[measurement].fields
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        kind = declared.get(name)
        if kind is None:
            raise ValueError(f"{measurement.value} has no field {name!r}; its fields are {list(declared)}")
        parts.append(f"{escape_tag(name)}={format_field(value, kind)}")
    if not parts:
        raise ValueError(f"a {measurement.value} point needs at least one field")
    return ",".join(parts)


def line(
    measurement: Measurement | str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue | None],
    time_ms: int,
) -> str:
    """One line of line protocol for a point of a declared measurement."""
    return f"{tag_prefix(measurement, tags)} {field_set(measurement, fields)} {int(time_ms)}"


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One ``reading`` point."""

    city: str
    site: str
    device: str
    sensor: str
    param: str
    value: float
    unit: str
    t_ms: int
    seq: int
    flag: int | None = None

    def to_line(self) -> str:
        tags = {"city": self.city, "site": self.site, "device": self.device, "sensor": self.sensor, "param": self.param}
        fields: dict[str, FieldValue | None] = {
            "value": float(self.value),
            "unit": self.unit,
            "seq": self.seq,
            "flag": self.flag,
        }
        return line(Measurement.READING, tags, fields, self.t_ms)
