"""Named sensor and device faults, scheduled by seed and by the manifest, applied to what a sensor reports.

Faults come from two places: the site's ``simulation.faults`` (fixed, for tests and demos) and a seeded weekly
schedule at ``fault_rate_per_week`` per site. What each does to a reading (``magnitude`` scales it, 1 = typical):

==============  ==============================================================================================
spike           the readings inside the window jump by ``magnitude`` x the parameter's spike size (±)
drift           an offset growing linearly to ``magnitude`` x a quarter of the spike size, gone after the window
fouling         biofilm: conductivity and DO read low (attenuation up to 40 %), optical sensors read high,
                pH drifts down, growing over the window
flat_line       the sensor repeats the value it had when the fault began
dropout         no reading (the driver times out)
noise_burst     Gaussian noise of ``magnitude`` x the spike size / 4
dead_battery    the whole device: no reading from any sensor; the battery sags over the 6 h before
clock_jump      the whole device: timestamps shifted by ``magnitude`` hours, values untouched
==============  ==============================================================================================

Random faults pick a device, a sensor (device-wide kinds take none) and a duration typical of the kind; random
clock jumps go backwards (a real-time clock reset), so a simulated device never stamps the future.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from firmware_sim.environment import HOUR_MS, WEEK_MS
from firmware_sim.noise import poisson, rng
from pilotwatch.manifest import FaultKind, Parameter, Site

DEVICE_WIDE = frozenset({FaultKind.DEAD_BATTERY, FaultKind.CLOCK_JUMP})
# Precedence in ground truth when faults overlap: what hides the value most wins.
PRECEDENCE = (
    FaultKind.DEAD_BATTERY,
    FaultKind.DROPOUT,
    FaultKind.FLAT_LINE,
    FaultKind.SPIKE,
    FaultKind.NOISE_BURST,
    FaultKind.FOULING,
    FaultKind.DRIFT,
    FaultKind.CLOCK_JUMP,
)
RANDOM_HOURS: dict[FaultKind, tuple[float, float]] = {
    FaultKind.SPIKE: (0.05, 0.5),
    FaultKind.DRIFT: (48.0, 168.0),
    FaultKind.FOULING: (72.0, 240.0),
    FaultKind.FLAT_LINE: (2.0, 24.0),
    FaultKind.DROPOUT: (1.0, 12.0),
    FaultKind.NOISE_BURST: (1.0, 6.0),
    FaultKind.DEAD_BATTERY: (6.0, 48.0),
    FaultKind.CLOCK_JUMP: (2.0, 24.0),
}
LOOKBACK_WEEKS = 2  # longer than the longest random fault
BATTERY_SAG_MS = 6 * HOUR_MS

SPIKE_SIZE: dict[Parameter, float] = {
    Parameter.TEMPERATURE: 6.0,
    Parameter.PH: 2.0,
    Parameter.DO: 4.0,
    Parameter.CONDUCTIVITY: 2000.0,
    Parameter.TURBIDITY: 300.0,
    Parameter.ORP: 300.0,
    Parameter.AMMONIA: 5.0,
    Parameter.COLOUR: 1500.0,
    Parameter.UV254: 150.0,
    Parameter.COD: 400.0,
    Parameter.FLOW: 5.0,
    Parameter.TDS: 500.0,
    Parameter.DISTANCE: 60.0,
    Parameter.FILL: 45.0,
    Parameter.WATER_LEVEL: 1.0,
}
ATTENUATING = frozenset({Parameter.CONDUCTIVITY, Parameter.DO, Parameter.TDS, Parameter.ORP, Parameter.AMMONIA})
OPTICAL = frozenset({Parameter.TURBIDITY, Parameter.COLOUR, Parameter.UV254, Parameter.COD})


@dataclass(frozen=True, slots=True)
class Fault:
    device: str
    sensor: str | None  # None: every sensor of the device
    kind: FaultKind
    start_ms: int
    end_ms: int
    magnitude: float = 1.0
    scheduled: bool = False

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms

    def applies_to(self, device: str, sensor: str) -> bool:
        return self.device == device and (self.sensor is None or self.sensor == sensor)

    def progress(self, t_ms: int) -> float:
        return (t_ms - self.start_ms) / max(1, self.end_ms - self.start_ms)


def _epoch_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


class FaultSchedule:
    """Every fault of one site for a seed; ``active(device, sensor, t)`` is pure."""

    def __init__(self, site: Site, seed: int) -> None:
        self.site = site
        self.seed = seed
        self.scheduled = tuple(
            Fault(
                f.device,
                f.sensor,
                f.kind,
                _epoch_ms(f.start),
                _epoch_ms(f.start) + int(f.hours * HOUR_MS),
                f.magnitude,
                scheduled=True,
            )
            for f in site.simulation.faults
        )
        self._weeks: dict[int, tuple[Fault, ...]] = {}

    def week(self, week: int) -> tuple[Fault, ...]:
        cached = self._weeks.get(week)
        if cached is not None:
            return cached
        generator = rng(self.seed, self.site.id, "faults", week)
        faults = []
        for _ in range(poisson(generator, self.site.simulation.fault_rate_per_week)):
            device = generator.choice(self.site.devices)
            kind = generator.choice(list(FaultKind))
            sensor = None if kind in DEVICE_WIDE else generator.choice(device.sensors).id
            low, high = RANDOM_HOURS[kind]
            start = week * WEEK_MS + int(generator.random() * WEEK_MS)
            hours = generator.uniform(low, high)
            magnitude = -generator.uniform(1.0, 6.0) if kind is FaultKind.CLOCK_JUMP else generator.uniform(0.6, 1.4)
            faults.append(Fault(device.id, sensor, kind, start, start + int(hours * HOUR_MS), magnitude))
        if len(self._weeks) > 64:
            self._weeks.clear()
        self._weeks[week] = tuple(faults)
        return self._weeks[week]

    def between(self, start_ms: int, end_ms: int) -> list[Fault]:
        """Faults overlapping [start_ms, end_ms), scheduled and random."""
        out = [f for f in self.scheduled if f.start_ms < end_ms and f.end_ms > start_ms]
        for week in range(start_ms // WEEK_MS - LOOKBACK_WEEKS, end_ms // WEEK_MS + 1):
            out += [f for f in self.week(week) if f.start_ms < end_ms and f.end_ms > start_ms]
        return sorted(out, key=lambda f: f.start_ms)

    def active(self, device: str, sensor: str | None, t_ms: int) -> list[Fault]:
        week = t_ms // WEEK_MS
        candidates = [*self.scheduled]
        for w in range(week - LOOKBACK_WEEKS, week + 1):
            candidates += self.week(w)
        return [
            f
            for f in candidates
            if f.device == device and f.active(t_ms) and (sensor is None or f.sensor is None or f.sensor == sensor)
        ]

    def clock_offset_ms(self, device: str, t_ms: int) -> int:
        return sum(
            int(f.magnitude * HOUR_MS) for f in self.active(device, None, t_ms) if f.kind is FaultKind.CLOCK_JUMP
        )

    def battery_pct(self, device: str, t_ms: int) -> float:
        """100 % on a healthy supply; sags towards 0 over the 6 h before a dead battery, 0 during it."""
        level = 100.0
        for f in self.between(t_ms, t_ms + BATTERY_SAG_MS + 1):
            if f.device != device or f.kind is not FaultKind.DEAD_BATTERY:
                continue
            if f.active(t_ms):
                return 0.0
            if f.start_ms > t_ms:
                level = min(level, 5.0 + 95.0 * (f.start_ms - t_ms) / BATTERY_SAG_MS)
        return level
