"""End-to-end throughput of the whole simulated fleet: edge agents → Mosquitto → ingest → InfluxDB.

Runs every device of the default manifest on an accelerated clock (as ``pilotwatch demo`` does), waits until
every reading is acknowledged end to end, verifies that InfluxDB holds exactly what was sampled, and prints the
rate beside two anchors measured in the same run on the same machine: InfluxDB's raw write rate for the very same
points (read back and rewritten into a fresh database in 5,000-line batches) and Mosquitto's QoS 1 message rate.

    .venv/bin/python bench/bench_pipeline.py [--days 7] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.anchors import broker_qos1_rate, influx_raw_write_rate
from commands.stack import LocalStack
from firmware_sim.agents import run_fleet
from ingest.deadletter import DeadLetterStore
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import load_manifest
from pilotwatch.schema import line
from pilotwatch.settings import StackConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--quick", action="store_true", help="2 simulated days")
    args = parser.parse_args(argv)
    days = 2.0 if args.quick else args.days
    manifest = load_manifest()
    start_ms = int(dt.datetime(2026, 8, 29, tzinfo=dt.UTC).timestamp() * 1000)
    end_ms = start_ms + int(days * 86_400_000)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack = LocalStack(StackConfig.with_free_ports(root / "stack"))
        stack.up()
        try:
            config = stack.config
            ingest = IngestService(
                IngestSettings.for_local_stack(config, root / "ingest", "bench-ingest"),
                manifest,
            )
            ingest.start()
            try:
                ingest.wait_connected(30)
                began = time.perf_counter()
                counts = run_fleet(manifest, config.host, config.mqtt_port, root / "edge", start_ms, end_ms, 1, None)
                pipeline_s = time.perf_counter() - began
            finally:
                ingest.stop()
            sampled = sum(c.sampled for c in counts.values())
            with InfluxV1(config.influx_url, config.database) as influx:
                rows = influx.query("SELECT * FROM reading GROUP BY *")
            with DeadLetterStore(ingest.deadletter_path) as dead:
                refused = dead.counts_by_reason()
            # Injected sensor faults produce some readings ingest must refuse (out of range, clock jumps); those are
            # dead-lettered with a reason. Every sampled reading is either stored or dead-lettered, never lost.
            if len(rows) + sum(refused.values()) != sampled:
                print(f"VERIFY FAILED: sampled {sampled:,}, stored {len(rows):,}, dead-lettered {refused}")
                return 1
            lines = [
                line(
                    "reading",
                    {k: row[k] for k in ("city", "site", "device", "sensor", "param")},
                    {"value": float(row["value"]), "unit": row["unit"], "seq": int(row["seq"])},
                    int(row["time"]),
                )
                for row in rows
            ]
            raw = influx_raw_write_rate(config.influx_url, "anchor_raw", lines)
            broker = broker_qos1_rate(config.host, config.mqtt_port, messages=20_000, payload_bytes=1024)
        finally:
            stack.down()

    rate = sampled / pipeline_s
    devices = len(counts)
    print(
        f"fleet: {devices} devices, {days:g} simulated days, {sampled:,} readings sampled: {len(rows):,} verified in "
        f"InfluxDB, {sum(refused.values())} dead-lettered by reason {refused}"
    )
    print(f"{'measure':<44}{'rate':>16}")
    print(f"{'pipeline end to end (readings/s)':<44}{rate:>16,.0f}")
    print(f"{'InfluxDB raw write, same points (points/s)':<44}{raw.per_s:>16,.0f}")
    print(f"{'Mosquitto QoS 1, 1 KiB (messages/s)':<44}{broker.per_s:>16,.0f}")
    print(f"pipeline / InfluxDB raw write: {rate / raw.per_s:.3f}")
    print("note: the fleet rate includes simulating and sampling every sensor on the edge side, in this same process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
