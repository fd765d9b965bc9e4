"""End to end through the real ingest service: edge agent → Mosquitto → ingest → InfluxDB, and ingest's acks
back to the edge. An outage of the broker in the middle; every sampled reading lands once."""

from __future__ import annotations

import math
import time
from pathlib import Path

from commands.stack import LocalStack
from firmware_sim.agents import drive
from firmware_sim.fleet import SimulatedFleet
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from tests.edge.test_agent import agent_for
from tests.edge.test_delivery import DEVICE, HOUR_MS, close, day_start, stored
from tests.firmware_sim.test_simulator import with_faults


def test_edge_to_influx_through_ingest_with_a_broker_outage(private_stack: LocalStack, tmp_path: Path) -> None:
    # No random faults: ingest rightly dead-letters readings of a jumped clock, and this test counts exact equality.
    manifest = with_faults([])
    influx = InfluxV1(private_stack.config.influx_url, "through_ingest")
    influx.create_database()
    settings = IngestSettings.for_local_stack(
        private_stack.config,
        tmp_path / "ingest",
        "ingest-edge-e2e",
        database=influx.database,
        batch_interval_s=0.05,
        state_interval_s=0.2,
    )
    ingest = IngestService(settings, manifest)
    ingest.start()
    ingest.wait_connected()
    start = day_start(2)
    middle, end = start + 12 * HOUR_MS, start + 24 * HOUR_MS
    agent = agent_for(private_stack, tmp_path / "buffers", manifest, start, ack_timeout_s=3.0, batch_max_readings=50)
    try:
        agent.start()
        assert drive([agent], middle, drain_timeout_s=60)
        private_stack.stop_service("mosquitto")
        agent.sample(until_ms=end - 1)  # half a day sampled with the broker down
        time.sleep(0.5)
        private_stack.start_service("mosquitto")
        assert drive([agent], end, drain_timeout_s=90), agent.buffer.stats()
        truth = SimulatedFleet(manifest, 3).device(DEVICE).truth(start, end)
        want = {(r.sensor, r.t_ms): r.value for r in truth if not math.isnan(r.value)}
        assert stored(influx) == want
        stats = agent.buffer.stats()
        assert (stats.added, stats.acked, stats.depth, stats.dropped) == (len(want), len(want), 0, 0)
    finally:
        close(agent)
        ingest.stop()
        influx.drop_database()
        influx.close()
