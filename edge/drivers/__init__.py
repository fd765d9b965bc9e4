"""Sensor drivers behind one interface (:class:`~edge.drivers.base.Driver`), chosen by the manifest's ``driver``.

:func:`build_driver` maps a manifest sensor to its driver and wires it to the buses of a :class:`Hardware`.
``Hardware.linux()`` opens real buses on first use; tests and the simulator hand in emulated ones. Adding a
driver: a class with ``read() -> Measurement`` and ``close()``, a line in :data:`DRIVERS`, a test against an
emulated device in ``firmware_sim.bus`` that includes the device's error replies (see CONTRIBUTING.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.drivers.ads1115 import Ads1115, AnalogProbe
from edge.drivers.atlas_ezo import AtlasEzo
from edge.drivers.base import Driver, I2CBus, Measurement, PulseCounter, SensorError, SerialPort, Sleep
from edge.drivers.distance import FillLevel, JsnSr04t, MaxBotix, Vl53l1x
from edge.drivers.modbus import DEFAULT_REGISTERS, ModbusFloatRegister
from edge.drivers.onewire import Ds18b20
from edge.drivers.pulse import PulseFlow, SysfsCounter
from pilotwatch.manifest import Parameter, Sensor

__all__ = ["DRIVERS", "Driver", "Hardware", "Measurement", "SensorError", "build_driver"]


@dataclass
class Hardware:
    """The buses a device exposes. Factories are called once per bus and cached, so sensors share a bus."""

    i2c_factory: Callable[[], I2CBus]
    serial_factory: Callable[[str, int], SerialPort]
    sleep: Sleep = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    w1_dir: Path = Path("/sys/bus/w1/devices")
    counters: dict[str, PulseCounter] = field(default_factory=dict)
    default_serial: str = "/dev/serial0"
    _i2c: I2CBus | None = field(default=None, init=False)
    _serial: dict[str, SerialPort] = field(default_factory=dict, init=False)

    @classmethod
    def linux(
        cls, i2c_bus: int = 1, counter_paths: dict[str, Path] | None = None, w1_dir: Path | None = None
    ) -> Hardware:
        from edge.drivers.linux import LinuxI2CBus, LinuxSerialPort  # noqa: PLC0415 - real buses only when asked

        counters: dict[str, PulseCounter] = {k: SysfsCounter(v) for k, v in (counter_paths or {}).items()}
        return cls(
            i2c_factory=lambda: LinuxI2CBus(i2c_bus),
            serial_factory=LinuxSerialPort,
            counters=counters,
            w1_dir=w1_dir or Path("/sys/bus/w1/devices"),
        )

    def i2c(self) -> I2CBus:
        if self._i2c is None:
            self._i2c = self.i2c_factory()
        return self._i2c

    def serial(self, path: str, baud: int = 9600) -> SerialPort:
        if path not in self._serial:
            self._serial[path] = self.serial_factory(path, baud)
        return self._serial[path]

    def close(self) -> None:
        for port in [self._i2c, *self._serial.values()]:
            close = getattr(port, "close", None)
            if callable(close):
                close()
        self._i2c = None
        self._serial.clear()


def _int_address(sensor: Sensor, default: int | None = None) -> int:
    if sensor.address is None:
        if default is None:
            raise ValueError(f"sensor {sensor.id!r} ({sensor.driver}) needs an address, e.g. '0x63'")
        return default
    try:
        return int(sensor.address, 0)
    except ValueError:
        raise ValueError(f"sensor {sensor.id!r}: address {sensor.address!r} is not a number like '0x63'") from None


def _ads_channel(sensor: Sensor, hw: Hardware) -> tuple[Ads1115, int]:
    parts = (sensor.address or "").split(":")
    if len(parts) != 3 or parts[0] != "ads1115":
        raise ValueError(f"sensor {sensor.id!r}: address {sensor.address!r} must be 'ads1115:<i2c address>:<channel>'")
    try:
        address, channel = int(parts[1], 0), int(parts[2])
    except ValueError:
        raise ValueError(f"sensor {sensor.id!r}: address {sensor.address!r} must be like 'ads1115:0x48:0'") from None
    return Ads1115(hw.i2c(), address, hw.sleep), channel


def _ezo(kind: str) -> Callable[[Sensor, Hardware], Driver]:
    def build(sensor: Sensor, hw: Hardware) -> Driver:
        return AtlasEzo(hw.i2c(), kind, _int_address(sensor) if sensor.address else None, hw.sleep)

    return build


def _analog(probe: str) -> Callable[[Sensor, Hardware], Driver]:
    def build(sensor: Sensor, hw: Hardware) -> Driver:
        adc, channel = _ads_channel(sensor, hw)
        return AnalogProbe(adc, channel, probe, sensor.calibration)

    return build


def _fill(sensor: Sensor, source: JsnSr04t | MaxBotix | Vl53l1x) -> Driver:
    if "blind_cm" in sensor.calibration:
        source.blind_cm = float(sensor.calibration["blind_cm"])
    return FillLevel(source, sensor.calibration, as_fill=sensor.param is Parameter.FILL)


def _jsn(sensor: Sensor, hw: Hardware) -> Driver:
    return _fill(sensor, JsnSr04t(hw.serial(sensor.address or hw.default_serial, 9600)))


def _maxbotix(sensor: Sensor, hw: Hardware) -> Driver:
    return _fill(sensor, MaxBotix(hw.serial(sensor.address or hw.default_serial, 9600)))


def _vl53(sensor: Sensor, hw: Hardware) -> Driver:
    return _fill(sensor, Vl53l1x(hw.i2c(), _int_address(sensor, 0x29), hw.sleep))


def _ds18b20(sensor: Sensor, hw: Hardware) -> Driver:
    return Ds18b20(hw.w1_dir, sensor.address)


def _uvvis(sensor: Sensor, hw: Hardware) -> Driver:
    path, _, slave = (sensor.address or "").rpartition(":")
    if not path or not slave.isdigit():
        raise ValueError(f"sensor {sensor.id!r}: address {sensor.address!r} must be '<serial port>:<slave id>'")
    register = int(sensor.calibration.get("register", DEFAULT_REGISTERS.get(sensor.param.value, -1)))
    if register < 0:
        raise ValueError(
            f"sensor {sensor.id!r}: no default Modbus register for {sensor.param.value}; set calibration.register"
        )
    baud = int(sensor.calibration.get("baud", 9600))
    return ModbusFloatRegister(hw.serial(path, baud), int(slave), register)


def _pulse(sensor: Sensor, hw: Hardware) -> Driver:
    name = sensor.address or ""
    if name not in hw.counters:
        raise ValueError(
            f"sensor {sensor.id!r}: no pulse counter named {name!r}; map it in the local config [counters] "
            f"(known: {sorted(hw.counters)})"
        )
    return PulseFlow(hw.counters[name], hw.monotonic, float(sensor.calibration.get("pulses_per_litre", 450.0)))


DRIVERS: dict[str, Callable[[Sensor, Hardware], Driver]] = {
    "atlas-ezo-ph": _ezo("ph"),
    "atlas-ezo-do": _ezo("do"),
    "atlas-ezo-ec": _ezo("ec"),
    "atlas-ezo-orp": _ezo("orp"),
    "dfrobot-sen0189": _analog("turbidity-sen0189"),
    "dfrobot-sen0244": _analog("tds-sen0244"),
    "ads1115-ise": _analog("ise"),
    "jsn-sr04t": _jsn,
    "maxbotix-mb7389": _maxbotix,
    "vl53l1x": _vl53,
    "ds18b20": _ds18b20,
    "uvvis-rs485": _uvvis,
    "pulse-flow": _pulse,
}


def build_driver(sensor: Sensor, hw: Hardware) -> Driver:
    try:
        factory = DRIVERS[sensor.driver]
    except KeyError:
        raise ValueError(f"sensor {sensor.id!r}: unknown driver {sensor.driver!r}; known: {sorted(DRIVERS)}") from None
    return factory(sensor, hw)
