"""Backlog drain: 24 h of a 20-sensor device at 1 Hz (1,728,000 readings) replayed after an outage, beside the
broker's own QoS 1 rate for messages of the same size, measured in the same run.

The replaying device runs in a child process and behaves like the edge: messages of 1,000 readings (the wire
limit), at most ``--window`` messages not yet acknowledged end to end, each deleted from its backlog only when
ingest's :class:`~pilotwatch.wire.AckMessage` covers it, unacknowledged ones re-sent after 30 s. The clock runs
from the first publish until the last end-to-end acknowledgement; then InfluxDB is checked to hold every reading
(count and sum). The anchor (``bench.anchors.broker_qos1_rate``) is Mosquitto alone, publisher → broker →
subscriber, with payloads of the replay's mean size.

    .venv/bin/python bench/bench_delivery.py [--hours 24] [--sensors 20] [--window 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.anchors import Rate, broker_qos1_rate
from commands.stack import LocalStack
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, parse_manifest
from pilotwatch.settings import StackConfig
from pilotwatch.wire import Reading, ReadingsMessage, ack_topic, decode_ack, readings_topic

DEVICE = "bkk-pratunam-wq1"
PARAMS = [
    ("temperature", "degC", [15, 40]),
    ("ph", "pH", [0.001, 14]),
    ("do", "mg/L", [0, 20]),
    ("conductivity", "uS/cm", [0.07, 60000]),
    ("turbidity", "NTU", [0, 3000]),
]


def bench_manifest(sensors: int) -> tuple[Manifest, Path]:
    """The default manifest with the bench device carrying ``sensors`` sensors sampled every second."""
    data: Any = yaml.safe_load(resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text())
    for city in data["cities"]:
        for site in city["sites"]:
            for device in site["devices"]:
                if device["id"] == DEVICE:
                    device["sensors"] = [
                        {
                            "id": f"s{i:02d}",
                            "param": PARAMS[i % 5][0],
                            "unit": PARAMS[i % 5][1],
                            "driver": "sim",
                            "interval_s": 1,
                            "valid_range": PARAMS[i % 5][2],
                        }
                        for i in range(sensors)
                    ]
    path = Path(tempfile.mkdtemp(prefix="bench-delivery-")) / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_manifest(data, str(path)), path


def backlog(manifest: Manifest, hours: float) -> tuple[list[bytes], int, float]:
    sensors = manifest.device_index()[DEVICE].device.sensors
    now = int(time.time() * 1000)
    start = now - now % 1000 - int(hours * 3_600_000) - 3_600_000
    payloads: list[bytes] = []
    batch: list[Reading] = []
    total = 0.0
    count = 0
    for second in range(int(hours * 3600)):
        t = start + second * 1000
        for i, sensor in enumerate(sensors):
            low, high = sensor.valid_range
            value = round(low + (high - low) * (((second * 31 + i) * 7919) % 1000) / 1000, 3)
            batch.append(Reading(t, sensor.id, sensor.param.value, value, sensor.unit))
            total += value
            count += 1
            if len(batch) == 1000:
                payloads.append(ReadingsMessage(DEVICE, len(payloads), now, tuple(batch)).encode())
                batch = []
    if batch:
        payloads.append(ReadingsMessage(DEVICE, len(payloads), now, tuple(batch)).encode())
    return payloads, count, total


def replay_child(path: Path, port: int, window: int) -> None:
    """The device side: publish with at most ``window`` messages unacknowledged end to end; print the timing."""
    payloads: list[bytes] = pickle.loads(path.read_bytes())
    unacked: dict[int, float] = {}
    lock = threading.Condition()
    subscribed = threading.Event()
    resent = 0

    def on_ack(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        ack = decode_ack(msg.topic, bytes(msg.payload))
        with lock:
            for seq in [s for s in unacked if s <= ack.stored_through or any(a <= s <= b for a, b in ack.ranges)]:
                del unacked[seq]
            lock.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-device-{time.monotonic_ns()}")
    client.on_message = on_ack
    client.on_subscribe = lambda *_a: subscribed.set()
    client.max_inflight_messages_set(window)
    client.connect("127.0.0.1", port)
    client.subscribe(ack_topic(DEVICE), qos=1)
    client.loop_start()
    subscribed.wait(10)
    started = time.time()
    for seq, payload in enumerate(payloads):
        with lock:
            while len(unacked) >= window:
                lock.wait(1.0)
                now = time.monotonic()
                for old in [s for s, at in unacked.items() if now - at > 30]:
                    client.publish(readings_topic(DEVICE), payloads[old], qos=1)
                    unacked[old] = now
                    resent += 1
            unacked[seq] = time.monotonic()
        client.publish(readings_topic(DEVICE), payload, qos=1)
    with lock:
        while unacked:
            lock.wait(1.0)
    finished = time.time()
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"started": started, "finished": finished, "resent": resent}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--window", type=int, default=200, help="messages unacknowledged end to end, at most")
    parser.add_argument("--quick", action="store_true", help="2 hours instead of 24")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        replay_child(args.replay, args.port, args.window)
        return 0
    hours = 2.0 if args.quick else args.hours
    if hours <= 0 or args.sensors <= 0 or not 0 < args.window <= 5_000:
        parser.error("--hours and --sensors must be positive, --window in 1..5000")
    manifest, manifest_path = bench_manifest(args.sensors)
    payloads, count, total = backlog(manifest, hours)
    mean_bytes = sum(len(p) for p in payloads) // len(payloads)
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        root = Path(tmp)
        path = root / "backlog.pickle"
        path.write_bytes(pickle.dumps(payloads))
        stack = LocalStack(StackConfig.with_free_ports(root / "stack"))
        stack.up()
        try:
            anchor = broker_qos1_rate(
                stack.config.host,
                stack.config.mqtt_port,
                messages=min(3_000, 2 * len(payloads)),
                payload_bytes=mean_bytes,
            )
            settings = IngestSettings.for_local_stack(
                stack.config,
                root / "ingest",
                "bench-ingest",
                database="bench_delivery",
                share_group=None,
                manifest=manifest_path,
            )
            influx = InfluxV1(stack.config.influx_url, "bench_delivery")
            influx.create_database()
            service = IngestService(settings, manifest)
            service.start()
            service.wait_connected()
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--replay",
                    str(path),
                    "--port",
                    str(stack.config.mqtt_port),
                    "--window",
                    str(args.window),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=3_600,
            )
            timing = json.loads(child.stdout.strip().splitlines()[-1])
            service.stop()
            rows = influx.query("SELECT count(value), sum(value) FROM reading")
            influx.close()
        finally:
            stack.down()
    stored, stored_sum = int(rows[0]["count"]), float(rows[0]["sum"])
    if stored != count or abs(stored_sum - total) > 1e-6 * abs(total):
        raise SystemExit(f"InfluxDB holds {stored} readings (sum {stored_sum}), expected {count} (sum {total})")
    drain = Rate(len(payloads), timing["finished"] - timing["started"])
    print(
        f"backlog: {hours:g} h x {args.sensors} sensors x 1 Hz = {count:,} readings in {len(payloads):,} messages "
        f"of 1,000 readings (mean {mean_bytes:,} bytes); end-to-end window {args.window} messages"
    )
    print(
        f"{'drain, first publish to last end-to-end ack':48} {drain.seconds:.1f} s   "
        f"{count / drain.seconds:,.0f} readings/s   {drain.per_s:,.1f} messages/s   re-sent {timing['resent']}"
    )
    print(f"{'Mosquitto QoS 1 alone, same payload size':48} {anchor.per_s:,.1f} messages/s ({anchor})")
    print(
        f"drain messages/s / broker QoS 1 messages/s = {drain.per_s / anchor.per_s:.2f}; every reading verified "
        "in InfluxDB (count and sum)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
