"""Linux access to the buses a Pi exposes: ``/dev/i2c-N`` (I2C_SLAVE ioctl) and serial ports (termios, raw 8N1).

Imported lazily by :mod:`edge.drivers` only when a driver for real hardware is built, so the rest of the agent
imports on any machine. The serial port is tested against a pseudo-terminal with an emulated device behind it.
"""

from __future__ import annotations

import os
import select
import time

I2C_SLAVE = 0x0703
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class LinuxI2CBus:
    def __init__(self, number: int) -> None:
        if number < 0:
            raise ValueError(f"I²C bus number must be >= 0, got {number}")
        self.path = f"/dev/i2c-{number}"
        self._fd: int | None = None
        self._address: int | None = None

    def _select(self, address: int) -> int:
        import fcntl  # noqa: PLC0415 - Unix only; keeps the module importable elsewhere

        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)
        if self._address != address:
            fcntl.ioctl(self._fd, I2C_SLAVE, address)
            self._address = address
        return self._fd

    def write(self, address: int, data: bytes) -> None:
        os.write(self._select(address), data)

    def read(self, address: int, length: int) -> bytes:
        return os.read(self._select(address), length)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._address = None


class LinuxSerialPort:
    def __init__(self, path: str, baud: int = 9600) -> None:
        if baud not in BAUD_RATES:
            raise ValueError(f"baud must be one of {BAUD_RATES}, got {baud}")
        self.path = path
        self.baud = baud
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        import termios  # noqa: PLC0415 - Unix only; keeps the module importable elsewhere
        import tty  # noqa: PLC0415

        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            speed = getattr(termios, f"B{self.baud}")
            attrs[4] = attrs[5] = speed
            attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE)) | termios.CS8 | termios.CLOCAL
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def write(self, data: bytes) -> None:
        os.write(self._open(), data)

    def read(self, size: int, timeout_s: float) -> bytes:
        fd = self._open()
        out = bytearray()
        deadline = time.monotonic() + timeout_s
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, size - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def reset_input(self) -> None:
        fd = self._open()
        import termios  # noqa: PLC0415

        termios.tcflush(fd, termios.TCIFLUSH)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
