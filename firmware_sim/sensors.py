"""A simulated sensor: the site's true value, seen through the sensor (noise, resolution, range, blind zone),
with the scheduled faults applied, and the ground truth of every sample.

:class:`SensorModel` is a pure function of (seed, device, sensor, time). :class:`SimulatedSensor` wraps it in the
:class:`~edge.drivers.base.Driver` interface of real hardware: ``read()`` samples at the clock's time, returns a
:class:`~edge.drivers.base.Measurement` or raises :class:`~edge.drivers.base.SensorError` (``no_data`` in a
dropout, ``no_power`` with a dead battery), exactly as a real driver would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.clock import Clock
from edge.drivers.base import Measurement, SensorError
from firmware_sim.environment import SiteModel
from firmware_sim.faults import ATTENUATING, OPTICAL, PRECEDENCE, SPIKE_SIZE, Fault, FaultSchedule
from firmware_sim.noise import normal, stable_key, uniform
from pilotwatch.manifest import Device, FaultKind, Parameter, Sensor
from pilotwatch.schema import QartodFlag

# Sensor noise (1 sigma): absolute, plus a share of the value.
NOISE: dict[Parameter, tuple[float, float]] = {
    Parameter.TEMPERATURE: (0.05, 0.0),
    Parameter.PH: (0.01, 0.0),
    Parameter.DO: (0.04, 0.01),
    Parameter.CONDUCTIVITY: (1.0, 0.01),
    Parameter.TURBIDITY: (0.5, 0.02),
    Parameter.ORP: (2.0, 0.0),
    Parameter.AMMONIA: (0.02, 0.03),
    Parameter.COLOUR: (2.0, 0.02),
    Parameter.UV254: (0.5, 0.02),
    Parameter.COD: (2.0, 0.03),
    Parameter.FLOW: (0.01, 0.02),
    Parameter.TDS: (1.0, 0.01),
    Parameter.DISTANCE: (1.0, 0.0),
    Parameter.FILL: (0.0, 0.0),  # noise enters through the distance
    Parameter.WATER_LEVEL: (0.005, 0.0),
}
RESOLUTION: dict[Parameter, float] = {
    Parameter.PH: 0.001,
    Parameter.DO: 0.01,
    Parameter.CONDUCTIVITY: 0.1,
    Parameter.TURBIDITY: 0.1,
    Parameter.ORP: 0.1,
    Parameter.AMMONIA: 0.01,
    Parameter.COLOUR: 1.0,
    Parameter.UV254: 0.1,
    Parameter.COD: 0.1,
    Parameter.FLOW: 0.01,
    Parameter.TDS: 1.0,
    Parameter.DISTANCE: 0.1,
    Parameter.FILL: 0.1,
    Parameter.WATER_LEVEL: 0.001,
}
DRIVER_RESOLUTION = {"ds18b20": 0.0625}
BLIND_CM = {"jsn-sr04t": 25.0, "maxbotix-mb7389": 50.0, "vl53l1x": 4.0}


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample and its ground truth. ``value`` is None when the sensor gave nothing."""

    t_ms: int  # the device's stamp (true time plus any clock jump)
    true_t_ms: int
    value: float | None
    flag: QartodFlag | None
    true_value: float
    event: str | None
    faults: tuple[FaultKind, ...]

    @property
    def truth(self) -> str:
        """``fault:<kind>`` (the most hiding fault) over ``event:<kind>`` over ``normal``."""
        if self.faults:
            return f"fault:{self.faults[0].value}"
        if self.event:
            return f"event:{self.event}"
        return "normal"


class SensorModel:
    def __init__(self, site: SiteModel, faults: FaultSchedule, device: Device, sensor: Sensor, seed: int) -> None:
        self.site = site
        self.faults = faults
        self.device = device
        self.sensor = sensor
        self.key = stable_key(seed, device.id, sensor.id)
        self.noise = NOISE[sensor.param]
        self.resolution = DRIVER_RESOLUTION.get(sensor.driver, RESOLUTION.get(sensor.param, 0.001))
        self.blind_cm = float(sensor.calibration.get("blind_cm", BLIND_CM.get(sensor.driver, 0.0)))

    def true_value(self, t_ms: int) -> tuple[float, str | None]:
        values, event = self.site.state(t_ms, self.device)
        param = self.sensor.param
        if param in values:
            return values[param], event
        if param is Parameter.TDS and Parameter.CONDUCTIVITY in values:
            return 0.5 * values[Parameter.CONDUCTIVITY], event
        if param is Parameter.DISTANCE and Parameter.FILL in values:
            return self._distance(values[Parameter.FILL]), event
        raise ValueError(
            f"sensor {self.device.id}/{self.sensor.id}: a {self.site.site.kind.value} site has no {param.value} model"
        )

    def _distance(self, fill: float) -> float:
        empty = float(self.sensor.calibration.get("empty_cm", 120.0))
        full = float(self.sensor.calibration.get("full_cm", 25.0))
        return max(2.0, empty - fill / 100.0 * (empty - full))

    def _observe(self, t_ms: int, true: float) -> tuple[float, QartodFlag | None]:
        """What a healthy sensor reports for a true value: noise, blind zone, range, resolution."""
        param = self.sensor.param
        absolute, relative = self.noise
        eps = normal(self.key, t_ms)
        flag: QartodFlag | None = None
        if param is Parameter.FILL:
            empty = float(self.sensor.calibration.get("empty_cm", 120.0))
            full = float(self.sensor.calibration.get("full_cm", 25.0))
            distance = self._distance(true) + eps * 1.0
            if distance <= self.blind_cm:
                distance, flag = self.blind_cm, QartodFlag.SUSPECT
            value = (empty - distance) / (empty - full) * 100.0
            if value > 100.0:
                flag = QartodFlag.SUSPECT
        else:
            value = true + eps * (absolute + relative * abs(true))
        return value, flag

    def _finish(self, value: float) -> float:
        low, high = self.sensor.valid_range
        value = min(high, max(low, value))
        return round(round(value / self.resolution) * self.resolution, 6)

    def sample(self, true_t_ms: int) -> Sample:
        true, event = self.true_value(true_t_ms)
        active = self.faults.active(self.device.id, self.sensor.id, true_t_ms)
        kinds = tuple(sorted({f.kind for f in active}, key=PRECEDENCE.index))
        stamp = true_t_ms + self.faults.clock_offset_ms(self.device.id, true_t_ms)
        if FaultKind.DEAD_BATTERY in kinds or FaultKind.DROPOUT in kinds:
            return Sample(stamp, true_t_ms, None, None, true, event, kinds)
        flat = next((f for f in active if f.kind is FaultKind.FLAT_LINE), None)
        if flat is not None:
            held = self._healthy(flat.start_ms, exclude=flat)
            return Sample(stamp, true_t_ms, held, None, true, event, kinds)
        value, flag = self._observe(true_t_ms, true)
        value = self._apply(value, active, true_t_ms)
        return Sample(stamp, true_t_ms, self._finish(value), flag, true, event, kinds)

    def _healthy(self, t_ms: int, exclude: Fault) -> float:
        true, _ = self.true_value(t_ms)
        value, _ = self._observe(t_ms, true)
        others = [f for f in self.faults.active(self.device.id, self.sensor.id, t_ms) if f != exclude]
        return self._finish(self._apply(value, others, t_ms))

    def _apply(self, value: float, faults: list[Fault], t_ms: int) -> float:
        param = self.sensor.param
        size = SPIKE_SIZE[param]
        for fault in faults:
            progress = fault.progress(t_ms)
            if fault.kind is FaultKind.SPIKE:
                sign = 1.0 if uniform(self.key ^ 0x5A5A, t_ms) < 0.5 else -1.0
                value += sign * fault.magnitude * size
            elif fault.kind is FaultKind.DRIFT:
                value += fault.magnitude * size * 0.25 * progress
            elif fault.kind is FaultKind.FOULING:
                if param in ATTENUATING:
                    value *= 1.0 - 0.4 * fault.magnitude * progress
                elif param in OPTICAL:
                    value += 0.5 * fault.magnitude * size * progress
                elif param is Parameter.PH:
                    value -= 0.6 * fault.magnitude * progress
                else:
                    value += 0.1 * fault.magnitude * size * progress
            elif fault.kind is FaultKind.NOISE_BURST:
                value += normal(self.key ^ 0xB0B0, t_ms) * fault.magnitude * size / 4.0
        return value


class SimulatedSensor:
    """The :class:`~edge.drivers.base.Driver` of a simulated sensor; samples at ``clock`` (true time)."""

    def __init__(self, model: SensorModel, clock: Clock) -> None:
        self.model = model
        self.clock = clock

    def read(self) -> Measurement:
        sample = self.model.sample(self.clock.now_ms())
        if sample.value is None:
            if FaultKind.DEAD_BATTERY in sample.faults:
                raise SensorError("no_power", "the device's supply is dead")
            raise SensorError("no_data", f"{self.model.sensor.driver} did not answer")
        if not math.isfinite(sample.value):
            raise SensorError("bad_reply", f"{sample.value}")
        return Measurement(sample.value, sample.flag)

    def close(self) -> None:
        """Nothing to release."""
