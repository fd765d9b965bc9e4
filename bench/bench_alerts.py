"""Alert latency: from a device's publish to the alert being stored, under a background ingest load, beside the
same run's publish-to-stored latency of the reading itself (the floor).

One local stack (Mosquitto + InfluxDB) carries, all at once:

- **background load**: a child process publishes wire messages of 100 readings from four water devices at a
  paced ``--rate`` (default 20,000 readings/s) for the whole run; ingest validates and writes them. Their sample
  times lie 20 days back, so they load the broker, ingest and InfluxDB, not the analytics or alert windows.
- **the live chain**: :class:`ingest.service.IngestService`, the analytics service (``AnalyticsService.step``
  every ``--interval`` s) and the alert engine (``AlertService.step`` every ``--interval`` s), each in a thread of
  this process, as ``pilotwatch ingest run`` / ``analytics run`` / ``alerts run`` would run them.
- **probes**: a bin's fill sensor (``jkt-kalibaru-bin1``) publishes, one message per probe stamped now, a
  reading above the bin-full threshold (the bench's rules fire on the first such reading: ``bin_for_s = 0``),
  then a low one that clears it. Per probe the bench polls, every 5 ms, InfluxDB for the reading (the floor:
  publish → stored) and the alert store for the ``bin.full`` alert of that reading (publish → QC'd by analytics
  → decided → stored).

    .venv/bin/python bench/bench_alerts.py [--probes 30] [--rate 20000] [--interval 0.25] [--quick]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.rules import RuleConfig
from alerts.service import AlertService
from alerts.settings import AlertSettings
from analytics.service import AnalyticsService
from analytics.settings import AnalyticsSettings
from commands.stack import LocalStack
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import load_manifest
from pilotwatch.settings import InfluxConnection, StackConfig
from pilotwatch.wire import Reading, ReadingsMessage, readings_topic

BACKGROUND = ("bkk-pratunam-wq1", "bkk-asok-wq1", "mlk-morten-wq1", "dng-harbour-wq1")
PROBE_DEVICE, PROBE_SENSOR = "jkt-kalibaru-bin1", "fill"
PER_MESSAGE = 100
DAY_MS = 86_400_000


def run_background(port: int, rate: float, stop_file: Path) -> None:
    """Child process: paced messages of 100 readings until ``stop_file`` exists; prints readings sent."""
    index = load_manifest().device_index()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bg-{time.monotonic_ns()}")
    window = threading.Semaphore(500)
    client.on_publish = lambda *_a: window.release()
    client.max_inflight_messages_set(500)
    client.connect("127.0.0.1", port)
    client.loop_start()
    base = int(time.time() * 1000) - 20 * DAY_MS
    seqs = dict.fromkeys(BACKGROUND, 0)
    sent = 0
    started = time.monotonic()
    k = 0
    while not stop_file.exists():
        due = int((time.monotonic() - started) * rate)
        while sent + PER_MESSAGE <= due:
            device = BACKGROUND[k % len(BACKGROUND)]
            k += 1
            sensors = index[device].device.sensors
            batch = []
            for j in range(PER_MESSAGE):
                sensor = sensors[j % len(sensors)]
                low, high = sensor.valid_range
                t = base + (seqs[device] * PER_MESSAGE + j) // len(sensors) * 1000
                batch.append(Reading(t, sensor.id, sensor.param.value, round((low + high) / 2, 3), sensor.unit))
            message = ReadingsMessage(device, seqs[device], int(time.time() * 1000), tuple(batch))
            seqs[device] += 1
            window.acquire()
            client.publish(readings_topic(device), message.encode(), qos=1)
            sent += PER_MESSAGE
        time.sleep(0.002)
    client.loop_stop()
    client.disconnect()
    print(sent / (time.monotonic() - started), flush=True)


def loop(stop: threading.Event, interval: float, step: Callable[[], object]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        step()
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def main(argv: list[str] | None = None) -> int:  # one scenario, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=20_000.0, help="background readings per second")
    parser.add_argument("--interval", type=float, default=0.25, help="analytics and alert engine pass interval, s")
    parser.add_argument("--quick", action="store_true", help="10 probes")
    parser.add_argument("--background", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.background:
        run_background(args.port, args.rate, args.background)
        return 0
    probes = 10 if args.quick else args.probes
    manifest = load_manifest()
    place = manifest.device_index()[PROBE_DEVICE]
    sensor = place.device.sensor(PROBE_SENSOR)
    assert sensor is not None
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        root = Path(tmp)
        stack = LocalStack(StackConfig.with_free_ports(root / "stack"))
        stack.up()
        stop = threading.Event()
        threads: list[threading.Thread] = []
        stop_file = root / "stop-background"
        background: subprocess.Popen[str] | None = None
        ingest: IngestService | None = None
        status: dict[str, object] = {}
        bg_rate = 0.0
        try:
            cfg = stack.config
            influx = InfluxV1(cfg.influx_url, cfg.database)
            influx.create_database()
            ingest = IngestService(
                IngestSettings.for_local_stack(cfg, root / "ingest", "bench-alerts-ingest"), manifest
            )
            ingest.start()
            ingest.wait_connected(30)
            analytics = AnalyticsService(
                AnalyticsSettings(
                    influx=InfluxConnection(url=cfg.influx_url, database=cfg.database),
                    state_dir=root / "analytics",
                    interval_s=args.interval,
                    start_lookback_s=2 * 86_400,
                ),
                manifest,
            )
            engine = AlertService(
                AlertSettings(
                    influx=InfluxConnection(url=cfg.influx_url, database=cfg.database),
                    state_dir=root / "alerts",
                    interval_s=args.interval,
                    read_window_s=2 * 86_400,
                    rules=RuleConfig(bin_for_s=0, rolling_window_days=1),
                ),
                manifest,
            )
            analytics.open()
            engine.open()
            threads = [
                threading.Thread(target=loop, args=(stop, args.interval, analytics.step), daemon=True),
                threading.Thread(target=loop, args=(stop, args.interval, engine.step), daemon=True),
            ]
            for thread in threads:
                thread.start()
            background = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--background",
                    str(stop_file),
                    "--port",
                    str(cfg.mqtt_port),
                    "--rate",
                    str(args.rate),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alerts-probe")
            device.connect(cfg.host, cfg.mqtt_port)
            device.loop_start()
            store_path = root / "alerts" / "alerts.sqlite"
            seq = 0
            floor: list[float] = []
            alert: list[float] = []
            time.sleep(3)  # the background load is up before the first probe

            def publish(t_ms: int, value: float) -> float:
                nonlocal seq
                message = ReadingsMessage(
                    PROBE_DEVICE, seq, int(time.time() * 1000), (Reading(t_ms, sensor.id, "fill", value, "%"),)
                )
                seq += 1
                sent = time.perf_counter()
                device.publish(readings_topic(PROBE_DEVICE), message.encode(), qos=1)
                return sent

            where = f"device = '{PROBE_DEVICE}' AND sensor = '{PROBE_SENSOR}'"
            for k in range(probes):
                # Sample time = now: inside the analytics late window (older readings get no qc point, and the
                # engine decides only on QC'd readings).
                t_full = int(time.time() * 1000)
                sent = publish(t_full, 96.0)
                stored_at = alerted_at = None
                deadline = sent + 60
                while (stored_at is None or alerted_at is None) and time.perf_counter() < deadline:
                    if stored_at is None and influx.query(
                        f"SELECT value FROM reading WHERE {where} AND time = {t_full}ms"
                    ):
                        stored_at = time.perf_counter()
                    if alerted_at is None and store_path.exists():
                        with sqlite3.connect(store_path, timeout=5) as conn:
                            hit = conn.execute(
                                "SELECT 1 FROM alerts WHERE rule = 'bin.full' AND fired_ms = ?", (t_full,)
                            ).fetchone()
                        if hit:
                            alerted_at = time.perf_counter()
                    time.sleep(0.005)
                if stored_at is None or alerted_at is None:
                    raise AssertionError(f"probe {k}: stored {stored_at is not None}, alerted {alerted_at is not None}")
                floor.append(stored_at - sent)
                alert.append(alerted_at - sent)
                publish(t_full + 1, 20.0)  # a collection: clears the alert before the next probe
                time.sleep(2 * args.interval + 0.2)
            device.loop_stop()
            device.disconnect()
        finally:
            stop_file.touch()
            bg_rate = float(background.communicate(timeout=60)[0] or 0) if background is not None else 0.0
            stop.set()
            for thread in threads:
                thread.join(30)
            if ingest is not None:
                status = ingest.status()
                ingest.stop()
            stack.down()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:7.0f} ms"

    written = status.get("readings_written", "?")
    print(f"{probes} probes; background load {bg_rate:,.0f} readings/s through ingest (written: {written})")
    print(f"analytics and alert engine passes every {args.interval:g} s")
    print(f"{'publish → reading stored (floor)':40} p50 {ms(floor, 0.5)}   p99 {ms(floor, 0.99)}")
    print(f"{'publish → alert stored':40} p50 {ms(alert, 0.5)}   p99 {ms(alert, 0.99)}")
    gap = (percentile(alert, 0.99) - percentile(floor, 0.99)) * 1000
    print(f"alert p99 - floor p99 = {gap:.0f} ms (goal: within 1,000 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
