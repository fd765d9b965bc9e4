"""A fouled dissolved-oxygen probe on the real stack: simulated device → edge agent → Mosquitto → ingest →
InfluxDB → analytics (qc) → alert engine.

Scenario (seed 18, Melaka's Kampung Morten site in its intervention period, where the pilot lifts the river's
oxygen and the clean probe stays above the 3 mg/L class III limit on most nights): two clean days, then biofilm
grows on the DO probe from 04:00 local on the third day to 60 % attenuation two days later, when the probe is
cleaned. Fouled, the probe reads below the limit every evening while the water does not. Expected: one
``device.sensor_fault`` alert for the probe, fired while it is fouled, and no ``limit_exceedance`` or
``pollution`` alert citing a reading of the fouled stretch (without the fouling signature the engine raises a
DO limit alert on those readings: the analytics core labelled them good).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from alerts.service import AlertService
from alerts.settings import AlertSettings
from commands.stack import LocalStack
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import parse_manifest
from tests.alerts.test_real_stack import DEVICE, HOUR, SEED, alerts_in, deliver, scenario_manifest

START = int(dt.datetime(2026, 9, 2, tzinfo=dt.UTC).timestamp() * 1000)
FOULED = (START + 44 * HOUR, START + 92 * HOUR)  # 04:00 local on 4 September to 04:00 on the 6th
END = START + 98 * HOUR


def test_a_fouled_oxygen_probe_raises_a_device_alert_and_no_city_alert(
    stack: LocalStack, influx: InfluxV1, tmp_path: Path
) -> None:
    # magnitude 1.5: x 40 % at the end, 60 % attenuation
    manifest = parse_manifest(scenario_manifest("fouling", FOULED, magnitude=1.5), "fouling scenario")
    deliver(stack, influx, manifest, tmp_path, START, END)
    settings = AlertSettings(
        influx={"url": influx.url, "database": influx.database},
        state_dir=tmp_path / "engine",
        read_window_s=400 * 86_400,  # the scenario lies in the past
    )
    with AlertService(settings, manifest) as engine:
        engine.step()
    got = [a for a in alerts_in(settings.store_path) if a["rule"] != "device.silent"]  # wall-clock silence

    fault = [a for a in got if a["rule"] == "device.sensor_fault" and a["sensor"] == "do"]
    assert len(fault) == 1, got
    assert FOULED[0] <= fault[0]["fired_ms"] <= FOULED[1]

    truth = {
        r.t_ms: r
        for r in SimulatedFleet(manifest, SEED).truth(FOULED[0], FOULED[1], devices=[DEVICE])
        if r.sensor == "do"
    }
    fouled_below = [r for r in truth.values() if r.value is not None and r.value < 3.0 <= r.true_value]
    assert len(fouled_below) > 24, "the fouled probe must read below the limit while the water does not"
    for a in got:
        if a["kind"] in ("pollution", "limit_exceedance"):
            cited = [r for r in json.loads(a["body"])["readings"] if r["sensor"] == "do"]
            assert not [r for r in cited if FOULED[0] <= r["t_ms"] < FOULED[1]], (a["rule"], a["fired_ms"])
