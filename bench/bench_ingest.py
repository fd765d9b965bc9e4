"""Sustained end-to-end ingest rate, beside InfluxDB's raw write rate and a naive pipeline, all in one run.

Three measurements on one local stack (Mosquitto + InfluxDB from the distribution), same readings each time:

1. **InfluxDB raw** (``bench.anchors.influx_raw_write_rate``): the exact lines ingest writes, posted in batches
   of 5,000 to ``/write``. The ceiling for anything that lands in InfluxDB.
2. **Naive pipeline**: a paho subscriber (automatic acknowledgement, no validation, no dedupe, no ledger) that
   turns each message into lines with ``StoredReading.to_line()`` and a writer thread that posts batches of 5,000.
3. **pilotwatch ingest**: :class:`ingest.service.IngestService` with its defaults (validation against the
   manifest, dedupe, dead letters, ledger, manual MQTT acks, end-to-end acks).

For 2 and 3 a publisher in a child process (so it does not share the GIL with the pipeline under test) sends
every message at QoS 1 as fast as the broker takes it; the clock runs from its first publish until InfluxDB has
answered 204 to the write holding the last reading; then InfluxDB is checked to hold every reading
(``count(value)`` and ``sum(value)`` against what was sent). The pipelines count their own acknowledged writes,
so the measurement does not load InfluxDB with polling queries.

    .venv/bin/python bench/bench_ingest.py [--readings 400000] [--per-message 100] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.anchors import Rate, influx_raw_write_rate
from commands.stack import LocalStack
from ingest.service import IngestService
from ingest.settings import IngestSettings
from ingest.validate import Validator
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.schema import StoredReading
from pilotwatch.settings import StackConfig
from pilotwatch.wire import Reading, ReadingsMessage, readings_topic

DEVICES = ("bkk-pratunam-wq1", "bkk-asok-wq1", "mlk-morten-wq1", "dng-harbour-wq1")


def build_messages(manifest: Manifest, readings: int, per_message: int) -> list[tuple[str, bytes]]:
    index = manifest.device_index()
    now = int(time.time() * 1000)
    out: list[tuple[str, bytes]] = []
    seqs = dict.fromkeys(DEVICES, 0)
    total = 0
    k = 0
    while total < readings:
        device = DEVICES[k % len(DEVICES)]
        k += 1
        sensors = index[device].device.sensors
        batch = []
        for _ in range(per_message):
            sensor = sensors[total % len(sensors)]
            low, high = sensor.valid_range
            t = now - 20 * 86_400_000 + (total // len(DEVICES)) * 1000
            value = round(low + (high - low) * ((total * 7919) % 1000) / 1000, 3)
            batch.append(Reading(t, sensor.id, sensor.param.value, value, sensor.unit))
            total += 1
        seq = seqs[device]
        seqs[device] += 1
        message = ReadingsMessage(device, seq, now, tuple(batch))
        out.append((readings_topic(device), message.encode()))
    return out


def expected_totals(messages: list[tuple[str, bytes]]) -> tuple[int, float]:
    count = 0
    total = 0.0
    for _topic, payload in messages:
        for r in json.loads(payload)["readings"]:
            count += 1
            total += r["value"]
    return count, total


def publish_in_child(port: int, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--publish", str(path), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )


def first_publish_time(child: subprocess.Popen[str]) -> float:
    """Wall-clock time of the child's first publish (it loads its messages and connects before that)."""
    assert child.stdout is not None
    return float(child.stdout.readline())


def run_publisher(path: Path, port: int) -> None:
    messages: list[tuple[str, bytes]] = pickle.loads(path.read_bytes())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.monotonic_ns()}")
    window = threading.Semaphore(1000)  # far below paho's 65,535 unacknowledged publishes
    done = threading.Event()
    left = [len(messages)]

    def on_publish(*_a: object) -> None:
        window.release()
        left[0] -= 1
        if left[0] == 0:
            done.set()

    client.on_publish = on_publish
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    print(time.time(), flush=True)
    for topic, payload in messages:
        window.acquire()
        client.publish(topic, payload, qos=1)
    done.wait(600)
    client.disconnect()
    client.loop_stop()


def wait_written(written: Callable[[], int], count: int, timeout_s: float = 600) -> float:
    """Wall-clock time at which the pipeline had ``count`` readings acknowledged by InfluxDB."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if written() >= count:
            return time.time()
        time.sleep(0.002)
    raise AssertionError(f"only {written()} of {count} readings written within {timeout_s} s")


def verify_landed(influx: InfluxV1, count: int, total: float) -> None:
    rows = influx.query("SELECT count(value), sum(value) FROM reading")
    got_count = int(rows[0]["count"]) if rows else 0
    got_sum = float(rows[0]["sum"]) if rows else 0.0
    if got_count != count or abs(got_sum - total) > 1e-6 * max(1.0, abs(total)):
        raise AssertionError(f"InfluxDB holds {got_count} readings (sum {got_sum}), sent {count} (sum {total})")


def naive_pipeline(stack: LocalStack, database: str, path: Path, count: int, total: float) -> Rate:
    """Subscriber + batch writer, nothing else: the floor any real pipeline is compared with."""
    placements = load_manifest().device_index()
    lines: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
    written = [0]
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        p = placements[body["device"]]
        lines.put(
            [
                StoredReading(
                    p.city.id,
                    p.site.id,
                    body["device"],
                    r["sensor"],
                    r["param"],
                    r["value"],
                    r["unit"],
                    r["t"],
                    body["seq"],
                ).to_line()
                for r in body["readings"]
            ]
        )

    def post(http: httpx.Client, batch: list[str]) -> None:
        response = http.post("/write", params={"db": database, "precision": "ms"}, content="\n".join(batch))
        if response.status_code == 204:
            written[0] += len(batch)

    def writer() -> None:
        with httpx.Client(base_url=stack.config.influx_url, timeout=30) as http:
            batch: list[str] = []
            last = time.monotonic()
            while True:
                try:
                    item = lines.get(timeout=0.05)
                except queue.Empty:
                    item = []
                if item is None:
                    break
                batch.extend(item)
                if len(batch) >= 5_000 or (batch and time.monotonic() - last > 0.2):
                    post(http, batch)
                    batch = []
                    last = time.monotonic()
            if batch:
                post(http, batch)

    influx = InfluxV1(stack.config.influx_url, database)
    influx.create_database()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-{time.monotonic_ns()}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", stack.config.mqtt_port)
    sub.subscribe("pilotwatch/v1/devices/+/readings", qos=1)
    sub.loop_start()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    subscribed.wait(10)
    publisher = publish_in_child(stack.config.mqtt_port, path)
    try:
        start = first_publish_time(publisher)
        end = wait_written(lambda: written[0], count)
        verify_landed(influx, count, total)
        return Rate(count, end - start)
    finally:
        publisher.wait(60)
        if publisher.stdout is not None:
            publisher.stdout.close()
        lines.put(None)
        thread.join(30)
        sub.disconnect()
        sub.loop_stop()
        influx.close()


def ingest_pipeline(stack: LocalStack, database: str, path: Path, count: int, total: float, *, state: Path) -> Rate:
    settings = IngestSettings.for_local_stack(stack.config, state, "bench-ingest", database=database, share_group=None)
    influx = InfluxV1(stack.config.influx_url, database)
    influx.create_database()
    service = IngestService(settings)
    service.start()
    service.wait_connected()
    publisher = publish_in_child(stack.config.mqtt_port, path)
    try:
        start = first_publish_time(publisher)
        end = wait_written(lambda: service.stats.readings_written, count)
        verify_landed(influx, count, total)
        rate = Rate(count, end - start)
        if service.status()["rejected_total"]:
            raise AssertionError(f"ingest rejected valid readings: {service.status()}")
        return rate
    finally:
        publisher.wait(60)
        if publisher.stdout is not None:
            publisher.stdout.close()
        service.stop()
        influx.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100,000 readings")
    parser.add_argument("--publish", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        run_publisher(args.publish, args.port)
        return 0
    readings = 100_000 if args.quick else args.readings
    if readings <= 0 or not 0 < args.per_message <= 1000:
        parser.error("--readings must be positive and --per-message in 1..1000")
    manifest = load_manifest()
    messages = build_messages(manifest, readings, args.per_message)
    count, total = expected_totals(messages)
    validator = Validator(manifest)
    now = int(time.time() * 1000)
    lines = [line for topic, payload in messages for line in validator.check_readings(topic, payload, now).lines]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        path = root / "messages.pickle"
        path.write_bytes(pickle.dumps(messages))
        stack = LocalStack(StackConfig.with_free_ports(root / "stack"))
        stack.up()
        try:
            raw = influx_raw_write_rate(stack.config.influx_url, "bench_raw", lines, batch=5_000)
            naive = naive_pipeline(stack, "bench_naive", path, count, total)
            ours = ingest_pipeline(stack, "bench_ingest", path, count, total, state=root / "ingest")
        finally:
            stack.down()
    print(f"{count:,} readings in {len(messages):,} messages of {args.per_message}, {len(DEVICES)} devices")
    print(f"{'InfluxDB raw /write (batches of 5,000)':44} {raw}")
    print(f"{'naive subscriber + batch writer':44} {naive}")
    print(f"{'pilotwatch ingest, end to end, verified':44} {ours}")
    print(f"ingest / naive = {ours.per_s / naive.per_s:.2f}   ingest / InfluxDB raw = {ours.per_s / raw.per_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
