"""DS18B20 temperature probes through the Linux 1-Wire sysfs interface (``dtoverlay=w1-gpio`` on a Pi).

The kernel exposes each probe as ``/sys/bus/w1/devices/28-XXXXXXXXXXXX/w1_slave``: a first line ending in
``crc=XX YES`` (or ``NO`` on a failed CRC) and a second ending in ``t=<millidegrees>``. 85000 is the power-on value
of the scratchpad, read when the conversion never ran (a brown-out on the probe's supply).
"""

from __future__ import annotations

from pathlib import Path

from edge.drivers.base import Measurement, SensorError

POWER_ON_RESET_MILLIDEGREES = 85_000


class Ds18b20:
    def __init__(self, w1_dir: Path, address: str | None) -> None:
        self.w1_dir = w1_dir
        self.address = address

    def _path(self) -> Path:
        if self.address:
            return self.w1_dir / self.address / "w1_slave"
        probes = sorted(self.w1_dir.glob("28-*"))
        if not probes:
            raise SensorError("not_found", f"no DS18B20 (28-*) under {self.w1_dir}; is the w1-gpio overlay on?")
        return probes[0] / "w1_slave"

    def read(self) -> Measurement:
        path = self._path()
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise SensorError("not_found", f"{path}: {exc.strerror}") from None
        lines = text.strip().splitlines()
        if len(lines) < 2 or not lines[0].endswith("YES"):
            raise SensorError("crc_error", f"{path}: {lines[0] if lines else 'empty'}")
        _, _, tail = lines[1].rpartition("t=")
        try:
            millidegrees = int(tail)
        except ValueError:
            raise SensorError("bad_reply", f"{path}: {lines[1]!r} has no t=<millidegrees>") from None
        if millidegrees == POWER_ON_RESET_MILLIDEGREES:
            raise SensorError("power_on_reset", f"{path}: 85 °C power-on value, the conversion did not run")
        return Measurement(millidegrees / 1000.0)

    def close(self) -> None:
        """sysfs files are opened per read."""
