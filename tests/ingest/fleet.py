"""A fleet of the project's own edge agents for delivery tests: every device of the manifest, one reading per
message, each agent with a disk buffer filled before it connects, pumped on the test's thread.

One reading per message makes the message counts of the failure modes (a 1,000-message broker queue, 65,535
messages queued for one subscriber) reachable with a fleet that samples a realistic number of readings.
"""

from __future__ import annotations

import copy
import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from commands.stack import MOSQUITTO_CONF, find_binary
from edge.agent import EdgeAgent
from edge.settings import EdgeSettings
from firmware_sim.agents import simulated_agent
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.manifest import Manifest, parse_manifest
from pilotwatch.settings import free_port

DAY_MS = 86_400_000
DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "pilotwatch" / "manifests" / "default.yaml"


def every_minute_manifest() -> Manifest:
    """The default manifest without random faults and with every sensor sampled each minute, so that each device
    (bins included) samples thousands of readings in a few days of simulated time."""
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    for city in raw["cities"]:
        for site in city["sites"]:
            site["simulation"] = {**site.get("simulation", {}), "fault_rate_per_week": 0.0}
            for device in site["devices"]:
                device["sensors"] = [{**sensor, "interval_s": 60} for sensor in device["sensors"]]
    return parse_manifest(raw, "default.yaml without faults, every sensor each minute")


class Mosquitto:
    """A broker of one test alone, with the given configuration (``{port}``, ``{data}`` and ``{log}`` filled in)."""

    def __init__(self, tmp_path: Path, conf: str) -> None:
        self.port = free_port()
        self.data = tmp_path / f"mosquitto-{self.port}"
        self.data.mkdir(parents=True)
        self.log = self.data / "mosquitto.log"
        self.conf_path = self.data / "mosquitto.conf"
        self.conf_path.write_text(conf.format(port=self.port, data=self.data, log=self.log))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out_path = self.data / "mosquitto.out"
        with out_path.open("ab") as out:
            proc = subprocess.Popen(
                [find_binary("mosquitto"), "-c", str(self.conf_path)], stdout=out, stderr=subprocess.STDOUT
            )
        self._proc = proc
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"mosquitto did not start: {out_path.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(30)
            self._proc = None


@contextmanager
def mosquitto(tmp_path: Path, conf: str) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path, conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def shipped_broker_conf(max_queued_messages: int | None = None) -> str:
    """The broker configuration ``pilotwatch stack`` ships, optionally with another queue bound."""
    conf = MOSQUITTO_CONF.format(
        port="{port}", host="127.0.0.1", data="{data}", log="{log}", user_line=f"user {getpass.getuser()}"
    )
    if max_queued_messages is not None:
        assert "\nmax_queued_messages 60000\n" in conf
        conf = conf.replace("\nmax_queued_messages 60000\n", f"\nmax_queued_messages {max_queued_messages}\n")
    return conf


# Mosquitto as Debian ships it, apart from the listener: max_queued_messages 1000, max_inflight_messages 20.
DEBIAN_DEFAULT_BROKER_CONF = "listener {port} 127.0.0.1\nallow_anonymous true\n"


@dataclass
class EdgeFleet:
    agents: list[EdgeAgent]
    sampled: dict[str, dict[tuple[str, int], float]]  # per device, (sensor, time) -> value in its disk buffer

    @property
    def readings(self) -> int:
        return sum(len(v) for v in self.sampled.values())

    def published(self) -> int:
        """Publishes, re-sends included."""
        return sum(a.counters.published_messages for a in self.agents)

    def first_sends(self) -> int:
        """Messages published for the first time (one reading per message)."""
        return sum(a.counters.published_readings for a in self.agents)

    def pubacks(self) -> int:
        return sum(a.counters.pubacks for a in self.agents)

    def resent(self) -> int:
        return sum(a.counters.resent_messages for a in self.agents)

    def held(self) -> int:
        return sum(a.buffer.depth for a in self.agents)

    def start(self) -> None:
        for agent in self.agents:
            agent.start()

    def pump(self) -> None:
        for agent in self.agents:
            agent.pump()

    def pump_until(self, done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}: published {self.published()}, "
                    f"pubacks {self.pubacks()}, re-sent {self.resent()}, held {self.held()}"
                )
            self.pump()
            time.sleep(0.005)

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
            agent.sampler.close()
            agent.buffer.close()


def sampled_fleet(
    manifest: Manifest, port: int, buffer_dir: Path, readings_per_device: int, seed: int = 11, **settings: Any
) -> EdgeFleet:
    """An agent per device of ``manifest`` whose disk buffer holds its first ``readings_per_device`` readings of
    some days ago (what it sampled while the link or ingest was down); nothing is published yet."""
    fleet = SimulatedFleet(manifest, seed)
    now = int(time.time() * 1000)
    start = now - now % DAY_MS - 5 * DAY_MS
    agents, sampled = [], {}
    try:
        for device in fleet.devices:
            truth = sorted(
                (r for r in device.truth(start, start + 3 * DAY_MS) if r.value == r.value),  # NaN: nothing sampled
                key=lambda r: r.t_ms,
            )
            assert len(truth) > readings_per_device, f"{device.id} samples too little in three days"
            end = truth[readings_per_device].t_ms
            edge_settings = EdgeSettings(
                device=device.id,
                mqtt_port=port,
                buffer_dir=buffer_dir,
                batch_max_readings=1,
                linger_s=0.0,
                reconnect_min_s=1,
                reconnect_max_s=2,
                **settings,
            )
            agent = simulated_agent(edge_settings, device, start)
            agents.append(agent)
            agent.sample(until_ms=end - 1)
            sampled[device.id] = {(r.sensor, r.t_ms): r.value for r in truth if r.t_ms < end}
            assert agent.buffer.depth == len(sampled[device.id])
    except BaseException:
        EdgeFleet(agents, sampled).close()
        raise
    return EdgeFleet(agents, sampled)
