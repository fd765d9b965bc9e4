"""End-to-end delivery against real Mosquitto and real InfluxDB: outages, kill -9, a full buffer."""

from __future__ import annotations

import datetime as dt
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commands.stack import LocalStack
from edge.agent import EdgeAgent
from edge.buffer import SqliteBuffer
from edge.settings import EdgeSettings
from firmware_sim.agents import drive, simulated_agent
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.wire import DeviceState
from tests.edge.conftest import start_responder
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


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except KeyError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout_s} s")


def stored(influx: InfluxV1) -> dict[tuple[str, int], float]:
    rows = influx.query(f"SELECT value FROM reading WHERE device = '{DEVICE}' GROUP BY sensor")
    return {(r["sensor"], r["time"]): r["value"] for r in rows}


def expected(fleet: SimulatedFleet, start_ms: int, end_ms: int) -> dict[tuple[str, int], float]:
    return {
        (r.sensor, r.t_ms): r.value for r in fleet.device(DEVICE).truth(start_ms, end_ms) if not math.isnan(r.value)
    }


@pytest.fixture
def responder(private_stack: LocalStack, manifest: Manifest) -> Iterator[AckResponder]:
    """Overrides the module-stack responder: these tests kill services, so they get a stack of their own."""
    responder = start_responder(private_stack, manifest)
    yield responder
    responder.stop()
    responder.influx.close()


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


def edge_command(tmp_path: Path, stack: LocalStack, start: int, end: int, **config: object) -> list[str]:
    values = {
        "mqtt_port": stack.config.mqtt_port,
        "buffer_dir": str(tmp_path / "buffers"),
        "ack_timeout_s": 2.0,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "linger_s": 0.0,
        "batch_max_readings": 5,
        "max_inflight": 20,
        "max_unacked_messages": 60,
        **config,
    }
    lines = ["[edge]"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in values.items()]
    path = tmp_path / "local.toml"
    path.write_text("\n".join(lines) + "\n")
    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()  # noqa: E731
    return [
        str(Path(sys.executable).parent / "pilotwatch"),
        "--home", str(tmp_path / "home"),
        "sim", "run", "--device", DEVICE, "--seed", str(SEED), "--config", str(path),
        "--sim-start", iso(start), "--sim-end", iso(end), "--exit-when-delivered",
    ]  # fmt: skip


def test_kill_9_while_publishing_then_restart_loses_and_duplicates_nothing(
    private_stack: LocalStack, responder: AckResponder, manifest: Manifest, tmp_path: Path
) -> None:
    fleet = SimulatedFleet(manifest, SEED)
    start = day_start(3)
    end = start + 36 * HOUR_MS  # 2,592 readings in messages of 5
    want = expected(fleet, start, end)
    command = edge_command(tmp_path, private_stack, start, end)
    log = (tmp_path / "edge.log").open("wb")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while len(responder.received) < 100 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "edge.log").read_text()
    wait_for(lambda: responder.statuses[DEVICE].state is DeviceState.LOST)  # the broker's last will
    first_seqs = {seq for _, seq in responder.received}
    with SqliteBuffer(tmp_path / "buffers" / f"{DEVICE}.sqlite") as buffer:
        killed = buffer.stats()
    # It really died half-way through: some readings acknowledged, others still held.
    assert killed.acked > 0, killed
    assert killed.depth > 0, killed
    second = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=90, check=False)
    log.close()
    assert second.returncode == 0, (tmp_path / "edge.log").read_text()
    assert stored(responder.influx) == want
    with SqliteBuffer(tmp_path / "buffers" / f"{DEVICE}.sqlite") as buffer:
        final = buffer.stats()
    # Nothing sampled twice, nothing dropped, everything acknowledged; seqs went on increasing after the restart.
    assert (final.added, final.acked, final.depth, final.dropped) == (len(want), len(want), 0, 0)
    assert final.last_seq > killed.last_seq >= max(first_seqs)
    assert {seq for _, seq in responder.received} == set(range(final.last_seq + 1))
    wait_for(lambda: responder.statuses[DEVICE].state is DeviceState.OFFLINE)  # a clean exit says so
    status = responder.statuses[DEVICE]
    assert (status.buffer_depth, status.last_seq, status.oldest_unsent_ms) == (0, final.last_seq, None)
    assert set(status.sensors) == {s.id for s in fleet.device(DEVICE).device.sensors}
    assert status.battery_pct is not None
    assert status.signal_dbm is not None
    assert status.disk_free_mb is not None


def test_full_buffer_drops_the_oldest_and_counts_exactly_what_is_missing(
    private_stack: LocalStack, responder: AckResponder, manifest: Manifest, tmp_path: Path
) -> None:
    fleet = SimulatedFleet(manifest, SEED)
    start = day_start(2)
    end = start + 24 * HOUR_MS
    private_stack.stop_service("mosquitto")
    agent = simulated_agent(settings(private_stack, tmp_path, max_buffer_readings=500), fleet.device(DEVICE), start)
    agent.start()
    try:
        agent.sample(until_ms=end)
        private_stack.start_service("mosquitto")
        assert drive([agent], end, drain_timeout_s=60), agent.buffer.stats()
        stats = agent.buffer.stats()
    finally:
        close(agent)
    order = {s.id: i for i, s in enumerate(fleet.device(DEVICE).device.sensors)}
    rows = sorted(
        (r for r in fleet.device(DEVICE).truth(start, end + 1) if not math.isnan(r.value)),
        key=lambda r: (r.true_t_ms, order[r.sensor]),
    )
    got = stored(responder.influx)
    # Documented policy: the oldest readings go first; the counter says exactly how many are missing.
    assert stats.dropped == len(rows) - 500 == len(rows) - len(got)
    assert got == {(r.sensor, r.t_ms): r.value for r in rows[-500:]}
    assert (stats.depth, stats.acked) == (0, 500)
