"""Pulse flow meters (reed switch or Hall sensor) counted by the kernel, read as m³/h.

On a Pi the pulses are counted by the Linux counter subsystem (``/sys/bus/counter/devices/counterN/count0/count``,
e.g. from the ``interrupt-cnt`` driver), so no pulse is lost while the agent sleeps. Flow over the interval since
the previous read = pulses / ``pulses_per_litre`` / hours. The first read has no previous count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.drivers.base import Measurement, PulseCounter, SensorError


class SysfsCounter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self) -> int:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise SensorError("not_found", f"pulse counter {self.path}: {exc}") from None


class PulseFlow:
    def __init__(self, counter: PulseCounter, now_s: Callable[[], float], pulses_per_litre: float) -> None:
        if pulses_per_litre <= 0:
            raise ValueError(f"calibration pulses_per_litre must be > 0, got {pulses_per_litre}")
        self.counter = counter
        self.now_s = now_s
        self.pulses_per_litre = pulses_per_litre
        self._last: tuple[float, int] | None = None

    def read(self) -> Measurement:
        now, count = self.now_s(), self.counter.count()
        last, self._last = self._last, (now, count)
        if last is None:
            raise SensorError("warming_up", "first read: flow needs two counts")
        hours = (now - last[0]) / 3600.0
        pulses = count - last[1]
        if hours <= 0:
            raise SensorError("warming_up", "no time passed since the previous read")
        if pulses < 0:
            raise SensorError("counter_reset", f"count went from {last[1]} to {count}")
        return Measurement(pulses / self.pulses_per_litre / 1000.0 / hours)

    def close(self) -> None:
        """The kernel keeps counting; nothing to release."""
