"""Each driver against an emulated device that speaks its protocol, error replies included."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge.drivers import Hardware, build_driver
from edge.drivers.ads1115 import Ads1115, AnalogProbe
from edge.drivers.atlas_ezo import AtlasEzo
from edge.drivers.base import SensorError
from edge.drivers.distance import FillLevel, JsnSr04t, MaxBotix, Vl53l1x
from edge.drivers.linux import LinuxSerialPort
from edge.drivers.modbus import ModbusFloatRegister
from edge.drivers.onewire import Ds18b20
from edge.drivers.pulse import PulseFlow
from firmware_sim.bus import (
    Ads1115Emulator,
    EmulatedI2CBus,
    EmulatedSerial,
    EzoEmulator,
    JsnEmulator,
    MaxBotixEmulator,
    ModbusSlaveEmulator,
    VirtualTime,
    Vl53l1xEmulator,
    write_ds18b20,
)
from pilotwatch.manifest import Manifest, Sensor
from pilotwatch.schema import QartodFlag


def ezo_bus(kind: str, value: float | None) -> tuple[EmulatedI2CBus, VirtualTime, EzoEmulator]:
    time = VirtualTime()
    bus = EmulatedI2CBus()
    emulator = EzoEmulator(kind, lambda: value, time)
    bus.attach({"ph": 0x63, "do": 0x61, "ec": 0x64, "orp": 0x62}[kind], emulator)
    return bus, time, emulator


@pytest.mark.parametrize(
    ("kind", "value", "delay"), [("ph", 7.123, 0.9), ("do", 4.56, 0.6), ("ec", 1413.0, 0.6), ("orp", -212.5, 0.9)]
)
def test_ezo_reads_after_its_processing_time(kind: str, value: float, delay: float) -> None:
    bus, time, _ = ezo_bus(kind, value)
    assert AtlasEzo(bus, kind, None, time.sleep).read().value == pytest.approx(value)
    assert time.slept == pytest.approx(delay)


def test_ezo_error_replies() -> None:
    bus, time, emulator = ezo_bus("ph", None)
    with pytest.raises(SensorError) as no_data:
        AtlasEzo(bus, "ph", None, time.sleep).read()
    assert no_data.value.code == "no_data"
    # Read too early with no retries left: 254, still processing.
    bus, time, _ = ezo_bus("ph", 7.0)
    with pytest.raises(SensorError) as early:
        AtlasEzo(bus, "ph", None, lambda s: time.sleep(s / 10), retries=0).read()
    assert early.value.code == "still_processing"
    # ... with retries, the driver waits and gets it.
    assert AtlasEzo(bus, "ph", None, lambda s: time.sleep(s / 2), retries=3).read().value == 7.0
    with pytest.raises(SensorError) as syntax:
        AtlasEzo(bus, "ph", None, time.sleep).command("Bogus")
    assert syntax.value.code == "syntax_error"
    with pytest.raises(SensorError) as missing:
        AtlasEzo(bus, "ph", 0x70, time.sleep).read()
    assert missing.value.code == "bus_error"
    AtlasEzo(bus, "ph", None, time.sleep).set_temperature(28.5)
    assert emulator.temperature == 25.0  # that was another bus; this one:
    bus2, time2, emulator2 = ezo_bus("ec", 900.0)
    emulator2.extra_outputs = ",450,0.44,1.000"
    ec = AtlasEzo(bus2, "ec", None, time2.sleep)
    ec.set_temperature(28.5)
    assert emulator2.temperature == 28.5
    assert ec.read().value == 900.0  # EC first of EC,TDS,S,SG
    with pytest.raises(ValueError, match="no temperature compensation"):
        AtlasEzo(bus2, "orp", 0x64, time2.sleep).set_temperature(20)


def test_ads1115_channels_gain_and_saturation() -> None:
    time = VirtualTime()
    bus = EmulatedI2CBus()
    bus.attach(0x48, Ads1115Emulator({0: lambda: 1.65, 1: lambda: 5.0, 2: lambda: 0.25}, time))
    adc = Ads1115(bus, 0x48, time.sleep)
    assert adc.read_volts(0) == pytest.approx(1.65, abs=2e-4)
    assert adc.read_volts(2, full_scale_v=0.256) == pytest.approx(0.25, abs=1e-5)
    with pytest.raises(SensorError) as saturated:
        adc.read_volts(1)
    assert saturated.value.code == "out_of_range"
    with pytest.raises(ValueError, match=r"channel must be 0\.\.3"):
        adc.read_volts(4)
    with pytest.raises(ValueError, match=r"0x48\.\.0x4B"):
        Ads1115(bus, 0x50, time.sleep)


def test_turbidity_probe_curve_and_limits() -> None:
    time = VirtualTime()
    volts = {"v": 3.5}
    bus = EmulatedI2CBus()
    bus.attach(0x48, Ads1115Emulator({0: lambda: volts["v"] / 2}, time))
    probe = AnalogProbe(Ads1115(bus, 0x48, time.sleep), 0, "turbidity-sen0189", {"divider": 2.0})
    expected = -1120.4 * 3.5**2 + 5742.3 * 3.5 - 4352.9
    assert probe.read().value == pytest.approx(expected, abs=1.0)
    volts["v"] = 4.4
    assert probe.read().flag == QartodFlag.SUSPECT
    volts["v"] = 1.0
    with pytest.raises(SensorError) as low:
        probe.read()
    assert low.value.code == "out_of_range"


def test_jsn_sr04t_frames_blind_zone_and_errors() -> None:
    distance = {"mm": 800}
    emulator = JsnEmulator(lambda: distance["mm"])
    fill = FillLevel(JsnSr04t(EmulatedSerial(emulator)), {"empty_cm": 120, "full_cm": 25})
    assert fill.read().value == pytest.approx((120 - 80) / 95 * 100, abs=0.1)
    distance["mm"] = 120  # inside the 25 cm blind zone: reported at the limit, flagged
    blind = fill.read()
    assert (blind.value, blind.flag) == (100.0, QartodFlag.SUSPECT)
    distance["mm"] = None  # type: ignore[assignment]
    with pytest.raises(SensorError) as no_echo:
        fill.read()
    assert no_echo.value.code == "no_echo"
    distance["mm"] = 800
    emulator.corrupt = True
    with pytest.raises(SensorError) as bad:
        fill.read()
    assert bad.value.code == "bad_reply"
    emulator.corrupt, emulator.silent = False, True
    with pytest.raises(SensorError) as silent:
        fill.read()
    assert silent.value.code == "no_data"


def test_maxbotix_stream_minimum_and_no_target() -> None:
    distance = {"mm": 900}
    emulator = MaxBotixEmulator(lambda: distance["mm"])
    sensor = MaxBotix(EmulatedSerial(emulator))
    assert sensor.distance_cm() == 90.0
    distance["mm"] = 200
    assert sensor.distance_cm() == 50.0  # nearer than the minimum reads the minimum
    distance["mm"] = None  # type: ignore[assignment]
    with pytest.raises(SensorError) as none:
        sensor.distance_cm()
    assert none.value.code == "out_of_range"
    emulator.garbage = True
    with pytest.raises(SensorError) as garbage:
        sensor.distance_cm()
    assert garbage.value.code == "no_data"


def test_vl53l1x_registers_and_range_status() -> None:
    time = VirtualTime()
    result = {"value": (1234, 9)}
    bus = EmulatedI2CBus()
    bus.attach(0x29, Vl53l1xEmulator(lambda: result["value"]))
    sensor = Vl53l1x(bus, 0x29, time.sleep)
    assert sensor.distance_cm() == 123.4
    result["value"] = (0, 4)  # raw 4: signal fail
    with pytest.raises(SensorError) as weak:
        sensor.distance_cm()
    assert weak.value.code == "signal_fail"
    result["value"] = (4000, 5)  # raw 5: out of bounds
    with pytest.raises(SensorError) as far:
        sensor.distance_cm()
    assert far.value.code == "out_of_range"
    sensor.close()
    other = EmulatedI2CBus()
    other.attach(0x29, Vl53l1xEmulator(lambda: (1, 9), model_id=0x1234))
    with pytest.raises(SensorError) as wrong:
        Vl53l1x(other, 0x29, time.sleep).distance_cm()
    assert wrong.value.code == "wrong_device"


def test_modbus_uvvis_float_registers_and_exceptions() -> None:
    slave = ModbusSlaveEmulator(1, {0: lambda: 123.5, 2: lambda: 640.0})
    port = EmulatedSerial(slave)
    assert ModbusFloatRegister(port, 1, 0).read().value == 123.5
    assert ModbusFloatRegister(port, 1, 2).read().value == 640.0
    with pytest.raises(SensorError) as unknown:
        ModbusFloatRegister(port, 1, 8).read()
    assert unknown.value.code == "illegal_address"
    slave.busy = True
    with pytest.raises(SensorError) as busy:
        ModbusFloatRegister(port, 1, 0).read()
    assert busy.value.code == "busy"
    slave.busy, slave.corrupt = False, True
    with pytest.raises(SensorError) as crc:
        ModbusFloatRegister(port, 1, 0).read()
    assert crc.value.code == "crc_error"
    with pytest.raises(SensorError) as other:
        ModbusFloatRegister(port, 2, 0, timeout_s=0.01).read()
    assert other.value.code == "timeout"


def test_ds18b20_sysfs(tmp_path: Path) -> None:
    write_ds18b20(tmp_path, "28-00000a1b2c3d", 27.125)
    assert Ds18b20(tmp_path, None).read().value == 27.125
    write_ds18b20(tmp_path, "28-00000a1b2c3d", 27.0, crc_ok=False)
    with pytest.raises(SensorError) as crc:
        Ds18b20(tmp_path, "28-00000a1b2c3d").read()
    assert crc.value.code == "crc_error"
    write_ds18b20(tmp_path, "28-00000a1b2c3d", None)
    with pytest.raises(SensorError) as reset:
        Ds18b20(tmp_path, "28-00000a1b2c3d").read()
    assert reset.value.code == "power_on_reset"
    with pytest.raises(SensorError) as missing:
        Ds18b20(tmp_path / "none", None).read()
    assert missing.value.code == "not_found"


def test_pulse_flow() -> None:
    time = VirtualTime()
    count = {"n": 0}

    class Counter:
        def count(self) -> int:
            return count["n"]

    flow = PulseFlow(Counter(), time.monotonic, pulses_per_litre=450.0)
    with pytest.raises(SensorError):
        flow.read()
    time.sleep(3600)
    count["n"] = 450 * 1000  # 1 m³ in an hour
    assert flow.read().value == pytest.approx(1.0)


def test_jsn_through_a_real_serial_port(tmp_path: Path) -> None:
    """The Linux serial port (termios, select) against an emulated JSN-SR04T on the other end of a pty."""
    master, slave = os.openpty()
    emulator = JsnEmulator(lambda: 1500)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data = os.read(master, 1)
            except OSError:
                return
            emulator.on_write(data)
            os.write(master, emulator.on_read(4, 0.1))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = LinuxSerialPort(os.ttyname(slave), 9600)
    try:
        assert JsnSr04t(port).distance_cm() == 150.0
    finally:
        stop.set()
        port.close()
        os.close(slave)
        os.close(master)
        thread.join(2)


def test_every_manifest_driver_builds_on_emulated_hardware(manifest: Manifest, tmp_path: Path) -> None:
    time = VirtualTime()
    hardware = Hardware(
        i2c_factory=EmulatedI2CBus,
        serial_factory=lambda path, baud: EmulatedSerial(JsnEmulator(lambda: 500)),
        sleep=time.sleep,
        monotonic=time.monotonic,
        w1_dir=tmp_path,
        counters={"gpio17": type("C", (), {"count": lambda self: 0})()},
    )
    sensors = {s.driver: s for _, _, d in manifest.iter_devices() for s in d.sensors}
    for sensor in sensors.values():
        assert hasattr(build_driver(sensor, hardware), "read")
    bad = Sensor(id="x", param="ph", unit="pH", driver="nope", valid_range=(0, 14))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown driver 'nope'"):
        build_driver(bad, hardware)
    no_counter = sensors["pulse-flow"].model_copy(update={"address": "gpio4"})
    with pytest.raises(ValueError, match="no pulse counter named 'gpio4'"):
        build_driver(no_counter, hardware)


def test_sampler_stamps_flags_and_survives_a_vanished_bus(manifest: Manifest) -> None:
    from edge.clock import SimulatedClock  # noqa: PLC0415
    from edge.drivers.base import Measurement  # noqa: PLC0415
    from edge.sampler import Sampler  # noqa: PLC0415

    device = manifest.device_index()["cto-anlac-bin2"].device  # fill (0..100) and temp, every 900 s

    class Gone:
        def read(self) -> Measurement:
            raise FileNotFoundError(2, "No such file or directory", "/dev/i2c-1")

        def close(self) -> None: ...

    class Hot:
        def read(self) -> Measurement:
            return Measurement(95.5)

        def close(self) -> None: ...

    clock = SimulatedClock(1_790_000_100_000)
    sampler = Sampler(device, {"fill": Gone(), "temp": Hot()}, clock)
    clock.advance_to(sampler.next_due_ms)
    batch = sampler.sample_due()
    assert [(r.sensor, r.t_ms, r.value, r.flag) for r in batch.readings] == [("temp", clock.now_ms(), 95.5, 4)]
    assert sampler.health() == {"fill": "bus_error", "temp": "ok"}
    assert batch.slots == {"fill": clock.now_ms(), "temp": clock.now_ms()}
    assert sampler.next_due_ms == clock.now_ms() + 900_000
