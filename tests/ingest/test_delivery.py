"""Delivery you can prove, against real Mosquitto and real InfluxDB: kill -9 of ingest, InfluxDB down for two
minutes, more than 65,535 messages queued at the broker while ingest is away, a slow ingest behind a broker with
Mosquitto's default queue limit, and a backlog of more than 100,000 readings replayed by the project's edge agent.

In each, what lands in InfluxDB is compared value for value with what was sampled, and the gap ledger must show
nothing missing. The publisher in most scenarios is :class:`tests.ingest.helpers.EdgeLike` (keeps every message
until ingest's end-to-end ack covers it, re-sends the rest): the project's edge agent bounds its unacknowledged
messages at 5,000 per device, so one device can never put 70,000 messages in a broker queue; the fleet-sized
bursts are made with the test publisher, the long backlog replay with the real edge agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from edge.fleet import drive, simulated_agent
from edge.settings import EdgeSettings
from firmware_sim.fleet import SimulatedFleet
from ingest.ledger import read_ledger
from ingest.service import IngestService
from ingest.settings import IngestSettings
from ingest.writers import Writer, WriteResult
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.stack import LocalStack, find_binary, free_port
from pilotwatch.wire import ReadingsMessage
from tests.ingest.conftest import clear_retained_status, forget_session
from tests.ingest.helpers import DEVICE, EdgeLike, expected, make_message, readings_in_db, recent_t0, wait_until

REPO = Path(__file__).resolve().parents[2]


def _settings(stack: LocalStack, state_dir: Path, **extra: object) -> IngestSettings:
    values: dict[str, object] = {
        "mqtt_port": stack.config.mqtt_port,
        "influx_url": stack.config.influx_url,
        "database": stack.config.database,
        "state_dir": state_dir,
        "client_id": "ingest-delivery",
        "share_group": "delivery",
        "batch_interval_s": 0.05,
        "retry_initial_s": 0.1,
        "retry_max_s": 2.0,
        "spool_after_s": 1.0,
        "state_interval_s": 0.2,
    }
    values.update(extra)
    return IngestSettings(**values)  # type: ignore[arg-type]


def _assert_ledger_complete(state_dir: Path, messages: int) -> None:
    (ledger,) = [entry for entry in read_ledger(state_dir) if entry.device == DEVICE]
    assert (ledger.stored, ledger.stored_through, ledger.missing) == (messages, messages - 1, 0)


def _ingest_process(stack: LocalStack, state_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PILOTWATCH_INGEST_MQTT_PORT": str(stack.config.mqtt_port),
        "PILOTWATCH_INGEST_INFLUX_URL": stack.config.influx_url,
        "PILOTWATCH_INGEST_DATABASE": stack.config.database,
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
    edge = EdgeLike(private_stack.config.host, private_stack.config.mqtt_port, resend_after_s=4.0)
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
    edge = EdgeLike(private_stack.config.host, private_stack.config.mqtt_port, resend_after_s=10.0)
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


def test_more_than_65535_messages_queued_while_ingest_is_away(
    private_stack: LocalStack, manifest: Manifest, tmp_path: Path
) -> None:
    settings = _settings(private_stack, tmp_path / "ingest")
    first = IngestService(settings, manifest)
    first.start()
    first.wait_connected()
    first.stop()  # the session stays at the broker and queues everything for ingest while it is away
    influx = InfluxV1(private_stack.config.influx_url, private_stack.config.database)
    messages = [make_message(manifest, seq, 1, recent_t0(30)) for seq in range(72_000)]
    edge = EdgeLike(private_stack.config.host, private_stack.config.mqtt_port, resend_after_s=6.0, chunk=5_000)
    for m in messages:
        edge.add(m)
    edge.connect()
    service = IngestService(settings, manifest)
    try:
        edge.send_new()  # every publish gets its PUBACK from the broker ...
        assert edge.published == 72_000
        service.start()
        service.wait_connected()
        edge.run_until_acked(150)
        # ... yet the broker did not deliver them all: the queue limit (and past 65,535 the 16-bit ids) cost some,
        # which only the end-to-end acks brought back through re-sends.
        assert edge.resent > 0
        assert service.stats.messages < 72_000 + edge.resent
        assert readings_in_db(influx) == expected(messages)
    finally:
        edge.close()
        service.stop()
        influx.close()
    _assert_ledger_complete(settings.state_dir, 72_000)


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


@pytest.fixture
def default_broker(tmp_path: Path) -> Iterator[int]:
    """Mosquitto as Debian ships it: max_queued_messages 1000 (the setting that lost 66 %)."""
    port = free_port()
    conf = tmp_path / "default-mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    log = (tmp_path / "mosquitto.out").open("wb")
    proc = subprocess.Popen([find_binary("mosquitto"), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_burst_while_ingest_is_slow_behind_a_default_broker(
    default_broker: int, stack: LocalStack, influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    settings = _settings(
        stack, tmp_path / "ingest", mqtt_port=default_broker, database=influx.database, batch_readings=500
    )
    service = IngestService(settings, manifest, writer_factory=lambda s: _SlowWriter(s.make_writer(), 0.05))
    service.start()
    service.wait_connected()
    messages = [make_message(manifest, seq, 5, recent_t0()) for seq in range(6_000)]
    edge = EdgeLike("127.0.0.1", default_broker, resend_after_s=3.0, chunk=1_000, window=1_000)
    for m in messages:
        edge.add(m)
    edge.connect()
    try:
        edge.send_new()  # a burst far faster than ingest writes: the broker queue (1000) overflows
        edge.run_until_acked(120)
        assert edge.resent > 0, "the default broker should have dropped part of the burst"
        assert readings_in_db(influx) == expected(messages)
    finally:
        edge.close()
        service.stop()
        forget_session("127.0.0.1", default_broker, settings.client_id)
    _assert_ledger_complete(settings.state_dir, 6_000)
    (ledger,) = read_ledger(settings.state_dir)
    assert ledger.recovered > 0  # gaps the broker left in the middle closed when the re-sends arrived


def test_edge_backlog_of_more_than_100000_readings_replays_completely(
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
        batch_max_readings=1_000,
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
        assert drive([agent], end, drain_timeout_s=120), agent.buffer.stats()
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
    assert ledger.stored >= backlog // 1_000
