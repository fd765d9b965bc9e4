"""Emulated buses and devices that speak the real devices' protocols, error replies included.

The edge drivers are tested against these, byte for byte: an EZO circuit that answers 254 when read too early,
255 with nothing to send and 2 to a bad command; an ADS1115 with its config/conversion registers, busy bit and
saturation; a JSN-SR04T that answers 0x55 with a checksummed frame (or 0 for no echo); a MaxBotix streaming
``R####\\r``; a VL53L1X with 16-bit registers, data-ready polarity and range statuses; a Modbus RTU slave with CRCs
and exception replies; DS18B20 sysfs files. A missing I²C address raises ``OSError(EREMOTEIO)`` as Linux does.

Time inside the emulators comes from a :class:`VirtualTime` whose ``sleep`` advances it, so a 900 ms EZO read
costs no wall time in a test.
"""

from __future__ import annotations

import errno
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge.drivers.modbus import crc16, frame


class VirtualTime:
    def __init__(self, start_s: float = 0.0) -> None:
        self.now = start_s
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self.slept += max(0.0, seconds)


class I2CDevice(Protocol):
    def on_write(self, data: bytes) -> None: ...

    def on_read(self, length: int) -> bytes: ...


class EmulatedI2CBus:
    def __init__(self) -> None:
        self.devices: dict[int, I2CDevice] = {}
        self.transfers = 0

    def attach(self, address: int, device: I2CDevice) -> None:
        self.devices[address] = device

    def _device(self, address: int) -> I2CDevice:
        self.transfers += 1
        device = self.devices.get(address)
        if device is None:
            raise OSError(errno.EREMOTEIO, f"Remote I/O error (no device at {address:#x})")
        return device

    def write(self, address: int, data: bytes) -> None:
        self._device(address).on_write(bytes(data))

    def read(self, address: int, length: int) -> bytes:
        return self._device(address).on_read(length)


EZO_READ_DELAY_S = {"ph": 0.9, "do": 0.6, "ec": 0.6, "orp": 0.9}


class EzoEmulator:
    """``value`` gives the reading; returning None makes the circuit answer 255 (no data)."""

    def __init__(self, kind: str, value: Callable[[], float | None], time: VirtualTime) -> None:
        self.kind = kind
        self.value = value
        self.time = time
        self.temperature = 25.0
        self.extra_outputs = ""  # e.g. ",512,0.25,1.000" for an EC circuit with TDS, S, SG enabled
        self._pending: tuple[int, bytes, float] | None = None

    def on_write(self, data: bytes) -> None:
        text = data.decode("ascii", errors="replace").strip()
        now = self.time.monotonic()
        if text.upper() == "R":
            value = self.value()
            if value is None:
                self._pending = (255, b"", now)
            else:
                decimals = 1 if self.kind == "orp" else 2 if self.kind in ("do", "ec") else 3
                reply = f"{value:.{decimals}f}" + (self.extra_outputs if self.kind == "ec" else "")
                self._pending = (1, reply.encode(), now + EZO_READ_DELAY_S[self.kind])
        elif text.upper().startswith("T,"):
            try:
                self.temperature = float(text[2:])
                self._pending = (1, b"", now + 0.3)
            except ValueError:
                self._pending = (2, b"", now + 0.3)
        elif text.lower() == "i":
            self._pending = (1, f"?I,{self.kind.upper()},2.16".encode(), now + 0.3)
        else:
            self._pending = (2, b"", now + 0.3)

    def on_read(self, length: int) -> bytes:
        if self._pending is None:
            return bytes([255]) + b"\x00" * (length - 1)
        code, data, ready = self._pending
        if self.time.monotonic() < ready:
            return bytes([254]) + b"\x00" * (length - 1)
        self._pending = None
        return (bytes([code]) + data + b"\x00" * length)[:length]


class Ads1115Emulator:
    FULL_SCALE_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
    DATA_RATES = (8, 16, 32, 64, 128, 250, 475, 860)

    def __init__(self, volts: dict[int, Callable[[], float]], time: VirtualTime) -> None:
        self.volts = volts
        self.time = time
        self.pointer = 0
        self.config = 0x8583  # power-on default
        self.conversion = 0
        self.busy_until = 0.0

    def on_write(self, data: bytes) -> None:
        if not data:
            return
        self.pointer = data[0] & 0x03
        if len(data) == 3 and self.pointer == 1:
            self.config = (data[1] << 8 | data[2]) & 0x7FFF
            if data[1] & 0x80:
                rate = self.DATA_RATES[(self.config >> 5) & 0x7]
                self.busy_until = self.time.monotonic() + 1.0 / rate
                mux = (self.config >> 12) & 0x7
                full_scale = self.FULL_SCALE_V[min((self.config >> 9) & 0x7, 5)]
                source = self.volts.get(mux - 4) if mux >= 4 else None
                volts = source() if source is not None else 0.0
                self.conversion = max(-32768, min(32767, math.floor(volts / full_scale * 32768)))

    def on_read(self, length: int) -> bytes:
        if self.pointer == 1:
            busy = self.time.monotonic() < self.busy_until
            value = self.config | (0 if busy else 0x8000)
        else:
            value = self.conversion & 0xFFFF
        return value.to_bytes(2, "big")[:length]


class Vl53l1xEmulator:
    """``distance_mm`` gives (millimetres, raw range status); raw status 9 is a valid range."""

    def __init__(self, distance_mm: Callable[[], tuple[int, int]], model_id: int = 0xEACC) -> None:
        self.distance_mm = distance_mm
        self.model_id = model_id
        self.register = 0
        self.ranging = False
        self.ready = False
        self.latched: tuple[int, int] | None = None

    def on_write(self, data: bytes) -> None:
        self.register = int.from_bytes(data[:2], "big")
        payload = data[2:]
        if not payload:
            return
        if self.register == 0x0087:
            self.ranging = payload[0] == 0x40
            self.ready = self.ranging
            self.latched = None
        elif self.register == 0x0086 and self.ranging:
            # Interrupt cleared: the next range is measured from now on, and latched when first looked at.
            self.latched = None
            self.ready = True

    def on_read(self, length: int) -> bytes:
        if self.ready and self.latched is None and self.register in (0x0031, 0x0089, 0x0096):
            self.latched = self.distance_mm()
        latched = self.latched or (0, 0)
        values = {
            0x010F: self.model_id.to_bytes(2, "big"),
            0x0030: b"\x01",  # interrupt polarity active high: ready when 0x0031 bit 0 is 1
            0x0031: b"\x01" if self.ready else b"\x00",
            0x0089: bytes([latched[1]]),
            0x0096: latched[0].to_bytes(2, "big"),
        }
        return values.get(self.register, b"\x00" * length)[:length]


class SerialDevice(Protocol):
    def on_write(self, data: bytes) -> None: ...

    def on_read(self, size: int, timeout_s: float) -> bytes: ...


class EmulatedSerial:
    def __init__(self, device: SerialDevice) -> None:
        self.device = device

    def write(self, data: bytes) -> None:
        self.device.on_write(bytes(data))

    def read(self, size: int, timeout_s: float) -> bytes:
        return self.device.on_read(size, timeout_s)[:size]

    def reset_input(self) -> None:
        """Nothing is buffered between calls."""


class JsnEmulator:
    """Answers 0x55 with ``FF H L SUM``. ``distance_mm`` None: no echo (answers 0); ``corrupt``: bad checksum."""

    def __init__(self, distance_mm: Callable[[], int | None], *, blind_mm: int = 250) -> None:
        self.distance_mm = distance_mm
        self.blind_mm = blind_mm
        self.corrupt = False
        self.silent = False
        self._out = b""

    def on_write(self, data: bytes) -> None:
        if data != b"\x55" or self.silent:
            return
        distance = self.distance_mm()
        mm = 0 if distance is None else max(distance, self.blind_mm)
        high, low = mm >> 8 & 0xFF, mm & 0xFF
        checksum = (0xFF + high + low + (1 if self.corrupt else 0)) & 0xFF
        self._out = bytes([0xFF, high, low, checksum])

    def on_read(self, size: int, timeout_s: float) -> bytes:
        out, self._out = self._out, b""
        return out


class MaxBotixEmulator:
    """Streams ``R####\\r`` at 6.67 Hz; nearer than ``min_mm`` reads ``min_mm``, no target reads ``max_mm``."""

    def __init__(self, distance_mm: Callable[[], int | None], *, min_mm: int = 500, max_mm: int = 5000) -> None:
        self.distance_mm = distance_mm
        self.min_mm = min_mm
        self.max_mm = max_mm
        self.garbage = False

    def on_write(self, data: bytes) -> None:
        """The MB7389 has no input; bytes sent to it are ignored."""

    def on_read(self, size: int, timeout_s: float) -> bytes:
        frames = max(1, int(timeout_s * 6.67))
        out = b""
        for _ in range(frames):
            if self.garbage:
                out += b"R\xff\x00?\r"
                continue
            distance = self.distance_mm()
            mm = self.max_mm if distance is None else min(self.max_mm, max(self.min_mm, distance))
            out += f"R{mm:04d}\r".encode()
        # A read starts mid-stream: the first frame arrives cut.
        return out[2:]


class ModbusSlaveEmulator:
    """Holding registers as float32 (ABCD) pairs; unknown register → exception 2; ``busy`` → exception 6."""

    def __init__(self, slave: int, floats: dict[int, Callable[[], float]]) -> None:
        self.slave = slave
        self.floats = floats
        self.busy = False
        self.corrupt = False
        self._out = b""

    def on_write(self, data: bytes) -> None:
        self._out = b""
        if len(data) != 8 or crc16(data[:6]) != int.from_bytes(data[6:], "little") or data[0] != self.slave:
            return  # a real slave stays silent on a frame that is not for it or fails its CRC
        _, function, register, count = struct.unpack(">BBHH", data[:6])
        if function != 0x03:
            self._out = frame(bytes([self.slave, function | 0x80, 1]))
        elif self.busy:
            self._out = frame(bytes([self.slave, 0x83, 6]))
        elif register not in self.floats or count != 2:
            self._out = frame(bytes([self.slave, 0x83, 2]))
        else:
            body = bytes([self.slave, 0x03, 4]) + struct.pack(">f", self.floats[register]())
            reply = frame(body)
            self._out = reply[:-1] + bytes([reply[-1] ^ 0xFF]) if self.corrupt else reply

    def on_read(self, size: int, timeout_s: float) -> bytes:
        out, self._out = self._out, b""
        return out


def write_ds18b20(w1_dir: Path, address: str, celsius: float | None, *, crc_ok: bool = True) -> Path:
    """Write a ``w1_slave`` file as the kernel does; ``celsius`` None writes the 85 °C power-on value."""
    millidegrees = 85_000 if celsius is None else round(celsius * 1000)
    folder = w1_dir / address
    folder.mkdir(parents=True, exist_ok=True)
    raw = "72 01 4b 46 7f ff 0e 10 57"
    path = folder / "w1_slave"
    path.write_text(f"{raw} : crc=57 {'YES' if crc_ok else 'NO'}\n{raw} t={millidegrees}\n", encoding="ascii")
    return path
