"""Delivery you can prove, against real Mosquitto and real InfluxDB.

With the project's edge agents (a simulated fleet of 15 devices, one reading per message): a burst into a slow
ingest behind Mosquitto's default queue bound, ingest stopped while the fleet publishes more than 70,000
messages (with the shipped queue bound, and with none), and one agent's backlog of more than 100,000 readings
replayed (also as that many single-reading messages: more than 65,535 from one client).
With :class:`tests.ingest.helpers.ResendingPublisher` (keeps and re-sends like the edge, for a single
device's 150,000 readings): kill -9 of ingest under load and InfluxDB down for two minutes.

In each, what lands in InfluxDB is compared value for value with what was sampled, and the gap ledger must show
nothing missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from commands.stack import LocalStack
from edge.settings import EdgeSettings
from firmware_sim.agents import drive, simulated_agent
from firmware_sim.fleet import SimulatedFleet
from ingest.ledger import DeviceLedger, read_ledger
from ingest.service import IngestService
from ingest.settings import IngestSettings
from ingest.writers import Writer, WriteResult
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.wire import ReadingsMessage
from tests.ingest.conftest import clear_retained_status
from tests.ingest.fleet import (
    DEBIAN_DEFAULT_BROKER_CONF,
    EdgeFleet,
    every_minute_manifest,
    mosquitto,
    sampled_fleet,
    shipped_broker_conf,
)
from tests.ingest.helpers import (
    DEVICE,
    ResendingPublisher,
    expected,
    make_message,
    readings_in_db,
    recent_t0,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


def _settings(stack: LocalStack, state_dir: Path, **extra: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "client_id": "ingest-delivery",
        "share_group": "delivery",
        "batch_interval_s": 0.05,
        "retry_initial_s": 0.1,
        "retry_max_s": 2.0,
        "spool_after_s": 1.0,
        "state_interval_s": 0.2,
    }
    values.update(extra)
    return IngestSettings.for_local_stack(stack.config, state_dir, **values)


def _assert_ledger_complete(state_dir: Path, messages: int) -> None:
    (ledger,) = [entry for entry in read_ledger(state_dir) if entry.device == DEVICE]
    assert (ledger.stored, ledger.stored_through, ledger.missing) == (messages, messages - 1, 0)


def _ingest_process(stack: LocalStack, state_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PILOTWATCH_INGEST_MQTT__PORT": str(stack.config.mqtt_port),
        "PILOTWATCH_INGEST_INFLUX__URL": stack.config.influx_url,
        "PILOTWATCH_INGEST_INFLUX__DATABASE": stack.config.database,
        "PILOTWATCH_INGEST_CLIENT_ID": "ingest-kill9",
        "PILOTWATCH_INGEST_BATCH_INTERVAL_S": "0.05",
        "PILOTWATCH_INGEST_STATE_INTERVAL_S": "0.2",
        "PILOTWATCH_HOME": str(state_dir.parent / "home"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "--state-dir", str(state_dir), "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _status_messages(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / "status-ingest-kill9.json").read_text()).get("messages", 0))
    except (OSError, ValueError):
        return 0


def test_kill_9_of_ingest_under_load_loses_and_duplicates_nothing(
    private_stack: LocalStack, manifest: Manifest, tmp_path: Path
) -> None:
    state = tmp_path / "ingest"
    influx = InfluxV1(private_stack.config.influx_url, private_stack.config.database)
    messages = [make_message(manifest, seq, 10, recent_t0()) for seq in range(15_000)]
    edge = ResendingPublisher(private_stack.config.host, private_stack.config.mqtt_port, resend_after_s=4.0)
    for m in messages:
        edge.add(m)
    proc = _ingest_process(private_stack, state)
    try:
        wait_until((state / "status-ingest-kill9.json").exists, 20, "ingest to start")
        edge.connect()
        sender = threading.Thread(target=edge.run_until_acked, args=(120,), daemon=True)
        sender.start()
        wait_until(lambda: influx.count() >= 30_000, 60, "ingest to be busy writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
        written_before = influx.count()
        assert written_before < 150_000, "the kill came too late to interrupt anything"
        proc = _ingest_process(private_stack, state)
        sender.join(150)
        assert not sender.is_alive(), f"{edge.pending()} messages never acknowledged after the restart"
        assert readings_in_db(influx) == expected(messages)
        assert influx.count() == 150_000
        wait_until(lambda: _status_messages(state) > 0, 10, "the status file of the restarted ingest")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _assert_ledger_complete(state, 15_000)
    finally:
        edge.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        influx.close()


def test_influxdb_down_for_two_minutes_under_load_loses_nothing(
    private_stack: LocalStack, manifest: Manifest, tmp_path: Path
) -> None:
    settings = _settings(private_stack, tmp_path / "ingest")
    service = IngestService(settings, manifest)
    service.start()
    service.wait_connected()
    influx = InfluxV1(private_stack.config.influx_url, private_stack.config.database)
    edge = ResendingPublisher(private_stack.config.host, private_stack.config.mqtt_port, resend_after_s=10.0)
    edge.connect()
    sent: list[ReadingsMessage] = []
    stop = threading.Event()
    t0 = recent_t0()

    def load() -> None:
        # 40 messages of 25 readings per second, every second, through the outage and after it.
        seq = 0
        while not stop.is_set():
            tick = time.monotonic()
            for _ in range(40):
                message = make_message(manifest, seq, 25, t0)
                sent.append(message)
                edge.add(message)
                seq += 1
            edge.send_new()
            edge.resend_due()
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_until(lambda: influx.count() > 5_000, 20, "the first readings")
        private_stack.stop_service("influxd")
        outage_start = time.monotonic()
        depth_during = []
        while time.monotonic() - outage_start < 120:
            time.sleep(5)
            depth_during.append(edge.pending())
        private_stack.start_service("influxd")
        time.sleep(3)
        stop.set()
        loader.join(10)
        edge.run_until_acked(120)
        wait_until(lambda: service.stats.spool_pending_batches == 0, 60, "the spool to drain")
        assert service.stats.readings_spooled > 100_000
        assert service.stats.readings_drained >= service.stats.readings_spooled
        # The edge's buffer stayed small during the outage: what ingest spooled it acknowledged end to end.
        assert max(depth_during) < 2_000, depth_during
        assert readings_in_db(influx) == expected(sent)
        assert len(sent) > 5_000
    finally:
        stop.set()
        edge.close()
        service.stop()
        influx.close()
    _assert_ledger_complete(settings.state_dir, len(sent))


class _SlowWriter:
    """The real v1 writer, slowed down: ingest as it is when InfluxDB is overloaded."""

    def __init__(self, inner: Writer, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.name = f"slow-{inner.name}"

    def write(self, lines: Sequence[str]) -> WriteResult:
        time.sleep(self.delay_s)
        return self.inner.write(lines)

    def close(self) -> None:
        self.inner.close()


def _assert_fleet_delivered(fleet: EdgeFleet, influx: InfluxV1, state_dir: Path) -> list[DeviceLedger]:
    """Every device's readings in InfluxDB value for value, each once, and a ledger with nothing missing."""
    for device, sampled in fleet.sampled.items():
        assert readings_in_db(influx, device) == sampled, device
    assert influx.count() == fleet.readings
    ledgers = {entry.device: entry for entry in read_ledger(state_dir)}
    assert set(ledgers) == set(fleet.sampled)
    for device, sampled in fleet.sampled.items():
        entry = ledgers[device]
        # one reading per message: a device's messages are seq 0 .. readings - 1
        assert (entry.stored, entry.stored_through, entry.missing) == (len(sampled), len(sampled) - 1, 0), entry
    return list(ledgers.values())


@pytest.mark.parametrize(
    "queue_bound", [pytest.param(60_000, id="shipped-broker"), pytest.param(0, id="unbounded-broker-queue")]
)
def test_ingest_stopped_while_the_fleet_produces_more_than_70000_messages(
    queue_bound: int, stack: LocalStack, influx: InfluxV1, tmp_path: Path
) -> None:
    """15 real edge agents, one reading per message, publish about 75,000 messages while ingest's session is away;
    every one is PUBACKed by the broker.

    - Shipped broker: the queue bound (60,000) drops what does not fit, after the PUBACK.
    - No queue bound: more than 65,535 messages wait for one subscriber, the count past which Mosquitto's 16-bit
      message ids wrap. Debian's 2.0.11 delivered all of them here, so this case asserts only the outcome.

    In each, the edge keeps every reading until ingest's end-to-end ack covers it and re-sends what is missing.
    """
    manifest = every_minute_manifest()
    with mosquitto(tmp_path, shipped_broker_conf(queue_bound)) as broker:
        settings = _settings(stack, tmp_path / "ingest", mqtt_port=broker.port, database=influx.database)
        first = IngestService(settings, manifest)
        first.start()
        first.wait_connected()
        first.stop()  # its session stays at the broker, which queues everything for ingest while it is away
        fleet = sampled_fleet(
            manifest,
            broker.port,
            tmp_path / "edge",
            readings_per_device=5_200,
            max_unacked_messages=5_000,
            max_inflight=1_000,
            ack_timeout_s=20.0,
            resend_chunk=1_000,
            status_interval_s=5.0,
        )
        service = IngestService(settings, manifest)
        try:
            assert fleet.readings > 70_000
            fleet.start()
            backlog_window = sum(a.settings.max_unacked_messages - a.settings.live_reserve for a in fleet.agents)
            fleet.pump_until(lambda: fleet.pubacks() >= backlog_window, 120, "the broker to PUBACK every publish")
            assert fleet.first_sends() == backlog_window > 70_000  # every one PUBACKed by the broker ...
            service.start()
            service.wait_connected()
            fleet.pump_until(lambda: fleet.held() == 0, 240, "every reading to be acknowledged end to end")
            if queue_bound:
                # ... yet the broker did not deliver them all; the end-to-end acks brought the rest back.
                assert "Outgoing messages are being dropped" in broker.log.read_text()
                assert fleet.resent() > 0
                assert service.stats.messages < fleet.published()
        finally:
            fleet.close()
            service.stop()
        _assert_fleet_delivered(fleet, influx, settings.state_dir)


def test_fleet_burst_while_ingest_is_slow_behind_a_default_broker(
    stack: LocalStack, influx: InfluxV1, tmp_path: Path
) -> None:
    """15 real edge agents replay a backlog at once into an ingest whose database is slow, behind Mosquitto's
    default queue bound (1,000): the broker drops part of the burst after PUBACKing it, re-sends recover it."""
    manifest = every_minute_manifest()
    with mosquitto(tmp_path, DEBIAN_DEFAULT_BROKER_CONF) as broker:
        settings = _settings(
            stack, tmp_path / "ingest", mqtt_port=broker.port, database=influx.database, batch_readings=100
        )
        service = IngestService(settings, manifest, writer_factory=lambda s: _SlowWriter(s.make_writer(), 0.05))
        service.start()
        service.wait_connected()
        fleet = sampled_fleet(manifest, broker.port, tmp_path / "edge", readings_per_device=1_000, ack_timeout_s=3.0)
        try:
            fleet.start()
            fleet.pump_until(lambda: fleet.held() == 0, 240, "every reading to be acknowledged end to end")
            assert fleet.resent() > 0, "the default broker should have dropped part of the burst"
            assert service.stats.messages < fleet.published()
        finally:
            fleet.close()
            service.stop()
        ledgers = _assert_fleet_delivered(fleet, influx, settings.state_dir)
        assert sum(entry.recovered for entry in ledgers) > 0  # gaps closed by the re-sends


@pytest.mark.parametrize(
    "per_message",
    [
        pytest.param(1_000, id="1000-readings-per-message"),
        # 110,000 messages from one client: past the 65,535 unacknowledged publishes where paho loses the excess
        pytest.param(1, id="one-reading-per-message"),
    ],
)
def test_edge_backlog_of_more_than_100000_readings_replays_completely(
    per_message: int,
    start_ingest: Callable[..., IngestService],
    influx: InfluxV1,
    stack: LocalStack,
    manifest: Manifest,
    tmp_path: Path,
) -> None:
    service = start_ingest()
    fleet = SimulatedFleet(manifest, 7)
    day = 86_400_000
    now = int(time.time() * 1000)
    start = now - now % day - 70 * day
    end = start + 66 * day  # six sensors every 300 s: 1,728 readings a day, > 110,000 in 66 days
    edge_settings = EdgeSettings(
        device=DEVICE,
        mqtt_port=stack.config.mqtt_port,
        buffer_dir=tmp_path / "edge",
        ack_timeout_s=5.0,
        reconnect_min_s=1,
        reconnect_max_s=1,
        status_interval_s=1.0,
        linger_s=0.05,
        batch_max_readings=per_message,
        max_unacked_messages=5_000 if per_message == 1 else 1_000,
        max_inflight=1_000 if per_message == 1 else 200,
        resend_chunk=1_000,
        max_buffer_readings=500_000,
    )
    agent = simulated_agent(edge_settings, fleet.device(DEVICE), start)
    try:
        agent.sample(until_ms=end)  # the long outage: everything stays in the edge's disk buffer
        backlog = agent.buffer.stats().added
        assert backlog > 100_000
        want = {
            (r.sensor, r.t_ms): r.value
            for r in fleet.device(DEVICE).truth(start, end + 1)
            if r.value == r.value  # NaN marks a dropout: nothing was sampled
        }
        agent.start()
        assert drive([agent], end, drain_timeout_s=240), agent.buffer.stats()
        assert readings_in_db(influx) == want
        assert agent.buffer.stats().depth == 0
        assert agent.inflight <= edge_settings.max_inflight
    finally:
        agent.stop()
        agent.sampler.close()
        agent.buffer.close()
        clear_retained_status(stack.config.host, stack.config.mqtt_port)
    service.stop()
    (ledger,) = [e for e in read_ledger(service.state_dir) if e.device == DEVICE]
    assert ledger.missing == 0
    assert ledger.stored >= backlog // per_message
    if per_message == 1:
        assert ledger.stored > 65_535  # messages from one client, each acknowledged end to end
