"""The agent's delivery rules on a real broker: bounded windows, re-sends with the same seq and readings, live
readings ahead of a replaying backlog, and the in-process fleet runner."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from commands.stack import LocalStack
from edge.agent import EdgeAgent
from edge.settings import EdgeSettings, load_edge_settings
from firmware_sim.agents import FleetProgress, drive, run_fleet, simulated_agent
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.manifest import Manifest
from tests.edge.responder import AckResponder
from tests.edge.test_delivery import DEVICE, HOUR_MS, close, day_start, expected, stored, wait_for


def agent_for(stack: LocalStack, buffers: Path, manifest: Manifest, start: int, **extra: object) -> EdgeAgent:
    values: dict[str, object] = {
        "device": DEVICE,
        "mqtt_port": stack.config.mqtt_port,
        "buffer_dir": buffers,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
        "linger_s": 0.05,
        **extra,
    }
    return simulated_agent(EdgeSettings(**values), SimulatedFleet(manifest, 3).device(DEVICE), start)  # type: ignore[arg-type]


def test_windows_are_bounded_and_unacknowledged_messages_are_resent_unchanged(
    edge_stack: LocalStack, responder: AckResponder, manifest: Manifest, buffers: Path
) -> None:
    start = day_start(2)
    agent = agent_for(
        edge_stack, buffers, manifest, start, batch_max_readings=10, max_inflight=5, max_unacked_messages=20,
        live_reserve=2, ack_timeout_s=0.5,
    )  # fmt: skip
    responder.paused.set()  # ingest is down: messages reach the broker, nobody acknowledges them
    agent.sample(until_ms=start + 12 * HOUR_MS)
    agent.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            agent.pump()
            assert agent.inflight <= 5
            assert agent.buffer.messages <= 20
            time.sleep(0.002)
        seqs = {m.seq for m in responder.history}
        assert seqs == set(range(18))  # 20 unacknowledged at most, 2 of them kept for live readings
        assert agent.counters.resent_messages > 0
        first: dict[int, object] = {}
        for message in responder.history:  # every re-send: same seq, same readings
            assert first.setdefault(message.seq, message.readings) == message.readings
        responder.paused.clear()
        assert drive([agent], agent.clock.now_ms(), drain_timeout_s=30)
        assert stored(responder.influx) == expected(SimulatedFleet(manifest, 3), start, start + 12 * HOUR_MS + 1)
    finally:
        close(agent)


def test_live_readings_go_ahead_of_a_replaying_backlog(
    edge_stack: LocalStack, responder: AckResponder, manifest: Manifest, buffers: Path
) -> None:
    start = day_start(3)
    live_from = start + 24 * HOUR_MS
    agent = agent_for(
        edge_stack, buffers, manifest, start, batch_max_readings=10, max_unacked_messages=6, live_reserve=2
    )
    agent.sample(until_ms=live_from)  # a day of backlog from an outage
    agent.start()
    try:
        wait_for(lambda: (agent.pump(), agent.connected)[1])
        t = live_from
        while agent.buffer.unformed_after(0) and t < live_from + 12 * HOUR_MS:
            t += 300_000  # a new slot every round: the device keeps sampling while it replays
            agent.sample(until_ms=t)
            agent.pump()
            time.sleep(0.005)
        assert drive([agent], t, drain_timeout_s=30)
    finally:
        close(agent)
    order = list(responder.history)
    live = [i for i, m in enumerate(order) if m.readings[0].t_ms >= live_from]
    backlog = [m for m in order if m.readings[0].t_ms < live_from]
    assert live
    assert backlog
    assert live[0] < len(order) // 4  # live data did not wait for the whole backlog
    firsts = [m.readings[0].t_ms for m in backlog]
    assert firsts == sorted(firsts)  # the backlog replays oldest first


def test_run_fleet_delivers_every_device(
    edge_stack: LocalStack, responder: AckResponder, manifest: Manifest, tmp_path: Path
) -> None:
    start = day_start(1) - 6 * HOUR_MS
    end = start + 6 * HOUR_MS
    devices = ["bkk-pratunam-wq1", "smg-natural-ef1", "cto-anlac-bin2", "jkt-kalibaru-bin1"]
    seen: list[FleetProgress] = []
    counts = run_fleet(
        manifest, edge_stack.config.host, edge_stack.config.mqtt_port, tmp_path / "buffers", start, end, 8,
        seen.append, devices=devices, drain_timeout_s=60, linger_s=0.05,
    )  # fmt: skip
    truth = [r for r in SimulatedFleet(manifest, 8).truth(start, end, devices) if r.value == r.value]
    assert sum(c.sampled for c in counts.values()) == len(truth)
    for device, c in counts.items():
        assert c.sampled == c.published == c.acknowledged > 0, c
        assert (c.dropped, c.held) == (0, 0), device
    assert responder.influx.count() == len(truth)
    assert seen
    assert seen[-1].fraction == 1.0


def test_settings_refuse_unsafe_windows_and_half_tls() -> None:
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        EdgeSettings(device="d-1", max_inflight=70_000)
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        EdgeSettings(device="d-1", tls_ca=Path("ca"), tls_cert=Path("c"))
    assert EdgeSettings(device="d-1", password="x").mqtt_username == "d-1"  # type: ignore[arg-type]


def test_sample_config_and_systemd_unit_load() -> None:
    root = Path(__file__).resolve().parents[2]
    settings = load_edge_settings(root / "edge" / "local.sample.toml", device="bkk-pratunam-wq1")
    assert settings.max_inflight == 200
    assert settings.counters["gpio17"] == Path("/sys/bus/counter/devices/counter0/count0/count")
    unit = (root / "deploy" / "systemd" / "pilotwatch-edge@.service").read_text()
    assert "edge run --device %i --config /etc/pilotwatch/edge.toml" in unit
    secret = (root / "deploy" / "systemd" / "edge.env.sample").read_text().split("PILOTWATCH_EDGE_PASSWORD=")[1]
    with pytest.raises(ValueError, match="placeholder"):
        EdgeSettings(device="d-1", password=secret.strip())  # type: ignore[arg-type]


def test_local_config_errors_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[edge]\nmqtt_prot = 1883\n")
    with pytest.raises(ValueError, match="mqtt_prot"):
        load_edge_settings(bad, device="d-1")
    bad.write_text("[mqtt]\nport = 1\n")
    with pytest.raises(ValueError, match=r"only an \[edge\] table"):
        load_edge_settings(bad)
