"""End to end on real services: simulated sensors → edge agents → Mosquitto → ingest → InfluxDB.

Every reading the simulated devices sampled must be in InfluxDB with the right value, unit, tags and sample time;
malformed payloads published into the same stream must be dead-lettered with a reason and must not stop the
valid readings around them from landing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from commands.stack import LocalStack
from firmware_sim.agents import run_fleet
from firmware_sim.fleet import SimulatedFleet
from ingest.deadletter import DeadLetterStore
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.wire import readings_topic

DEFAULT = Path(__file__).resolve().parents[1] / "pilotwatch" / "manifests" / "default.yaml"
DEVICES = ("bkk-pratunam-wq1", "smg-natural-ef1", "jkt-kalibaru-bin1")
START_MS = int(dt.datetime(2026, 9, 1, tzinfo=dt.UTC).timestamp() * 1000)
END_MS = START_MS + 12 * 3_600_000
T = START_MS + 60_000

MALFORMED: list[tuple[str, bytes]] = [
    (readings_topic("bkk-pratunam-wq1"), b"{not json"),
    (readings_topic("bkk-pratunam-wq1"), b'{"v":1,"device":"bkk-pratunam-wq1","seq":"x","sent":1,"readings":[]}'),
    (
        readings_topic("smg-natural-ef1"),
        json.dumps(
            {
                "v": 1,
                "device": "smg-natural-ef1",
                "seq": 10**9,
                "sent": T,
                "readings": [{"t": T, "sensor": "ph", "param": "ph", "value": "7.1", "unit": "pH"}],
            }
        ).encode(),
    ),
    (
        readings_topic("no-such-device"),
        json.dumps(
            {
                "v": 1,
                "device": "no-such-device",
                "seq": 1,
                "sent": T,
                "readings": [{"t": T, "sensor": "ph", "param": "ph", "value": 7.1, "unit": "pH"}],
            }
        ).encode(),
    ),
    (
        readings_topic("jkt-kalibaru-bin1"),
        json.dumps(
            {
                "v": 1,
                "device": "jkt-kalibaru-bin1",
                "seq": 10**9 + 1,
                "sent": T,
                "readings": [{"t": T, "sensor": "fill", "param": "fill", "value": 55.0, "unit": "cm"}],
            }
        ).encode(),
    ),
    (readings_topic("jkt-kalibaru-bin1"), b'{"v":1,"device":"jkt-kalibaru-bin1","seq":5,"sent":1,"readings":[NaN]}'),
]


def _publish_malformed(host: str, port: int, started: threading.Event) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-noise")
    client.connect(host, port)
    client.loop_start()
    started.wait(30)
    infos = [client.publish(topic, payload, qos=1) for topic, payload in MALFORMED]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_every_sampled_reading_lands_with_value_unit_tags_and_time(
    stack: LocalStack, influx: InfluxV1, fault_free_manifest: Manifest, tmp_path: Path
) -> None:
    config = stack.config
    ingest = IngestService(
        IngestSettings.for_local_stack(config, tmp_path / "ingest", "e2e-ingest", database=influx.database),
        fault_free_manifest,
    )
    ingest.start()
    sampling = threading.Event()
    noise = threading.Thread(target=_publish_malformed, args=(config.host, config.mqtt_port, sampling))
    try:
        ingest.wait_connected(30)
        noise.start()

        def on_progress(progress: object) -> None:
            sampling.set()  # the malformed payloads go out while the fleet is publishing

        counts = run_fleet(
            fault_free_manifest,
            config.host,
            config.mqtt_port,
            tmp_path / "edge",
            START_MS,
            END_MS,
            7,
            on_progress,
            devices=DEVICES,
        )
        sampling.set()
        noise.join(30)
    finally:
        ingest.stop()

    # What the simulated sensors produced: the ground truth on the sampling grid of [START_MS, END_MS).
    truth = [
        row
        for row in SimulatedFleet(fault_free_manifest, 7).truth(START_MS, END_MS, DEVICES)
        if not math.isnan(row.value)
    ]
    assert truth, "the simulator produced no readings"
    assert sum(c.sampled for c in counts.values()) == len(truth)
    assert all(c.held == 0 and c.dropped == 0 for c in counts.values())

    placement = fault_free_manifest.device_index()
    expected = {
        (r.device, r.sensor, r.t_ms): (
            r.value,
            placement[r.device].device.sensor(r.sensor).unit,  # type: ignore[union-attr]
            placement[r.device].city.id,
            placement[r.device].site.id,
            r.param,
        )
        for r in truth
    }
    rows = influx.query("SELECT value, unit, city, site, param FROM reading GROUP BY device, sensor")
    stored = {
        (row["device"], row["sensor"], row["time"]): (row["value"], row["unit"], row["city"], row["site"], row["param"])
        for row in rows
    }
    assert len(rows) == len(expected)
    assert stored == expected

    with DeadLetterStore(tmp_path / "ingest" / "deadletter.sqlite") as dead:
        reasons = dead.counts_by_reason()
    assert sum(reasons.values()) == len(MALFORMED), reasons
    assert reasons == {
        "bad_json": 1,
        "bad_sequence": 1,
        "bad_type": 1,
        "unknown_device": 1,
        "wrong_unit": 1,
        "non_finite": 1,
    }
