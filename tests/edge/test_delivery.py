"""End-to-end delivery against real Mosquitto and real InfluxDB: outages, kill -9, a full buffer."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import EdgeAgent
from edge.fleet import drive, simulated_agent
from edge.settings import EdgeSettings
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.stack import LocalStack
from tests.edge.responder import AckResponder

DEVICE = "bkk-pratunam-wq1"  # six sensors at 300 s: 1,728 readings a day
HOUR_MS = 3_600_000
SEED = 11


def day_start(days_ago: int) -> int:
    now = time.time_ns() // 1_000_000
    return now - now % (24 * HOUR_MS) - days_ago * 24 * HOUR_MS


def settings(stack: LocalStack, buffer_dir: Path, **extra: object) -> EdgeSettings:
    values: dict[str, object] = {
        "device": DEVICE,
        "mqtt_port": stack.config.mqtt_port,
        "buffer_dir": buffer_dir,
        "ack_timeout_s": 3.0,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "status_interval_s": 1.0,
        "linger_s": 0.05,
    }
    values.update(extra)
    return EdgeSettings(**values)  # type: ignore[arg-type]


def stored(influx: InfluxV1) -> dict[tuple[str, int], float]:
    rows = influx.query(f"SELECT value FROM reading WHERE device = '{DEVICE}' GROUP BY sensor")
    return {(r["sensor"], r["time"]): r["value"] for r in rows}


def expected(fleet: SimulatedFleet, start_ms: int, end_ms: int) -> dict[tuple[str, int], float]:
    return {
        (r.sensor, r.t_ms): r.value for r in fleet.device(DEVICE).truth(start_ms, end_ms) if not math.isnan(r.value)
    }


@pytest.fixture
def responder(private_stack: LocalStack, manifest: Manifest) -> Iterator[AckResponder]:
    influx = InfluxV1(private_stack.config.influx_url, "edge_delivery")
    influx.create_database()
    responder = AckResponder("127.0.0.1", private_stack.config.mqtt_port, influx, manifest, "test-responder").start()
    yield responder
    responder.stop()
    influx.close()


def close(agent: EdgeAgent) -> None:
    agent.stop()
    agent.sampler.close()
    agent.buffer.close()


def test_offline_for_24_hours_then_every_reading_arrives_once(
    private_stack: LocalStack, responder: AckResponder, manifest: Manifest, tmp_path: Path
) -> None:
    fleet = SimulatedFleet(manifest, SEED)
    start = day_start(2)
    end = start + 24 * HOUR_MS
    private_stack.stop_service("mosquitto")
    agent = simulated_agent(settings(private_stack, tmp_path), fleet.device(DEVICE), start)
    agent.start()
    try:
        agent.sample(until_ms=end)  # a day of sampling with no broker
        agent.pump()
        assert not agent.connected
        sampled = agent.buffer.stats().added
        want = expected(fleet, start, end + 1)
        assert sampled == len(want) > 1500
        private_stack.start_service("mosquitto")
        assert drive([agent], end, drain_timeout_s=60), agent.buffer.stats()
        assert stored(responder.influx) == want
        stats = agent.buffer.stats()
        assert (stats.depth, stats.acked, stats.dropped) == (0, sampled, 0)
    finally:
        close(agent)
