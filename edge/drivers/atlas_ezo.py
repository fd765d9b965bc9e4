"""Atlas Scientific EZO circuits (pH, DO, EC, ORP) in I²C mode.

Protocol (EZO datasheets): write an ASCII command, wait the command's processing time, read back. The first
byte of the reply is a response code: 1 success, 2 syntax error, 254 still processing, 255 no data; then ASCII
data ended by NUL. ``R`` takes 900 ms on pH and ORP and 600 ms on DO and EC; reading early answers 254. EC may be
set to output several values (EC,TDS,S,SG); the first one is conductivity in µS/cm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.drivers.base import I2CBus, Measurement, SensorError, Sleep

SUCCESS = 1
SYNTAX_ERROR = 2
STILL_PROCESSING = 254
NO_DATA = 255
REPLY_LENGTH = 40
OTHER_COMMAND_DELAY_S = 0.3


@dataclass(frozen=True, slots=True)
class EzoKind:
    name: str
    default_address: int
    read_delay_s: float
    compensates_temperature: bool


EZO_KINDS = {
    "ph": EzoKind("pH", 0x63, 0.9, True),
    "do": EzoKind("DO", 0x61, 0.6, True),
    "ec": EzoKind("EC", 0x64, 0.6, True),
    "orp": EzoKind("ORP", 0x62, 0.9, False),
}


class AtlasEzo:
    """One EZO circuit at ``address`` on ``bus``. ``retries`` extra waits are spent on a 254 reply."""

    def __init__(self, bus: I2CBus, kind: str, address: int | None, sleep: Sleep, retries: int = 3) -> None:
        if kind not in EZO_KINDS:
            raise ValueError(f"unknown EZO kind {kind!r}; expected one of {sorted(EZO_KINDS)}")
        self.kind = EZO_KINDS[kind]
        self.address = self.kind.default_address if address is None else address
        if not 0x03 <= self.address <= 0x77:
            raise ValueError(f"I²C address {self.address:#x} is outside 0x03..0x77")
        self.bus = bus
        self.sleep = sleep
        self.retries = retries

    def command(self, text: str, delay_s: float = OTHER_COMMAND_DELAY_S) -> str:
        """Send ``text``, wait ``delay_s``, return the reply's data; raise :class:`SensorError` on any error code."""
        try:
            self.bus.write(self.address, text.encode("ascii"))
        except OSError as exc:
            raise SensorError("bus_error", f"EZO-{self.kind.name} at {self.address:#x}: write failed: {exc}") from None
        self.sleep(delay_s)
        for attempt in range(self.retries + 1):
            try:
                raw = self.bus.read(self.address, REPLY_LENGTH)
            except OSError as exc:
                raise SensorError(
                    "bus_error", f"EZO-{self.kind.name} at {self.address:#x}: read failed: {exc}"
                ) from None
            if not raw:
                raise SensorError("bad_reply", f"EZO-{self.kind.name} answered nothing")
            code = raw[0]
            if code == STILL_PROCESSING and attempt < self.retries:
                self.sleep(OTHER_COMMAND_DELAY_S)
                continue
            if code == SUCCESS:
                return raw[1:].split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
            names = {SYNTAX_ERROR: "syntax_error", STILL_PROCESSING: "still_processing", NO_DATA: "no_data"}
            raise SensorError(names.get(code, "bad_reply"), f"EZO-{self.kind.name} answered code {code} to {text!r}")
        raise AssertionError("unreachable: the loop returns or raises")

    def set_temperature(self, celsius: float) -> None:
        if not self.kind.compensates_temperature:
            raise ValueError(f"EZO-{self.kind.name} has no temperature compensation")
        if not -20.0 <= celsius <= 100.0:
            raise ValueError(f"compensation temperature {celsius} °C is outside -20..100")
        self.command(f"T,{celsius:.2f}")

    def read(self) -> Measurement:
        data = self.command("R", self.kind.read_delay_s)
        first = data.split(",", 1)[0]
        try:
            value = float(first)
        except ValueError:
            raise SensorError("bad_reply", f"EZO-{self.kind.name} sent {data!r}, not a number") from None
        if not math.isfinite(value):
            raise SensorError("bad_reply", f"EZO-{self.kind.name} sent {data!r}")
        return Measurement(value)

    def close(self) -> None:
        """EZO circuits keep running between reads; nothing to release."""
