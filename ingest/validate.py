"""Validation of one MQTT message against the wire format and the pilot manifest.

In: a topic and raw payload bytes. Out: line-protocol lines for the readings that passed, and a
:class:`Rejection` (raw payload, reason, detail) for everything that did not. The wire-level checks are
:func:`pilotwatch.wire.decode_readings` (the project's only wire validator); this module adds what needs the
manifest: known device and sensor, parameter and unit, valid range, and timestamp sanity (far future, before
commissioning, sampled after it was sent = a clock jump). A message-level problem raises :class:`WireError`;
reading-level problems never cost the message's good readings.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotwatch.manifest import Manifest
from pilotwatch.schema import DEVICE_STATUS_FIELDS, Measurement, QartodFlag, escape_field_string, field_set, tag_prefix
from pilotwatch.wire import (
    WIRE_VERSION,
    Reading,
    Reason,
    StatusMessage,
    WireError,
    decode_readings,
    decode_status,
    parse_topic,
)

# The line-protocol tail for each possible edge flag, so the hot loop formats nothing for it.
_FLAG_FIELD: dict[int | None, str] = {
    None: "",
    **{int(f): "," + field_set(Measurement.READING, {"flag": int(f)}) for f in QartodFlag},
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """One thing that goes to the dead-letter store. ``kind``: message, reading, status or line."""

    kind: str
    topic: str
    payload: bytes
    reason: Reason
    detail: str
    device: str | None = None
    seq: int | None = None
    index: int | None = None


class FutureSentError(WireError):
    """A message refused because its ``sent`` is too far ahead of ingest's clock. It still says when the device's
    clock thinks it is, so ingest measures the clock offset from it (:mod:`ingest.clock`) before refusing it."""

    def __init__(self, device: str, sent_ms: int, detail: str) -> None:
        super().__init__(Reason.FUTURE_TIMESTAMP, detail)
        self.device = device
        self.sent_ms = sent_ms


@dataclass(slots=True)
class CheckedReadings:
    device: str
    seq: int
    sent_ms: int
    lines: list[str]
    digest: int
    newest_t_ms: int
    rejections: list[Rejection] = field(default_factory=list)
    samples: list[tuple[str, int, float, int | None]] = field(default_factory=list)
    """(sensor, sample time, value, flag) of each line, in the same order: what the conflicting-sample check needs."""


@dataclass(frozen=True, slots=True)
class _SensorSpec:
    param: str
    unit: str
    low: float
    high: float
    prefix: str  # measurement and escaped, sorted tags, ready for ' value=...'
    unit_field: str


@dataclass(frozen=True, slots=True)
class _DeviceSpec:
    city: str
    site: str
    commissioned_ms: int
    sensors: dict[str, _SensorSpec]


def ids_from_payload(topic: str, payload: bytes) -> tuple[str | None, int | None]:
    """Best effort (device, seq) of a message that failed validation, so its dead letter can be found."""
    try:
        device: str | None = parse_topic(topic)[0]
    except WireError:
        device = None
    seq: int | None = None
    if len(payload) <= 1024 * 1024:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            raw = obj.get("seq")
            if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**63:
                seq = raw
    return device, seq


class Validator:
    """Checks messages against one manifest; cheap per reading (precomputed tag prefixes and limits)."""

    def __init__(self, manifest: Manifest, *, max_future_s: float = 300.0, clock_jump_s: float = 120.0) -> None:
        if max_future_s < 0 or clock_jump_s < 0:
            raise ValueError("max_future_s and clock_jump_s must be >= 0")
        self.max_future_ms = int(max_future_s * 1000)
        self.clock_jump_ms = int(clock_jump_s * 1000)
        self.devices: dict[str, _DeviceSpec] = {}
        for device_id, placement in manifest.device_index().items():
            tz = zoneinfo.ZoneInfo(placement.city.timezone)
            start = dt.datetime.combine(placement.device.commissioned, dt.time(0), tzinfo=tz)
            sensors = {}
            for sensor in placement.device.sensors:
                tags = {
                    "city": placement.city.id,
                    "site": placement.site.id,
                    "device": device_id,
                    "sensor": sensor.id,
                    "param": sensor.param.value,
                }
                sensors[sensor.id] = _SensorSpec(
                    param=sensor.param.value,
                    unit=sensor.unit,
                    low=float(sensor.valid_range[0]),
                    high=float(sensor.valid_range[1]),
                    prefix=tag_prefix(Measurement.READING, tags),
                    unit_field=escape_field_string(sensor.unit),
                )
            self.devices[device_id] = _DeviceSpec(
                city=placement.city.id,
                site=placement.site.id,
                commissioned_ms=int(start.timestamp() * 1000),
                sensors=sensors,
            )
        self._status_prefix = {
            d: tag_prefix(Measurement.DEVICE_STATUS, {"city": s.city, "site": s.site, "device": d})
            for d, s in self.devices.items()
        }

    def check_readings(self, topic: str, payload: bytes, now_ms: int) -> CheckedReadings:
        """Lines for the good readings and rejections for the bad ones; WireError if the message is unusable."""
        decoded = decode_readings(topic, payload)
        message = decoded.message
        spec = self.devices.get(message.device)
        if spec is None:
            raise WireError(Reason.UNKNOWN_DEVICE, f"device {message.device!r} is not in the pilot manifest")
        if message.sent_ms > now_ms + self.max_future_ms:
            raise FutureSentError(
                message.device,
                message.sent_ms,
                f"sent={message.sent_ms} is {(message.sent_ms - now_ms) / 1000:.0f} s ahead of ingest's clock "
                f"(limit {self.max_future_ms / 1000:.0f} s): the device clock is wrong",
            )
        seq = message.seq
        sent = message.sent_ms
        rejected: list[tuple[int, Any, Reason, str]] = [(r.index, r.raw, r.reason, r.detail) for r in decoded.rejected]
        lines: list[str] = []
        samples: list[tuple[str, int, float, int | None]] = []
        future_limit = now_ms + self.max_future_ms
        jump_limit = sent + self.clock_jump_ms
        commissioned = spec.commissioned_ms
        sensors = spec.sensors
        newest = 0
        # The decoder keeps order and removes rejected readings: map each good reading back to its index.
        total = len(message.readings) + len(decoded.rejected)
        if decoded.rejected:
            rejected_indexes = {r.index for r in decoded.rejected}
            good_indexes: Sequence[int] = [i for i in range(total) if i not in rejected_indexes]
        else:
            good_indexes = range(total)
        # A sound reading passes one combined test; only a failing one walks the chain that names the reason.
        time_limit = min(future_limit, jump_limit)
        for index, reading in zip(good_indexes, message.readings, strict=True):
            sensor = sensors.get(reading.sensor)
            t = reading.t_ms
            value = reading.value
            if (
                sensor is not None
                and reading.param == sensor.param
                and reading.unit == sensor.unit
                and sensor.low <= value <= sensor.high
                and commissioned <= t <= time_limit
            ):
                flag = _FLAG_FIELD[reading.flag]
                # schema.StoredReading.to_line's bytes, spelled out: a call per reading would cost a fifth of the
                # hot path. tests/ingest/test_parts.py holds the two equal.
                lines.append(f"{sensor.prefix} value={value!r},unit={sensor.unit_field},seq={seq}i{flag} {t}")
                samples.append((reading.sensor, t, value, reading.flag))
                newest = max(newest, t)
                continue
            problem = self._problem(
                message.device,
                reading,
                sensor,
                now_ms=now_ms,
                future_limit=future_limit,
                jump_limit=jump_limit,
                sent=sent,
                commissioned=commissioned,
            )
            rejected.append((index, reading.to_wire(), problem[0], problem[1]))
        rejections = [
            Rejection(
                kind="reading",
                topic=topic,
                payload=_single_reading_payload(message.device, seq, sent, raw),
                reason=reason,
                detail=detail,
                device=message.device,
                seq=seq,
                index=index,
            )
            for index, raw, reason, detail in sorted(rejected, key=lambda r: r[0])
        ]
        digest = hash((tuple(lines), tuple((r.index, r.reason) for r in rejections)))
        return CheckedReadings(message.device, seq, sent, lines, digest, newest, rejections, samples)

    @staticmethod
    def _problem(  # noqa: PLR0911 - one return per rule, in the order the rules are applied
        device: str,
        reading: Reading,
        sensor: _SensorSpec | None,
        *,
        now_ms: int,
        future_limit: int,
        jump_limit: int,
        sent: int,
        commissioned: int,
    ) -> tuple[Reason, str]:
        """Why a reading that failed the combined test is refused: the first rule it breaks, in a fixed order."""
        t = reading.t_ms
        if sensor is None:
            return Reason.UNKNOWN_SENSOR, f"sensor {reading.sensor!r} is not on device {device!r}"
        if reading.param != sensor.param:
            return Reason.WRONG_PARAMETER, f"sensor {reading.sensor!r} measures {sensor.param}, got {reading.param!r}"
        if reading.unit != sensor.unit:
            return Reason.WRONG_UNIT, f"{sensor.param} is carried in {sensor.unit!r}, got {reading.unit!r}"
        if not sensor.low <= reading.value <= sensor.high:
            return (
                Reason.OUT_OF_RANGE,
                f"value {reading.value} outside the valid range [{sensor.low}, {sensor.high}] of {reading.sensor!r}",
            )
        if t > future_limit:
            return Reason.FUTURE_TIMESTAMP, f"t={t} is {(t - now_ms) / 1000:.0f} s ahead of ingest's clock"
        if t < commissioned:
            return Reason.BEFORE_COMMISSIONING, f"t={t} is before the device was commissioned ({commissioned})"
        if t > jump_limit:
            return (
                Reason.BAD_TIMESTAMP,
                f"clock jump: t={t} is {(t - sent) / 1000:.0f} s after the message was sent (sent={sent})",
            )
        raise AssertionError(f"reading {reading!r} failed the combined test but breaks no rule")

    def check_status(self, topic: str, payload: bytes) -> tuple[StatusMessage, str]:
        """The decoded status and its ``device_status`` line (fixed field types); WireError if unusable."""
        status = decode_status(topic, payload)
        prefix = self._status_prefix.get(status.device)
        if prefix is None:
            raise WireError(Reason.UNKNOWN_DEVICE, f"device {status.device!r} is not in the pilot manifest")
        return status, device_status_line(prefix, status)


def device_status_line(prefix: str, status: StatusMessage) -> str:
    """The ``device_status`` line of a status message, ``prefix`` being the device's precomputed tag prefix."""
    fields = {name: getattr(status, name) for name in DEVICE_STATUS_FIELDS}
    fields["state"] = status.state.value
    return f"{prefix} {field_set(Measurement.DEVICE_STATUS, fields)} {status.t_ms}"


def _single_reading_payload(device: str, seq: int, sent_ms: int, raw: Any) -> bytes:
    """A wire message holding only the refused reading, as received: replayable on its own."""
    body = {"v": WIRE_VERSION, "device": device, "seq": seq, "sent": sent_ms, "readings": [raw]}
    return json.dumps(body, separators=(",", ":"), default=str).encode()
