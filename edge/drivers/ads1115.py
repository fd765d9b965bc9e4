"""TI ADS1115 16-bit ADC over I²C, and the analog probes read through it (turbidity, TDS, ion-selective).

Protocol (ADS1115 datasheet): register pointer byte then data; 0x00 conversion (signed 16-bit), 0x01 config.
Config bits: OS (15) writes 1 to start a single-shot conversion and reads 0 while converting; MUX (14:12)
``100..111`` = AIN0..AIN3 against GND; PGA (11:9) full scale ±6.144/4.096/2.048/1.024/0.512/0.256 V; MODE (8) 1 =
single shot; DR (7:5) data rate 8..860 SPS; COMP_QUE (1:0) ``11`` = comparator off.
"""

from __future__ import annotations

import math

from edge.drivers.base import I2CBus, Measurement, SensorError, Sleep
from pilotwatch.schema import QartodFlag

CONVERSION = 0x00
CONFIG = 0x01
FULL_SCALE_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
DATA_RATES = (8, 16, 32, 64, 128, 250, 475, 860)


class Ads1115:
    def __init__(self, bus: I2CBus, address: int, sleep: Sleep, *, data_rate: int = 128) -> None:
        if address not in (0x48, 0x49, 0x4A, 0x4B):
            raise ValueError(f"ADS1115 address must be 0x48..0x4B (ADDR pin), got {address:#x}")
        if data_rate not in DATA_RATES:
            raise ValueError(f"ADS1115 data rate must be one of {DATA_RATES} SPS, got {data_rate}")
        self.bus = bus
        self.address = address
        self.sleep = sleep
        self.data_rate = data_rate

    def read_volts(self, channel: int, full_scale_v: float = 4.096, polls: int = 5) -> float:
        if channel not in range(4):
            raise ValueError(f"ADS1115 channel must be 0..3, got {channel}")
        if full_scale_v not in FULL_SCALE_V:
            raise ValueError(f"full scale must be one of {FULL_SCALE_V} V, got {full_scale_v}")
        config = (
            (1 << 15)
            | ((0b100 | channel) << 12)
            | (FULL_SCALE_V.index(full_scale_v) << 9)
            | (1 << 8)
            | (DATA_RATES.index(self.data_rate) << 5)
            | 0b11
        )
        try:
            self.bus.write(self.address, bytes([CONFIG, config >> 8, config & 0xFF]))
            self.sleep(1.0 / self.data_rate + 0.001)
            for _ in range(polls):
                self.bus.write(self.address, bytes([CONFIG]))
                status = self.bus.read(self.address, 2)
                if len(status) == 2 and status[0] & 0x80:
                    break
                self.sleep(1.0 / self.data_rate)
            else:
                raise SensorError("still_processing", f"ADS1115 {self.address:#x} conversion did not finish")
            self.bus.write(self.address, bytes([CONVERSION]))
            raw = self.bus.read(self.address, 2)
        except OSError as exc:
            raise SensorError("bus_error", f"ADS1115 at {self.address:#x}: {exc}") from None
        if len(raw) != 2:
            raise SensorError("bad_reply", f"ADS1115 returned {len(raw)} bytes, expected 2")
        code = int.from_bytes(raw, "big", signed=True)
        if code >= 0x7FFF or code <= -0x8000:
            raise SensorError("out_of_range", f"ADS1115 channel {channel} saturated at ±{full_scale_v} V")
        return code * full_scale_v / 32768.0


class AnalogProbe:
    """One ADS1115 channel and the probe's transfer function from volts to the parameter's unit."""

    def __init__(self, adc: Ads1115, channel: int, probe: str, calibration: dict[str, float]) -> None:
        if probe not in TRANSFERS:
            raise ValueError(f"unknown analog probe {probe!r}; expected one of {sorted(TRANSFERS)}")
        self.adc = adc
        self.channel = channel
        self.probe = probe
        self.calibration = dict(calibration)
        self.divider = float(calibration.get("divider", 1.0))
        self.full_scale_v = float(calibration.get("full_scale_v", 4.096))
        if self.divider < 1.0:
            raise ValueError(f"calibration divider must be >= 1 (probe volts / ADC volts), got {self.divider}")

    def read(self) -> Measurement:
        volts = self.adc.read_volts(self.channel, self.full_scale_v) * self.divider
        return TRANSFERS[self.probe](volts, self.calibration)

    def close(self) -> None:
        """The ADC holds no state between single-shot conversions."""


def turbidity_sen0189(volts: float, _calibration: dict[str, float]) -> Measurement:
    """DFRobot SEN0189: NTU = -1120.4 V² + 5742.3 V - 4352.9, valid 2.5..4.2 V; output falls as turbidity rises."""
    if volts < 2.5:
        raise SensorError("out_of_range", f"turbidity probe at {volts:.3f} V, below 2.5 V (> 3000 NTU or unplugged)")
    if volts > 4.2:
        # Clearer than the curve covers: report the curve's floor and say the value is doubtful.
        return Measurement(0.0, QartodFlag.SUSPECT)
    return Measurement(max(0.0, -1120.4 * volts**2 + 5742.3 * volts - 4352.9))


def tds_sen0244(volts: float, calibration: dict[str, float]) -> Measurement:
    """DFRobot SEN0244: ppm = (133.42 V³ - 255.86 V² + 857.39 V) x 0.5, compensated to 25 °C."""
    if not 0.0 <= volts <= 2.3:
        raise SensorError("out_of_range", f"TDS probe at {volts:.3f} V, outside 0..2.3 V")
    temperature = float(calibration.get("temperature_c", 25.0))
    compensated = volts / (1.0 + 0.02 * (temperature - 25.0))
    return Measurement((133.42 * compensated**3 - 255.86 * compensated**2 + 857.39 * compensated) * 0.5)


def ion_selective(volts: float, calibration: dict[str, float]) -> Measurement:
    """An ISE behind an amplifier: E (mV) = (V - offset_v) / gain x 1000; c = 10^((E - e0_mv) / slope_mv)."""
    offset_v = float(calibration.get("offset_v", 1.5))
    gain = float(calibration.get("gain", 1.0))
    e0_mv = float(calibration.get("e0_mv", 0.0))
    slope_mv = float(calibration.get("slope_mv", 56.0))
    if gain <= 0 or slope_mv == 0:
        raise ValueError(f"ISE calibration needs gain > 0 and slope_mv != 0, got gain={gain}, slope_mv={slope_mv}")
    millivolts = (volts - offset_v) / gain * 1000.0
    value = 10.0 ** ((millivolts - e0_mv) / slope_mv)
    if not math.isfinite(value):
        raise SensorError("out_of_range", f"ISE potential {millivolts:.1f} mV gives no finite concentration")
    return Measurement(value)


TRANSFERS = {"turbidity-sen0189": turbidity_sen0189, "tds-sen0244": tds_sen0244, "ise": ion_selective}
