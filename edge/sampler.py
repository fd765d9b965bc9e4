"""Sampling: each sensor of the device on its manifest interval, stamped at the moment it is read.

Slots are the multiples of a sensor's ``interval_s`` (epoch-aligned), so devices and the simulator's ground truth
share one grid. A slot missed while the agent was down is not back-filled (real hardware cannot read the past);
after a restart the sampler resumes after the last slot the buffer recorded, so no slot is sampled twice. Each
reading carries the stamp clock's time taken right before the read, and a QC flag when the driver gave one or
the value is outside the sensor's ``valid_range`` (QARTOD gross range: 4). Sensor health is the last outcome:
``ok`` or the driver's error code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.clock import Clock
from edge.drivers.base import Driver, SensorError
from pilotwatch.manifest import Device, Sensor
from pilotwatch.schema import QartodFlag
from pilotwatch.wire import Reading


def next_slot(interval_ms: int, after_ms: int) -> int:
    """The first multiple of ``interval_ms`` strictly after ``after_ms``."""
    return (after_ms // interval_ms + 1) * interval_ms


@dataclass
class SensorState:
    sensor: Sensor
    driver: Driver
    interval_ms: int
    next_due_ms: int
    health: str = "ok"
    errors: int = 0
    reads: int = 0


@dataclass
class SampleBatch:
    readings: list[Reading] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)


class Sampler:
    def __init__(
        self,
        device: Device,
        drivers: Mapping[str, Driver],
        clock: Clock,
        *,
        stamp_clock: Clock | None = None,
        resume_after: Mapping[str, int] | None = None,
    ) -> None:
        missing = [s.id for s in device.sensors if s.id not in drivers]
        if missing:
            raise ValueError(f"device {device.id!r}: no driver for sensor(s) {missing}")
        self.device = device
        self.clock = clock
        self.stamp_clock = stamp_clock or clock
        now = clock.now_ms()
        resume = resume_after or {}
        self.states = []
        for sensor in device.sensors:
            interval = round(sensor.interval_s * 1000)
            # Resume after the last stored slot; never before now minus one interval (no back-fill of an outage).
            after = max(resume.get(sensor.id, -1), now - interval)
            self.states.append(SensorState(sensor, drivers[sensor.id], interval, next_slot(interval, after)))

    @property
    def next_due_ms(self) -> int:
        return min(s.next_due_ms for s in self.states)

    def health(self) -> dict[str, str]:
        return {s.sensor.id: s.health for s in self.states}

    def sample_due(self, batch: SampleBatch | None = None) -> SampleBatch:
        """Read every sensor whose slot has come (at most once each), at the clock's current time."""
        batch = batch or SampleBatch()
        now = self.clock.now_ms()
        for state in self.states:
            if state.next_due_ms > now:
                continue
            slot = now - now % state.interval_ms
            state.next_due_ms = next_slot(state.interval_ms, now)
            batch.slots[state.sensor.id] = slot
            stamp = self.stamp_clock.now_ms()
            state.reads += 1
            try:
                measurement = state.driver.read()
            except SensorError as exc:
                state.health = exc.code
                state.errors += 1
                continue
            except OSError:
                # A bus that vanished (USB adapter unplugged, /dev/i2c-1 missing) is this sensor's problem only.
                state.health = "bus_error"
                state.errors += 1
                continue
            state.health = "ok"
            low, high = state.sensor.valid_range
            flag = measurement.flag
            if not low <= measurement.value <= high:
                flag = QartodFlag.FAIL
            batch.readings.append(
                Reading(
                    t_ms=stamp,
                    sensor=state.sensor.id,
                    param=state.sensor.param.value,
                    value=float(measurement.value),
                    unit=state.sensor.unit,
                    flag=flag,
                )
            )
        return batch

    def close(self) -> None:
        for state in self.states:
            state.driver.close()
