"""The edge agent's own cost and its backlog replay rate, beside the broker's QoS 1 rate measured in the same run.

1. **Agent at 20 sensors x 1 Hz**: one device with 20 simulated sensors sampled every second on the real clock,
   publishing to a local Mosquitto with the real ingest acknowledging, for a fixed wall time. The agent runs in a
   child process (the same classes ``pilotwatch edge run --simulate`` uses) that reports its own CPU seconds
   (user + system, from ``getrusage``) over the steady state and its peak RSS.
2. **Backlog replay**: the same device with a backlog of simulated readings in its SQLite buffer (an outage), then
   connected: readings/s from connect until every reading is acknowledged end to end by ingest.
3. **Anchor**: Mosquitto's own QoS 1 rate (``bench.anchors.broker_qos1_rate``), publisher → broker → subscriber,
   with payloads of the replay's mean message size, measured in the same run.

    .venv/bin/python bench/bench_edge.py [--seconds 60] [--backlog 100000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.anchors import broker_qos1_rate
from commands.stack import LocalStack
from edge.agent import EdgeAgent
from edge.buffer import SqliteBuffer
from edge.clock import SystemClock
from edge.sampler import Sampler
from edge.settings import EdgeSettings
from firmware_sim.agents import drive, simulated_agent
from firmware_sim.fleet import SimulatedFleet
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.settings import StackConfig

DEVICE = "bkk-pratunam-wq1"
PARAMS = [
    ("temperature", "degC", "ds18b20", [15, 40]),
    ("ph", "pH", "atlas-ezo-ph", [0.001, 14]),
    ("do", "mg/L", "atlas-ezo-do", [0, 20]),
    ("conductivity", "uS/cm", "atlas-ezo-ec", [0.07, 60000]),
    ("turbidity", "NTU", "dfrobot-sen0189", [0, 3000]),
]


def bench_manifest(path: Path) -> Manifest:
    """The default manifest with one device of 20 sensors at 1 s (four of each water parameter)."""
    data: Any = yaml.safe_load(resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text())
    for city in data["cities"]:
        for site in city["sites"]:
            for device in site["devices"]:
                if device["id"] == DEVICE:
                    device["sensors"] = [
                        {"id": f"s{i:02d}", "param": p, "unit": u, "driver": d, "interval_s": 1, "valid_range": r}
                        for i, (p, u, d, r) in enumerate(PARAMS * 4)
                    ]
    path.write_text(yaml.safe_dump(data))
    return load_manifest(path)


def child(args: argparse.Namespace) -> int:
    """The agent alone in this process, real clock, for ``seconds``; prints its CPU and peak RSS as JSON."""
    manifest = load_manifest(args.manifest)
    settings = EdgeSettings(device=DEVICE, mqtt_port=args.port, buffer_dir=Path(args.buffers), linger_s=1.0)
    device = SimulatedFleet(manifest, 1).device(DEVICE)
    clock = SystemClock()
    buffer = SqliteBuffer(settings.buffer_path())
    sampler = Sampler(device.device, device.drivers(clock), clock, stamp_clock=device.device_clock(clock))
    agent = EdgeAgent(settings, sampler, buffer, battery_pct=device.battery_pct, signal_dbm=device.signal_dbm)
    agent.start()
    stop = threading.Event()
    timer = threading.Timer(args.seconds, stop.set)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    timer.start()
    agent.run(stop)
    after = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - started
    drive([agent], clock.now_ms(), drain_timeout_s=30)  # flush, so the parent can check delivery
    stats = buffer.stats()
    agent.stop()
    sampler.close()
    buffer.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": after.ru_maxrss / 1024,
        "added": stats.added,
        "acked": stats.acked,
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of the 20 x 1 Hz run")
    parser.add_argument("--backlog", type=int, default=100_000, help="readings in the replayed backlog")
    parser.add_argument("--quick", action="store_true", help="20 s and a 20,000-reading backlog")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--buffers", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    seconds, backlog = (20.0, 20_000) if args.quick else (args.seconds, args.backlog)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = bench_manifest(root / "manifest.yaml")
        stack = LocalStack(StackConfig.with_free_ports(root / "stack"))
        stack.up()
        ingest = IngestService(
            IngestSettings.for_local_stack(stack.config, root / "ingest", "bench-edge-ingest", max_future_s=3600),
            manifest,
        )
        ingest.start()
        ingest.wait_connected()
        try:
            # 1. the agent's own cost, in a process of its own
            command = [
                sys.executable, __file__, "--child", "--manifest", str(root / "manifest.yaml"),
                "--port", str(stack.config.mqtt_port), "--buffers", str(root / "live"), "--seconds", str(seconds),
            ]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 120)
            live = json.loads(out.stdout.strip().splitlines()[-1])

            # 2. backlog replay: an outage's worth of readings in the buffer, then connect
            settings = EdgeSettings(device=DEVICE, mqtt_port=stack.config.mqtt_port, buffer_dir=root / "replay")
            now = SystemClock().now_ms()
            start = now - now % 1000 - (backlog // 20 + 10) * 1000
            agent = simulated_agent(settings, SimulatedFleet(manifest, 2).device(DEVICE), start)
            agent.sample(until_ms=start + (backlog // 20) * 1000 - 1)
            held = agent.buffer.stats().depth
            t0 = time.perf_counter()
            agent.start()
            done = drive([agent], agent.clock.now_ms(), drain_timeout_s=600)
            replay_s = time.perf_counter() - t0
            messages = agent.counters.published_messages
            mean_bytes = _mean_payload(agent)
            agent.stop()
            agent.sampler.close()
            agent.buffer.close()
            if not done:
                print(f"replay did not finish: {agent.buffer.stats()}", file=sys.stderr)
                return 1

            # 3. the anchor, same broker, same run
            anchor = broker_qos1_rate(
                stack.config.host, stack.config.mqtt_port, messages=20_000, payload_bytes=mean_bytes
            )
        finally:
            ingest.stop()
            stack.down()

    print(f"edge agent, 20 sensors x 1 Hz for {live['wall_s']:.0f} s (real clock, ingest acknowledging):")
    share = 100 * live["cpu_s"] / live["wall_s"]
    print(f"  CPU {live['cpu_s']:.2f} s = {share:.1f} % of one core; peak RSS {live['peak_rss_mb']:.0f} MB")
    print(f"  sampled {live['added']:,}, acknowledged end to end {live['acked']:,}")
    print(f"backlog replay: {held:,} readings in {messages:,} messages of ~{mean_bytes:,} bytes, connect to all acked:")
    print(f"  {held / replay_s:,.0f} readings/s ({messages / replay_s:,.0f} messages/s) in {replay_s:.2f} s")
    print(f"anchor, Mosquitto QoS 1 (same run, {mean_bytes:,}-byte payloads): {anchor}")
    print(f"  replay moves {held / replay_s / anchor.per_s:.1f} readings per broker message-slot")
    return 0 if live["acked"] == live["added"] else 1


def _mean_payload(agent: EdgeAgent) -> int:
    """Bytes of a full message as the agent sends it (what the anchor should publish)."""
    from pilotwatch.wire import Reading, ReadingsMessage  # noqa: PLC0415

    sample = Reading(1_790_000_000_000, "s00", "temperature", 29.0625, "degC")
    readings = tuple([sample] * agent.settings.batch_max_readings)
    return len(ReadingsMessage(DEVICE, 123456, 1_790_000_000_000, readings).encode())


if __name__ == "__main__":
    sys.exit(main())
