"""Distance sensors over a bin (JSN-SR04T and MaxBotix ultrasonic, VL53L1X time of flight) and fill level.

Every distance driver measures centimetres from the sensor down to the waste. :class:`FillLevel` turns that into a
fill percentage with the sensor's calibration (``empty_cm``: distance to the floor of the empty bin, ``full_cm``:
distance at the full line), or passes the distance through for a ``distance`` sensor.

- JSN-SR04T (v3, UART mode): send 0x55, the module answers ``0xFF, H, L, SUM`` with the distance in mm and
  ``SUM = (0xFF + H + L) & 0xFF``. Blind zone 20-25 cm by version; no echo (nothing within range) answers 0.
- MaxBotix HRXL-MaxSonar-WR (MB7389): free-running TTL serial ``R`` + four digits (mm) + CR at 6.67 Hz; a target
  nearer than the minimum is reported as the minimum (500 mm on the WRS line), no target as 5000 mm.
- VL53L1X: I²C, 16-bit register addresses; model id 0xEACC at 0x010F; ranging started by writing 0x40 to 0x0087;
  data ready in 0x0031 bit 0 against the polarity in 0x0030 bit 4; range status 0x0089, distance (mm) 0x0096,
  interrupt clear 0x0086.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Protocol

from edge.drivers.base import I2CBus, Measurement, SensorError, SerialPort, Sleep
from pilotwatch.schema import QartodFlag


class DistanceSource(Protocol):
    blind_cm: float
    max_cm: float

    def distance_cm(self) -> float: ...


class FillLevel:
    """Fill % from a distance: 0 % at ``empty_cm``, 100 % at ``full_cm``; blind-zone readings are flagged."""

    def __init__(self, source: DistanceSource, calibration: dict[str, float], *, as_fill: bool = True) -> None:
        self.source = source
        self.as_fill = as_fill
        if as_fill:
            try:
                self.empty_cm = float(calibration["empty_cm"])
                self.full_cm = float(calibration["full_cm"])
            except KeyError as exc:
                raise ValueError(f"a fill sensor needs calibration {exc.args[0]!r} (empty_cm and full_cm)") from None
            if not 0 < self.full_cm < self.empty_cm:
                raise ValueError(f"calibration needs 0 < full_cm < empty_cm, got {self.full_cm}, {self.empty_cm}")

    def read(self) -> Measurement:
        distance = self.source.distance_cm()
        in_blind_zone = distance <= self.source.blind_cm
        if not self.as_fill:
            return Measurement(round(distance, 1), QartodFlag.SUSPECT if in_blind_zone else None)
        fill = (self.empty_cm - distance) / (self.empty_cm - self.full_cm) * 100.0
        flag = None
        if in_blind_zone:
            # The waste may be anywhere above the blind limit: the true fill is at least this much.
            flag = QartodFlag.SUSPECT
        if fill > 100.0 or fill < -5.0:
            flag = QartodFlag.SUSPECT
        return Measurement(round(min(100.0, max(0.0, fill)), 1), flag)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


class JsnSr04t:
    FRAME_START = 0xFF
    TRIGGER = b"\x55"

    def __init__(self, port: SerialPort, *, blind_cm: float = 25.0, max_cm: float = 450.0) -> None:
        self.port = port
        self.blind_cm = blind_cm
        self.max_cm = max_cm

    def distance_cm(self) -> float:
        self.port.reset_input()
        self.port.write(self.TRIGGER)
        raw = self.port.read(8, timeout_s=0.15)
        start = raw.find(bytes([self.FRAME_START]))
        if start < 0 or len(raw) < start + 4:
            raise SensorError("no_data", f"JSN-SR04T sent {raw.hex() or 'nothing'}, no 4-byte frame")
        frame = raw[start : start + 4]
        if (frame[0] + frame[1] + frame[2]) & 0xFF != frame[3]:
            raise SensorError("bad_reply", f"JSN-SR04T frame {frame.hex()} fails its checksum")
        millimetres = frame[1] << 8 | frame[2]
        if millimetres == 0:
            raise SensorError("no_echo", "JSN-SR04T heard no echo (nothing within range, or a wet transducer)")
        centimetres = millimetres / 10.0
        if centimetres > self.max_cm:
            raise SensorError("out_of_range", f"JSN-SR04T reports {centimetres} cm, beyond its {self.max_cm} cm")
        # Inside the blind zone the echo is unreliable; all that is known is that the waste is that near or nearer.
        return max(centimetres, self.blind_cm)


class MaxBotix:
    def __init__(self, port: SerialPort, *, blind_cm: float = 50.0, max_cm: float = 500.0, frames: int = 3) -> None:
        self.port = port
        self.blind_cm = blind_cm
        self.max_cm = max_cm
        self.frames = frames

    def distance_cm(self) -> float:
        self.port.reset_input()
        # 6.67 Hz: three frames arrive within ~0.5 s; the median rejects one stray echo.
        raw = self.port.read(6 * (self.frames + 1), timeout_s=0.2 * (self.frames + 1))
        values = []
        for chunk in raw.split(b"\r"):
            start = chunk.rfind(b"R")
            digits = chunk[start + 1 :] if start >= 0 else b""
            if len(digits) == 4 and digits.isdigit():
                values.append(int(digits))
        if not values:
            raise SensorError("no_data", f"MaxBotix sent {raw[:24]!r}, no R#### frame")
        centimetres = statistics.median(values[-self.frames :]) / 10.0
        if centimetres >= self.max_cm:
            raise SensorError("out_of_range", f"MaxBotix reports its maximum {self.max_cm} cm: no target")
        return centimetres


# ST ULD: raw RESULT__RANGE_STATUS (low 5 bits) -> the status the ULD reports (0 = valid).
VL53L1X_STATUS = (255, 255, 255, 5, 2, 4, 1, 7, 3, 0, 255, 255, 9, 13, 255, 255, 255, 255, 10, 6, 255, 255, 11, 12)
VL53L1X_STATUS_WORDS = {
    1: "sigma_fail",
    2: "signal_fail",
    3: "min_range",
    4: "out_of_range",
    5: "hardware_fail",
    7: "wrap_around",
}


class Vl53l1x:
    MODEL_ID = 0xEACC

    def __init__(self, bus: I2CBus, address: int, sleep: Sleep, *, max_cm: float = 400.0, polls: int = 20) -> None:
        self.bus = bus
        self.address = address
        self.sleep = sleep
        self.blind_cm = 4.0
        self.max_cm = max_cm
        self.polls = polls
        self._started = False

    def _write(self, register: int, data: bytes) -> None:
        self.bus.write(self.address, register.to_bytes(2, "big") + data)

    def _read(self, register: int, length: int) -> bytes:
        self.bus.write(self.address, register.to_bytes(2, "big"))
        data = self.bus.read(self.address, length)
        if len(data) != length:
            raise SensorError("bad_reply", f"VL53L1X register {register:#06x}: {len(data)} bytes, expected {length}")
        return data

    def _start(self) -> None:
        model = int.from_bytes(self._read(0x010F, 2), "big")
        if model != self.MODEL_ID:
            raise SensorError("wrong_device", f"device at {self.address:#x} has model id {model:#06x}, not 0xeacc")
        self._write(0x0087, b"\x40")
        self._started = True

    def distance_cm(self) -> float:
        try:
            if not self._started:
                self._start()
            polarity = ((self._read(0x0030, 1)[0] & 0x10) >> 4) ^ 1
            for _ in range(self.polls):
                if self._read(0x0031, 1)[0] & 0x01 == polarity:
                    break
                self.sleep(0.01)
            else:
                raise SensorError("still_processing", "VL53L1X had no range ready")
            raw_status = self._read(0x0089, 1)[0] & 0x1F
            millimetres = int.from_bytes(self._read(0x0096, 2), "big")
            self._write(0x0086, b"\x01")
        except OSError as exc:
            self._started = False
            raise SensorError("bus_error", f"VL53L1X at {self.address:#x}: {exc}") from None
        status = VL53L1X_STATUS[raw_status] if raw_status < len(VL53L1X_STATUS) else 255
        if status != 0:
            word = VL53L1X_STATUS_WORDS.get(status, f"range_status_{status}")
            raise SensorError(word, f"VL53L1X range status {status} (raw {raw_status}), {millimetres} mm")
        return millimetres / 10.0

    def close(self) -> None:
        if self._started:
            # The sensor is being released anyway; a bus that is gone cannot be stopped.
            with contextlib.suppress(OSError):
                self._write(0x0087, b"\x00")
            self._started = False
