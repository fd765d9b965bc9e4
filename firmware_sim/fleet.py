"""The simulated fleet: every device of a manifest as simulated drivers, and the ground truth of a time window.

- :class:`SimulatedFleet` ``(manifest, seed)`` builds one :class:`~firmware_sim.environment.SiteModel` and one
  :class:`~firmware_sim.faults.FaultSchedule` per site. ``fleet.device(id)`` gives a :class:`SimulatedDevice`:
  its drivers (``drivers(clock)``: sensor id → :class:`~firmware_sim.sensors.SimulatedSensor`), its clock offset
  (clock-jump faults), battery and signal for the status message.
- Sampling grid: a sensor samples at every multiple of its ``interval_s`` (epoch-aligned), the same grid the edge
  sampler keeps. :meth:`SimulatedFleet.truth` lists the ground truth on that grid as :class:`TruthRow` rows
  (device, sensor, t_ms, value, truth = ``normal`` / ``event:<kind>`` / ``fault:<kind>``, ...);
  :func:`write_truth` writes them to CSV or Parquet.

Everything is a pure function of (manifest, seed, time): two runs, or a run restarted half-way, agree exactly.
"""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edge.clock import Clock, OffsetClock
from edge.drivers.base import Driver
from firmware_sim.environment import SiteModel
from firmware_sim.faults import Fault, FaultSchedule
from firmware_sim.noise import normal, stable_key
from firmware_sim.sensors import Sample, SensorModel, SimulatedSensor
from pilotwatch.manifest import Device, Manifest, Sensor


@dataclass(frozen=True, slots=True)
class TruthRow:
    device: str
    sensor: str
    param: str
    t_ms: int  # as stamped by the device (equals true_t_ms unless its clock jumped)
    true_t_ms: int
    value: float  # what the sensor reported; NaN when it reported nothing
    flag: int  # flag the driver attached (0: none)
    true_value: float  # the environment's value before the sensor
    truth: str  # normal | event:<kind> | fault:<kind>
    event: str  # the environmental event under any fault ("" if none)
    faults: str  # every active fault, '+'-joined, most hiding first

    @classmethod
    def from_sample(cls, device: str, sensor: Sensor, sample: Sample) -> TruthRow:
        return cls(
            device=device,
            sensor=sensor.id,
            param=sensor.param.value,
            t_ms=sample.t_ms,
            true_t_ms=sample.true_t_ms,
            value=math.nan if sample.value is None else sample.value,
            flag=sample.flag or 0,
            true_value=sample.true_value,
            truth=sample.truth,
            event=sample.event or "",
            faults="+".join(f.value for f in sample.faults),
        )


def grid(interval_s: float, start_ms: int, end_ms: int) -> range:
    """Sample times of a sensor in [start_ms, end_ms): the multiples of its interval."""
    step = round(interval_s * 1000)
    first = -(-start_ms // step) * step
    return range(first, end_ms, step)


class SimulatedDevice:
    def __init__(self, device: Device, site: SiteModel, faults: FaultSchedule, seed: int) -> None:
        self.device = device
        self.site = site
        self.faults = faults
        self.seed = seed
        self.models = {s.id: SensorModel(site, faults, device, s, seed) for s in device.sensors}
        self._signal_key = stable_key(seed, device.id, "signal")

    @property
    def id(self) -> str:
        return self.device.id

    def drivers(self, clock: Clock) -> dict[str, Driver]:
        """Drivers that sample the environment at ``clock`` (true time)."""
        return {sensor_id: SimulatedSensor(model, clock) for sensor_id, model in self.models.items()}

    def device_clock(self, clock: Clock) -> OffsetClock:
        """The device's own clock: true time plus whatever clock jumps are active."""
        return OffsetClock(clock, lambda t: self.faults.clock_offset_ms(self.device.id, t))

    def battery_pct(self, t_ms: int) -> float:
        return self.faults.battery_pct(self.device.id, t_ms)

    def signal_dbm(self, t_ms: int) -> float:
        """4G signal: around -80 dBm, changing every 10 minutes."""
        return round(-80.0 + 6.0 * normal(self._signal_key, t_ms // 600_000), 1)

    def truth(self, start_ms: int, end_ms: int) -> Iterator[TruthRow]:
        for sensor in self.device.sensors:
            model = self.models[sensor.id]
            for t in grid(sensor.interval_s, start_ms, end_ms):
                yield TruthRow.from_sample(self.device.id, sensor, model.sample(t))


class SimulatedFleet:
    def __init__(self, manifest: Manifest, seed: int) -> None:
        self.manifest = manifest
        self.seed = seed
        self.sites: dict[str, SiteModel] = {}
        self.schedules: dict[str, FaultSchedule] = {}
        self._devices: dict[str, SimulatedDevice] = {}
        for city, site in manifest.iter_sites():
            model = SiteModel(city, site, seed)
            schedule = FaultSchedule(site, seed)
            self.sites[site.id] = model
            self.schedules[site.id] = schedule
            for device in site.devices:
                self._devices[device.id] = SimulatedDevice(device, model, schedule, seed)

    def device(self, device_id: str) -> SimulatedDevice:
        try:
            return self._devices[device_id]
        except KeyError:
            raise ValueError(f"device {device_id!r} is not in the manifest; known: {sorted(self._devices)}") from None

    @property
    def devices(self) -> list[SimulatedDevice]:
        return list(self._devices.values())

    def truth(self, start_ms: int, end_ms: int, devices: Iterable[str] | None = None) -> Iterator[TruthRow]:
        wanted = list(devices) if devices is not None else list(self._devices)
        for device_id in wanted:
            yield from self.device(device_id).truth(start_ms, end_ms)

    def faults(self, start_ms: int, end_ms: int) -> list[Fault]:
        return [f for schedule in self.schedules.values() for f in schedule.between(start_ms, end_ms)]


TRUTH_COLUMNS = tuple(f.name for f in fields(TruthRow))


def write_truth(rows: Iterable[TruthRow], path: Path) -> int:
    """Write rows to ``.csv`` or ``.parquet`` (by suffix); return how many were written."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        count = 0
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(TRUTH_COLUMNS)
            for row in rows:
                writer.writerow(asdict(row).values())
                count += 1
        return count
    if suffix == ".parquet":
        # Imported here: only the Parquet path needs pandas + pyarrow (and pandas ships no type stubs).
        pd = importlib.import_module("pandas")
        frame = pd.DataFrame([asdict(r) for r in rows], columns=list(TRUTH_COLUMNS))
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise ValueError(f"writing Parquet needs pyarrow (pip install pyarrow): {exc}") from None
        return len(frame)
    raise ValueError(f"ground truth goes to a .csv or .parquet file, got {path.name!r}")
