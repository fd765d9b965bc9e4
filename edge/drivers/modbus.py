"""Modbus RTU over RS-485 for UV-Vis absorbance probes (colour, UV254), function 03 (read holding registers).

A request is ``slave, 0x03, start (2 bytes), count (2 bytes), CRC16`` (CRC little-endian, polynomial 0xA001).
A reply is ``slave, 0x03, byte count, data..., CRC16``; an exception reply is ``slave, 0x83, code, CRC16``.
Values are IEEE-754 float32 across two registers, high word first (the common "ABCD" order); the register of each
parameter is the sensor's ``calibration.register`` (defaults below), because vendors differ.
"""

from __future__ import annotations

import math
import struct

from edge.drivers.base import Measurement, SensorError, SerialPort

DEFAULT_REGISTERS = {"uv254": 0, "colour": 2, "cod": 4, "turbidity": 6}
EXCEPTIONS = {1: "illegal_function", 2: "illegal_address", 3: "illegal_value", 4: "device_failure", 6: "busy"}


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


class ModbusFloatRegister:
    def __init__(self, port: SerialPort, slave: int, register: int, timeout_s: float = 0.5) -> None:
        if not 1 <= slave <= 247:
            raise ValueError(f"Modbus slave id must be 1..247, got {slave}")
        if not 0 <= register <= 0xFFFE:
            raise ValueError(f"Modbus register must be 0..65534, got {register}")
        self.port = port
        self.slave = slave
        self.register = register
        self.timeout_s = timeout_s

    def read(self) -> Measurement:
        self.port.reset_input()
        self.port.write(frame(struct.pack(">BBHH", self.slave, 0x03, self.register, 2)))
        reply = self.port.read(9, self.timeout_s)
        if len(reply) >= 5 and reply[1] == 0x83:
            if crc16(reply[:3]) != int.from_bytes(reply[3:5], "little"):
                raise SensorError("crc_error", f"Modbus exception reply {reply[:5].hex()} fails its CRC")
            code = reply[2]
            raise SensorError(
                EXCEPTIONS.get(code, f"exception_{code}"), f"slave {self.slave} answered exception {code}"
            )
        if len(reply) < 9:
            raise SensorError("timeout", f"slave {self.slave} sent {len(reply)} of 9 bytes in {self.timeout_s} s")
        if crc16(reply[:7]) != int.from_bytes(reply[7:9], "little"):
            raise SensorError("crc_error", f"reply {reply.hex()} fails its CRC")
        if reply[0] != self.slave or reply[1] != 0x03 or reply[2] != 4:
            raise SensorError("bad_reply", f"reply {reply.hex()} is not slave {self.slave}, function 3, 4 bytes")
        (value,) = struct.unpack(">f", reply[3:7])
        if not math.isfinite(value):
            raise SensorError("bad_reply", f"register {self.register} holds {value}")
        return Measurement(value)

    def close(self) -> None:
        """The port is shared between the probe's registers and closed by its owner."""
