"""Wire format v1: MQTT topics and JSON payloads between edge devices and ingest.

Contract (see docs/wire-format.md for the prose version):

- Every topic lives under :data:`TOPIC_ROOT` (``pilotwatch/v1``) and names exactly one device, so a broker ACL
  with ``%u`` = device id can confine each device to its own topics.
- ``.../devices/<id>/readings`` (device → ingest, QoS 1): one :class:`ReadingsMessage`, a batch of readings with
  a per-device sequence number that only increases, also across restarts.
- ``.../devices/<id>/status`` (device → all, QoS 1, retained): one :class:`StatusMessage`; the device's last
  will publishes ``state: "lost"`` on the same topic.
- ``.../devices/<id>/ack`` (ingest → device, QoS 1): one :class:`AckMessage` naming the sequence numbers whose
  readings are safely stored.

This module is the only validator of these payloads. The publisher encodes with it and ingest decodes with it,
so a message the edge can produce is by construction one ingest accepts. Structural problems of a message raise
:class:`WireError` with a :class:`Reason`; problems of a single reading inside an otherwise sound message are
returned beside the good readings so that one bad value never costs its neighbours.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec

from pilotwatch.schema import QARTOD_FLAG_VALUES, QartodFlag

WIRE_VERSION: Final = 1
TOPIC_ROOT = "pilotwatch/v1"
DEVICE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,47}$")
SENSOR_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 1000
MAX_TOPIC_LENGTH = 256
MAX_UNIT_LENGTH = 16
# Sample times are epoch milliseconds (UTC). Anything outside 2000-01-01 .. 2100-01-01 is not a clock reading
# but garbage (an RTC that lost power reports 1970 or 2000); ingest applies the tighter, manifest-aware checks.
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 4_102_444_800_000
MAX_SEQ = 2**63 - 1


class Channel(enum.StrEnum):
    READINGS = "readings"
    STATUS = "status"
    ACK = "ack"


class Reason(enum.StrEnum):
    """Why a payload or a reading was refused. Stable strings: they are stored with dead letters."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_VERSION = "bad_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_TYPE = "bad_type"
    NON_FINITE = "non_finite"
    BAD_DEVICE_ID = "bad_device_id"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    EMPTY_BATCH = "empty_batch"
    TOO_MANY_READINGS = "too_many_readings"
    BAD_SEQUENCE = "bad_sequence"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_SENSOR_ID = "bad_sensor_id"
    BAD_UNIT = "bad_unit"
    # Reasons below are decided by ingest against the manifest, listed here so every reason has one home.
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_SENSOR = "unknown_sensor"
    WRONG_PARAMETER = "wrong_parameter"
    WRONG_UNIT = "wrong_unit"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    BEFORE_COMMISSIONING = "before_commissioning"
    DUPLICATE = "duplicate"
    CONFLICTING_SAMPLE = "conflicting_sample"  # a new seq re-uses a stored (device, sensor, time) with another value
    PROCESSING_FAILED = "processing_failed"  # ingest could not process it (a fault of ingest, kept for a person)
    WRITE_REJECTED = "write_rejected"


class WireError(ValueError):
    """A payload that cannot be accepted at all. ``reason`` is machine-readable, ``detail`` says what was seen."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def device_topic(device_id: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/devices/{device_id}/{channel.value}"


def readings_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.READINGS)


def status_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.STATUS)


def ack_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.ACK)


def device_client_id(device_id: str) -> str:
    """The MQTT client id of a device's agent. The deployment broker binds each device's credentials to this id,
    so a device can neither take over another client's session nor be taken over with another's password."""
    return f"pw-edge-{device_id}"


READINGS_SUBSCRIPTION = f"{TOPIC_ROOT}/devices/+/{Channel.READINGS.value}"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/devices/+/{Channel.STATUS.value}"


def parse_topic(topic: str) -> tuple[str, Channel]:
    """Split a device topic into (device id, channel); raise :class:`WireError` for anything else."""
    if len(topic) > MAX_TOPIC_LENGTH:
        raise WireError(Reason.BAD_TOPIC, f"topic is {len(topic)} characters, limit {MAX_TOPIC_LENGTH}")
    prefix = f"{TOPIC_ROOT}/devices/"
    if not topic.startswith(prefix):
        raise WireError(Reason.BAD_TOPIC, f"topic {_short(topic)} is not under {_short(prefix)}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 2:
        raise WireError(Reason.BAD_TOPIC, f"topic {_short(topic)} must be {prefix}<device>/<channel>")
    device_id, channel_name = parts
    if not DEVICE_ID_PATTERN.match(device_id):
        raise WireError(
            Reason.BAD_DEVICE_ID,
            f"device id {_short(device_id)} in topic does not match {DEVICE_ID_PATTERN.pattern}",
        )
    try:
        channel = Channel(channel_name)
    except ValueError:
        expected = ", ".join(c.value for c in Channel)
        raise WireError(Reason.BAD_TOPIC, f"channel {_short(channel_name)} is not one of {expected}") from None
    return device_id, channel


class Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One sample: taken at ``t_ms`` (epoch ms UTC, set at the sensor) by sensor ``sensor`` of the device.

    The annotations are the wire rules; msgspec enforces them while decoding (see :func:`decode_readings`).
    """

    t_ms: Annotated[int, msgspec.Meta(ge=MIN_TIME_MS, le=MAX_TIME_MS)] = msgspec.field(name="t")
    # Identifier patterns are checked once per distinct id after decoding (see decode_readings): a regex per
    # reading would cost three times the rest of the decoding.
    sensor: str
    param: str
    value: float
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_UNIT_LENGTH)]
    flag: QartodFlag | None = None  # QC flag assigned on the edge (QARTOD value), if any

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "t": self.t_ms,
            "sensor": self.sensor,
            "param": self.param,
            "value": self.value,
            "unit": self.unit,
        }
        if self.flag is not None:
            item["flag"] = self.flag
        return item


class _WireReadings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The readings message exactly as it travels; only well-formed messages decode into it."""

    v: Literal[1]
    device: Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN.pattern)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    sent: Annotated[int, msgspec.Meta(ge=MIN_TIME_MS, le=MAX_TIME_MS)]
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


_FAST_READINGS = msgspec.json.Decoder(_WireReadings)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ReadingsMessage:
    device: str
    seq: int
    sent_ms: int
    readings: tuple[Reading, ...]

    def encode(self) -> bytes:
        for reading in self.readings:
            # msgspec would write NaN as null; a reading that is not a number must never leave the device as one.
            if not math.isfinite(reading.value):
                raise WireError(
                    Reason.NON_FINITE, f"sensor {_short(reading.sensor)} value {reading.value} is not finite"
                )
        wire = _WireReadings(
            v=WIRE_VERSION, device=self.device, seq=self.seq, sent=self.sent_ms, readings=list(self.readings)
        )
        data = _ENCODER.encode(wire)
        if len(data) > MAX_PAYLOAD_BYTES:
            raise WireError(Reason.PAYLOAD_TOO_LARGE, f"{len(data)} bytes, limit {MAX_PAYLOAD_BYTES}")
        return data


@dataclass(frozen=True, slots=True)
class RejectedReading:
    index: int
    raw: Any
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class DecodedReadings:
    message: ReadingsMessage
    rejected: tuple[RejectedReading, ...] = field(default=())


_MESSAGE_KEYS = frozenset({"v", "device", "seq", "sent", "readings"})
_READING_KEYS = frozenset({"t", "sensor", "param", "value", "unit", "flag"})
_READING_REQUIRED = ("t", "sensor", "param", "value", "unit")


def _refuse_constant(name: str) -> Any:
    raise WireError(Reason.NON_FINITE, f"JSON constant {name} is not a number")


def _load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(payload, parse_constant=_refuse_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8, and an integer past Python's 4,300-digit conversion limit.
        raise WireError(Reason.BAD_JSON, str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise WireError(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(obj).__name__}, expected an object")
    return obj


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """``repr`` of a received value cut to 40 characters: an integer of 10,000 digits must not fill a detail."""
    text = repr(value) if not _is_int(value) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= 40 else text[:37] + "..."


def _finite_float(value: Any, name: str) -> float:
    """A JSON number as a finite float; an integer too long for a float is refused, not an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(Reason.BAD_TYPE, f"{name} must be a finite number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise WireError(Reason.NON_FINITE, f"{name} {_short(value)} does not fit a float") from None
    if not math.isfinite(number):
        raise WireError(Reason.NON_FINITE, f"{name} {number} is not finite")
    return number


def _check_common(obj: dict[str, Any], topic_device: str, keys: frozenset[str], required: tuple[str, ...]) -> None:
    unknown = set(obj) - keys
    if unknown:
        raise WireError(Reason.UNKNOWN_FIELD, f"unknown field(s) {_short(sorted(unknown))}; allowed {sorted(keys)}")
    for name in required:
        if name not in obj:
            raise WireError(Reason.MISSING_FIELD, f"field {_short(name)} is required")
    if obj["v"] != WIRE_VERSION or not _is_int(obj["v"]):
        raise WireError(Reason.BAD_VERSION, f"v={_short(obj['v'])}, this ingest speaks v{WIRE_VERSION}")
    device = obj["device"]
    if not isinstance(device, str) or not DEVICE_ID_PATTERN.match(device):
        raise WireError(Reason.BAD_DEVICE_ID, f"device {_short(device)} does not match {DEVICE_ID_PATTERN.pattern}")
    if device != topic_device:
        raise WireError(
            Reason.TOPIC_MISMATCH, f"payload device {_short(device)} published on topic of {_short(topic_device)}"
        )


def _check_time(value: Any, name: str) -> int:
    if not _is_int(value):
        raise WireError(Reason.BAD_TYPE, f"{name} must be an integer (epoch ms), got {type(value).__name__}")
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise WireError(Reason.BAD_TIMESTAMP, f"{name}={_short(value)} is outside 2000-01-01..2100-01-01 in epoch ms")
    return int(value)


def _decode_reading(item: Any) -> Reading:
    if not isinstance(item, dict):
        raise WireError(Reason.BAD_TYPE, f"reading is a JSON {type(item).__name__}, expected an object")
    unknown = set(item) - _READING_KEYS
    if unknown:
        raise WireError(Reason.UNKNOWN_FIELD, f"unknown reading field(s) {_short(sorted(unknown))}")
    for name in _READING_REQUIRED:
        if name not in item:
            raise WireError(Reason.MISSING_FIELD, f"reading field {_short(name)} is required")
    t_ms = _check_time(item["t"], "t")
    sensor = item["sensor"]
    if not isinstance(sensor, str) or not SENSOR_ID_PATTERN.match(sensor):
        raise WireError(Reason.BAD_SENSOR_ID, f"sensor {_short(sensor)} does not match {SENSOR_ID_PATTERN.pattern}")
    param = item["param"]
    if not isinstance(param, str) or not SENSOR_ID_PATTERN.match(param):
        raise WireError(Reason.BAD_TYPE, f"param {_short(param)} must be a lowercase identifier")
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(Reason.BAD_TYPE, f"value must be a number, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        value = float(value)
    except OverflowError:  # an integer literal too long for a float, e.g. 1 followed by 400 zeros
        raise WireError(Reason.NON_FINITE, f"value {str(value)[:20]}... does not fit a float") from None
    if not math.isfinite(value):
        raise WireError(Reason.NON_FINITE, f"value {value} is not finite")
    unit = item["unit"]
    if not isinstance(unit, str) or not 0 < len(unit) <= MAX_UNIT_LENGTH:
        raise WireError(
            Reason.BAD_UNIT, f"unit must be a string of 1..{MAX_UNIT_LENGTH} characters, got {_short(unit)}"
        )
    flag = item.get("flag")
    if flag is not None and (not _is_int(flag) or flag not in QARTOD_FLAG_VALUES):
        raise WireError(Reason.BAD_TYPE, f"flag {_short(flag)} is not a QARTOD flag {sorted(QARTOD_FLAG_VALUES)}")
    return Reading(
        t_ms=t_ms, sensor=sensor, param=param, value=value, unit=unit, flag=None if flag is None else QartodFlag(flag)
    )


def decode_readings(topic: str, payload: bytes) -> DecodedReadings:
    """Validate a readings payload published on ``topic``.

    Raises :class:`WireError` when the message as a whole is unusable. Readings that are individually bad are
    returned in ``rejected`` with their index, raw form and reason; the rest are in ``message.readings``.

    A sound message (nearly all of them) is decoded and checked in one pass by msgspec against the typed wire
    structs; anything that fails there is decoded again by the explicit checks below, which name the exact reason
    and keep the good readings of a partly bad message. Both paths accept and refuse the same messages (tested).
    """
    topic_device, channel = parse_topic(topic)
    if channel is not Channel.READINGS:
        raise WireError(Reason.BAD_TOPIC, f"expected a {Channel.READINGS.value} topic, got {channel.value}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    wire = _decode_sound(payload)
    if wire is None:
        return _decode_readings_explaining(topic_device, payload)
    if wire.device != topic_device:
        raise WireError(
            Reason.TOPIC_MISMATCH, f"payload device {_short(wire.device)} published on topic of {_short(topic_device)}"
        )
    message = ReadingsMessage(device=topic_device, seq=wire.seq, sent_ms=wire.sent, readings=tuple(wire.readings))
    return DecodedReadings(message=message)


def _decode_sound(payload: bytes) -> _WireReadings | None:
    """The message if it breaks no wire rule (decoded in C by msgspec), else None."""
    try:
        wire = _FAST_READINGS.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    identifiers = {r.sensor for r in wire.readings}
    identifiers.update(r.param for r in wire.readings)
    if not all(SENSOR_ID_PATTERN.match(name) for name in identifiers):
        return None
    return wire


def _decode_readings_explaining(topic_device: str, payload: bytes) -> DecodedReadings:
    obj = _load_object(payload)
    _check_common(obj, topic_device, _MESSAGE_KEYS, ("v", "device", "seq", "sent", "readings"))
    seq = obj["seq"]
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise WireError(Reason.BAD_SEQUENCE, f"seq must be a non-negative 64-bit integer, got {_short(seq)}")
    sent_ms = _check_time(obj["sent"], "sent")
    items = obj["readings"]
    if not isinstance(items, list):
        raise WireError(Reason.BAD_TYPE, f"readings must be a list, got {type(items).__name__}")
    if not items:
        raise WireError(Reason.EMPTY_BATCH, "readings is empty")
    if len(items) > MAX_READINGS_PER_MESSAGE:
        raise WireError(Reason.TOO_MANY_READINGS, f"{len(items)} readings, limit {MAX_READINGS_PER_MESSAGE}")
    good: list[Reading] = []
    rejected: list[RejectedReading] = []
    for index, item in enumerate(items):
        try:
            good.append(_decode_reading(item))
        except WireError as exc:
            rejected.append(RejectedReading(index, item, exc.reason, exc.detail))
    message = ReadingsMessage(device=topic_device, seq=int(seq), sent_ms=sent_ms, readings=tuple(good))
    return DecodedReadings(message=message, rejected=tuple(rejected))


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # said by the device itself on a clean shutdown
    LOST = "lost"  # said by the broker, from the last will


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """Retained device health. Everything but ``device``, ``state`` and ``t_ms`` is optional."""

    device: str
    state: DeviceState
    t_ms: int
    battery_pct: float | None = None
    signal_dbm: float | None = None
    uptime_s: float | None = None
    buffer_depth: int | None = None
    oldest_unsent_ms: int | None = None
    disk_free_mb: float | None = None
    last_seq: int | None = None
    sensors: dict[str, str] = field(default_factory=dict)

    _OPTIONAL_NUMBERS = (
        ("battery_pct", "battery_pct"),
        ("signal_dbm", "signal_dbm"),
        ("uptime_s", "uptime_s"),
        ("disk_free_mb", "disk_free_mb"),
    )
    _OPTIONAL_INTS = (
        ("buffer_depth", "buffer_depth"),
        ("oldest_unsent", "oldest_unsent_ms"),
        ("last_seq", "last_seq"),
    )

    def encode(self) -> bytes:
        payload: dict[str, Any] = {
            "v": WIRE_VERSION,
            "device": self.device,
            "state": self.state.value,
            "t": self.t_ms,
        }
        for wire_name, attr in (*self._OPTIONAL_NUMBERS, *self._OPTIONAL_INTS):
            value = getattr(self, attr)
            if value is not None:
                payload[wire_name] = value
        if self.sensors:
            payload["sensors"] = dict(self.sensors)
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


_STATUS_KEYS = frozenset(
    {
        "v",
        "device",
        "state",
        "t",
        "battery_pct",
        "signal_dbm",
        "uptime_s",
        "buffer_depth",
        "oldest_unsent",
        "disk_free_mb",
        "last_seq",
        "sensors",
    }
)


_DEVICE_STATES = frozenset(s.value for s in DeviceState)


def decode_status(topic: str, payload: bytes) -> StatusMessage:
    topic_device, channel = parse_topic(topic)
    if channel is not Channel.STATUS:
        raise WireError(Reason.BAD_TOPIC, f"expected a {Channel.STATUS.value} topic, got {channel.value}")
    obj = _load_object(payload)
    _check_common(obj, topic_device, _STATUS_KEYS, ("v", "device", "state", "t"))
    raw_state = obj["state"]
    if not isinstance(raw_state, str) or raw_state not in _DEVICE_STATES:
        raise WireError(Reason.BAD_TYPE, f"state {_short(raw_state)} is not one of {sorted(_DEVICE_STATES)}")
    state = DeviceState(raw_state)
    values: dict[str, Any] = {}
    for wire_name, attr in StatusMessage._OPTIONAL_NUMBERS:
        value = obj.get(wire_name)
        if value is not None:
            values[attr] = _finite_float(value, wire_name)
    for wire_name, attr in StatusMessage._OPTIONAL_INTS:
        value = obj.get(wire_name)
        if value is not None:
            # Bounded like a seq: a number InfluxDB's int64 field cannot hold would be refused at write time.
            if not _is_int(value) or not 0 <= value <= MAX_SEQ:
                raise WireError(Reason.BAD_TYPE, f"{wire_name} must be an integer in 0..{MAX_SEQ}, got {_short(value)}")
            values[attr] = int(value)
    sensors = obj.get("sensors", {})
    if not isinstance(sensors, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sensors.items()):
        raise WireError(Reason.BAD_TYPE, "sensors must map sensor id to a health word")
    return StatusMessage(
        device=topic_device, state=state, t_ms=_check_time(obj["t"], "t"), sensors=dict(sensors), **values
    )


@dataclass(frozen=True, slots=True)
class AckMessage:
    """Ingest's end-to-end acknowledgement: every sequence number ``<= stored_through`` is safely stored, and so
    are the listed ``ranges`` (inclusive ``[first, last]`` pairs) above it."""

    device: str
    stored_through: int
    ranges: tuple[tuple[int, int], ...] = ()
    t_ms: int = 0

    def covered_ranges(self) -> tuple[tuple[int, int], ...]:
        """Every sequence number this ack covers, as inclusive ``(first, last)`` ranges."""
        return ((-1, self.stored_through), *self.ranges)

    def covers(self, seq: int) -> bool:
        """The delivery rule: the edge may forget message ``seq`` once an ack covers it."""
        return any(first <= seq <= last for first, last in self.covered_ranges())

    def encode(self) -> bytes:
        payload = {
            "v": WIRE_VERSION,
            "device": self.device,
            "stored_through": self.stored_through,
            "ranges": [list(r) for r in self.ranges],
            "t": self.t_ms,
        }
        return json.dumps(payload, separators=(",", ":")).encode()


_ACK_KEYS = frozenset({"v", "device", "stored_through", "ranges", "t"})


def decode_ack(topic: str, payload: bytes) -> AckMessage:
    topic_device, channel = parse_topic(topic)
    if channel is not Channel.ACK:
        raise WireError(Reason.BAD_TOPIC, f"expected an {Channel.ACK.value} topic, got {channel.value}")
    obj = _load_object(payload)
    _check_common(obj, topic_device, _ACK_KEYS, ("v", "device", "stored_through", "t"))
    through = obj["stored_through"]
    if not _is_int(through) or not -1 <= through <= MAX_SEQ:
        raise WireError(
            Reason.BAD_SEQUENCE, f"stored_through must be an integer in -1..{MAX_SEQ}, got {_short(through)}"
        )
    raw_ranges = obj.get("ranges", [])
    if not isinstance(raw_ranges, list):
        raise WireError(Reason.BAD_TYPE, f"ranges must be a list of [first, last] pairs, got {_short(raw_ranges)}")
    ranges: list[tuple[int, int]] = []
    for pair in raw_ranges:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(_is_int(x) and 0 <= x <= MAX_SEQ for x in pair)
            and pair[0] <= pair[1]
        ):
            raise WireError(Reason.BAD_TYPE, f"range {_short(pair)} must be [first, last] with 0 <= first <= last")
        ranges.append((int(pair[0]), int(pair[1])))
    return AckMessage(
        device=topic_device,
        stored_through=int(through),
        ranges=tuple(ranges),
        t_ms=_check_time(obj["t"], "t"),
    )
