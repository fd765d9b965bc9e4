"""The one interface every sensor driver implements, real or simulated, and the hardware it may touch.

A driver turns one manifest :class:`~pilotwatch.manifest.Sensor` into :class:`Measurement` values in the
parameter's canonical unit. ``read()`` either returns a measurement or raises :class:`SensorError` with a stable
``code`` (``no_data``, ``still_processing``, ``out_of_range``, ``bus_error`` ...) that becomes the sensor's health
word in the device status. Drivers never reach hardware at import: buses come in through the small protocols below
(:class:`I2CBus`, :class:`SerialPort`, :class:`PulseCounter`) so every driver runs on any machine against the
emulated devices of :mod:`firmware_sim.bus`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pilotwatch.schema import QartodFlag


@dataclass(frozen=True, slots=True)
class Measurement:
    value: float
    flag: QartodFlag | None = None  # a QARTOD flag the driver knows (e.g. 3 inside an ultrasonic blind zone)


class SensorError(Exception):
    """A read that produced no usable value. ``code`` is a short stable word, ``detail`` says what was seen."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@runtime_checkable
class Driver(Protocol):
    def read(self) -> Measurement: ...

    def close(self) -> None: ...


class I2CBus(Protocol):
    """Plain I²C transfers: a write, or a read of ``length`` bytes, to a 7-bit address."""

    def write(self, address: int, data: bytes) -> None: ...

    def read(self, address: int, length: int) -> bytes: ...


class SerialPort(Protocol):
    """A byte stream (UART / RS-485). ``read`` returns what arrived within ``timeout_s``, possibly less."""

    def write(self, data: bytes) -> None: ...

    def read(self, size: int, timeout_s: float) -> bytes: ...

    def reset_input(self) -> None: ...


class PulseCounter(Protocol):
    """A monotonic count of pulses (a flow meter's reed switch or Hall sensor)."""

    def count(self) -> int: ...


Sleep = Callable[[float], None]
Monotonic = Callable[[], float]
