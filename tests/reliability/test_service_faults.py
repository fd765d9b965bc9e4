"""Long-running services killed with ``kill -9`` under load, the broker restarted, InfluxDB taken away: afterwards
every reading is stored exactly once (and every QC result is what an uninterrupted run writes).

Each service is a :class:`ServiceUnderTest` in ``SERVICES``; the kill test runs the same steps for each: give it
work, start it as its deployment does (its own process, its own command), kill it while it is busy, start it
again, let it finish, check. The alert engine and the notifier join by adding a class here.

The InfluxDB outage lasts ``PILOTWATCH_OUTAGE_S`` seconds (default 10 in CI; the full five minutes:
``PILOTWATCH_OUTAGE_S=300 .venv/bin/python -m pytest -q tests/reliability/test_service_faults.py -k outage``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from commands.stack import LocalStack
from edge.buffer import BufferStats
from edge.settings import EdgeSettings
from firmware_sim.agents import simulated_agent
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, parse_manifest
from pilotwatch.schema import Measurement

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO / "pilotwatch" / "manifests" / "default.yaml"
DEVICE = "bkk-pratunam-wq1"  # six sensors every 300 s: 1,728 readings a day
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SEED = 3
OUTAGE_S = float(os.environ.get("PILOTWATCH_OUTAGE_S", "10"))


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def day_start(days_ago: int) -> int:
    now = time.time_ns() // 1_000_000
    return now - now % DAY_MS - days_ago * DAY_MS


@dataclass
class World:
    """What a scenario runs in: a private stack, a fault-free manifest (as a file, for the services' processes),
    a database, a temp folder."""

    stack: LocalStack
    manifest: Manifest
    manifest_file: Path
    influx: InfluxV1
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PILOTWATCH_MANIFEST": str(self.manifest_file), "PILOTWATCH_HOME": str(self.tmp / "home")}

    def count(self, measurement: Measurement) -> int:
        rows = self.influx.query(
            f'SELECT count("value") FROM "{measurement}"'
            if measurement is Measurement.READING
            else f'SELECT count("flag") FROM "{measurement}"'
        )
        return int(rows[0]["count"]) if rows else 0


@pytest.fixture
def world(private_stack: LocalStack, tmp_path: Path) -> Iterator[World]:
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    for city in raw["cities"]:
        for site in city["sites"]:
            # No random faults: ingest rightly dead-letters readings of a jumped clock; these tests count exactly.
            site["simulation"] = {**site.get("simulation", {}), "fault_rate_per_week": 0.0}
    manifest_file = tmp_path / "manifest.yaml"
    manifest_file.write_text(yaml.safe_dump(raw))
    influx = InfluxV1(private_stack.config.influx_url, private_stack.config.database)
    yield World(private_stack, parse_manifest(raw, str(manifest_file)), manifest_file, influx, tmp_path)
    influx.close()


# -- the services ------------------------------------------------------------------------------------------------


def ingest_process(world: World, client_id: str = "ingest-faults") -> subprocess.Popen[bytes]:
    env = {
        **world.env(),
        "PILOTWATCH_INGEST_MQTT__PORT": str(world.stack.config.mqtt_port),
        "PILOTWATCH_INGEST_INFLUX__URL": world.stack.config.influx_url,
        "PILOTWATCH_INGEST_INFLUX__DATABASE": world.stack.config.database,
        "PILOTWATCH_INGEST_CLIENT_ID": client_id,
        "PILOTWATCH_INGEST_BATCH_INTERVAL_S": "0.05",
        "PILOTWATCH_INGEST_STATE_INTERVAL_S": "0.2",
        "PILOTWATCH_INGEST_RETRY_MAX_S": "2",
        "PILOTWATCH_INGEST_SPOOL_AFTER_S": "2",
    }
    with (world.tmp / f"{client_id}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ingest", "--state-dir", str(world.tmp / "ingest"), "run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


class Pump:
    """The real edge agent with a day of readings in its disk buffer, publishing and re-sending on a thread of
    its own (the agent's SQLite buffer belongs to the thread that opened it); the test reads snapshots."""

    def __init__(self, world: World, days: int = 1, **settings: object) -> None:
        self.start_ms = day_start(days + 1)
        self.end_ms = self.start_ms + days * DAY_MS
        self._values: dict[str, object] = {
            "device": DEVICE,
            "mqtt_port": world.stack.config.mqtt_port,
            "buffer_dir": world.tmp / "edge",
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
            "linger_s": 0.05,
            "batch_max_readings": 6,
            "ack_timeout_s": 3.0,
            **settings,
        }
        self._fleet = SimulatedFleet(world.manifest, SEED)
        self.want = {
            (r.sensor, r.t_ms): r.value
            for r in self._fleet.device(DEVICE).truth(self.start_ms, self.end_ms)
            if not math.isnan(r.value)
        }
        self.stats: BufferStats | None = None
        self.inflight = 0
        self.published = 0
        self.resent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        settings = EdgeSettings(**self._values)  # type: ignore[arg-type]
        agent = simulated_agent(settings, self._fleet.device(DEVICE), self.start_ms)
        try:
            agent.sample(until_ms=self.end_ms - 1)
            agent.start()
            while not self._stop.is_set():
                agent.pump()
                self.inflight = agent.inflight
                self.published = agent.counters.published_messages
                self.resent = agent.counters.resent_messages
                self.stats = agent.buffer.stats()
                time.sleep(0.02)
        finally:
            agent.stop()
            agent.sampler.close()
            agent.buffer.close()

    def start(self) -> None:
        self._thread.start()

    def all_in_broker(self) -> bool:
        """Every sampled reading is in a message the broker has acknowledged (PUBACK), none waiting at the edge."""
        s = self.stats
        return s is not None and s.unformed == 0 and self.inflight == 0 and self.published >= s.formed > 0

    def drained(self) -> bool:
        s = self.stats
        return s is not None and s.depth == 0 and s.acked == len(self.want)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)


def stored_readings(world: World) -> dict[tuple[str, int], float]:
    rows = world.influx.query(f"SELECT value FROM reading WHERE device = '{DEVICE}' GROUP BY sensor")
    return {(r["sensor"], int(r["time"])): r["value"] for r in rows}


class ServiceUnderTest:
    """One long-running service in the kill test. Subclasses say how to load it, run it, and check the end."""

    name: ClassVar[str]

    def prepare(self, world: World) -> None:
        """Put the work in place (and start whatever feeds the service)."""

    def start(self, world: World) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def busy(self, world: World) -> bool:
        """True once the service is part-way through its work: the moment to kill it."""
        raise NotImplementedError

    def complete(self, world: World) -> bool:
        """True when all the work is done (checked right after the kill: it must not be, or nothing was tested)."""
        raise NotImplementedError

    def finish(self, world: World, proc: subprocess.Popen[bytes]) -> None:
        """Let the restarted service complete its work."""
        raise NotImplementedError

    def verify(self, world: World) -> None:
        raise NotImplementedError

    def close(self, world: World) -> None:
        """Release what ``prepare`` made."""


class Ingest(ServiceUnderTest):
    """MQTT → InfluxDB with end-to-end acks: every reading the edge sampled is stored, once, with its value."""

    name = "ingest"

    def prepare(self, world: World) -> None:
        # A small window of unacknowledged messages paces the edge by ingest's acks: the kill lands mid-stream.
        world.extra["pump"] = Pump(world, days=3, max_unacked_messages=20, max_inflight=10, live_reserve=2)
        world.extra["pump"].start()

    def start(self, world: World) -> subprocess.Popen[bytes]:
        return ingest_process(world)

    def busy(self, world: World) -> bool:
        return world.count(Measurement.READING) >= 1_000

    def complete(self, world: World) -> bool:
        return world.count(Measurement.READING) >= len(world.extra["pump"].want)

    def finish(self, world: World, proc: subprocess.Popen[bytes]) -> None:
        pump: Pump = world.extra["pump"]
        wait_until(pump.drained, 120, f"the edge's buffer to drain ({pump.stats})")
        wait_until(lambda: _status_pid(world, "ingest-faults") == proc.pid, 30, "the restarted ingest's status")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

    def verify(self, world: World) -> None:
        pump: Pump = world.extra["pump"]
        assert stored_readings(world) == pump.want
        assert world.count(Measurement.READING) == len(pump.want)

    def close(self, world: World) -> None:
        if "pump" in world.extra:
            world.extra["pump"].close()


class Analytics(ServiceUnderTest):
    """Readings → QC flags, checkpointed per hour of data: the flags after a kill and restart are exactly those of
    an uninterrupted run (same database content, computed again into a second database)."""

    name = "analytics"
    DAYS = 1

    def prepare(self, world: World) -> None:
        fleet = SimulatedFleet(world.manifest, SEED)
        start = day_start(self.DAYS + 1)
        world.extra["window"] = (start, start + self.DAYS * DAY_MS)
        place = world.manifest.device_index()[DEVICE]
        lines = []
        for r in fleet.device(DEVICE).truth(start, start + self.DAYS * DAY_MS):
            if math.isnan(r.value):
                continue
            lines.append(
                f"reading,city={place.city.id},site={place.site.id},device={DEVICE},sensor={r.sensor},"
                f'param={r.param} value={r.value!r},unit="x",seq={r.t_ms}i {r.t_ms}'
            )
        reference = InfluxV1(world.stack.config.influx_url, "reference")
        reference.create_database()
        for target in (world.influx, reference):
            for i in range(0, len(lines), 5_000):
                assert target.write_lines(lines[i : i + 5_000]).status_code == 204
        world.extra["readings"] = len(lines)
        world.extra["reference"] = reference
        # The uninterrupted run, into the reference database.
        done = self._command(world, "reference", world.tmp / "analytics-reference")
        assert done.wait(300) == 0

    def _command(
        self, world: World, database: str, state_dir: Path, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        start, end = world.extra["window"]
        env = {**world.env(), "PILOTWATCH_ANALYTICS_MAX_WINDOW_S": "3600"}
        with log.open("ab") if log is not None else open(os.devnull, "wb") as stderr:  # noqa: PTH123
            return subprocess.Popen(
                [
                    sys.executable, "-m", "commands.cli", "analytics", "run", "--since", iso(start),
                    "--until", iso(end), "--influx-url", world.stack.config.influx_url, "--database", database,
                    "--state-dir", str(state_dir),
                ],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip

    def start(self, world: World) -> subprocess.Popen[bytes]:
        return self._command(world, world.stack.config.database, world.tmp / "analytics")

    def busy(self, world: World) -> bool:
        return world.count(Measurement.QC) > 0

    def complete(self, world: World) -> bool:
        return world.count(Measurement.QC) >= int(world.extra["readings"])

    def finish(self, world: World, proc: subprocess.Popen[bytes]) -> None:
        assert proc.wait(300) == 0

    def verify(self, world: World) -> None:
        assert world.count(Measurement.QC) == world.extra["readings"]
        q = 'SELECT "flag", "label", "anomaly" FROM "qc" GROUP BY "sensor"'
        assert world.influx.query(q) == world.extra["reference"].query(q)

    def close(self, world: World) -> None:
        if "reference" in world.extra:
            world.extra["reference"].drop_database()
            world.extra["reference"].close()


SERVICES: list[type[ServiceUnderTest]] = [Ingest, Analytics]
"""Every long-running service; add the alert engine and the notifier here when they exist."""


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_kill_9_under_load_then_restart_loses_and_duplicates_nothing(
    world: World, service: type[ServiceUnderTest]
) -> None:
    under_test = service()
    proc: subprocess.Popen[bytes] | None = None
    try:
        under_test.prepare(world)
        proc = under_test.start(world)
        wait_until(lambda: under_test.busy(world), 120, f"{service.name} to be busy")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        assert not under_test.complete(world), "the kill came too late to interrupt anything"
        proc = under_test.start(world)
        under_test.finish(world, proc)
        under_test.verify(world)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        under_test.close(world)


def test_broker_restart_keeps_what_waits_for_ingest(world: World) -> None:
    """Ingest is down while the edge publishes; the broker restarts; ingest comes back. The edge re-sends nothing
    (its ack timeout is longer than the test), so every reading stored came out of the broker's persistence."""
    ingest = ingest_process(world, "ingest-persist")
    pump: Pump | None = None
    try:
        wait_until((world.tmp / "ingest" / "status-ingest-persist.json").exists, 30, "ingest to start")
        ingest.send_signal(signal.SIGTERM)  # its session (and subscription) stays in the broker
        assert ingest.wait(30) == 0
        pump = Pump(world, ack_timeout_s=3600.0)
        pump.start()
        wait_until(pump.all_in_broker, 60, "the broker to hold the edge's whole day")
        # A clean restart of the whole stack (SIGTERM: the broker writes its queues to disk, then starts from them).
        assert world.stack.down() == ["mosquitto", "influxd"]
        world.stack.up()
        ingest = ingest_process(world, "ingest-persist")
        wait_until(lambda: world.count(Measurement.READING) >= len(pump.want), 60, "the queued readings to land")
        assert stored_readings(world) == pump.want
        assert pump.resent == 0, "the edge re-sent: the test proved nothing about the broker's persistence"
    finally:
        if pump is not None:
            pump.close()
        if ingest.poll() is None:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)


def _status_pid(world: World, client_id: str) -> int | None:
    """The pid in ingest's status file: it is written once the process runs (and has its signal handlers)."""
    try:
        return int(json.loads((world.tmp / "ingest" / f"status-{client_id}.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.timeout(OUTAGE_S + 300)
def test_influxdb_outage_under_load_loses_nothing(world: World) -> None:
    """InfluxDB killed for ``OUTAGE_S`` seconds while the edge publishes a day of readings: ingest spools and
    retries, acknowledges only what is safe, and afterwards every reading is stored exactly once."""
    ingest = ingest_process(world, "ingest-outage")
    pump = Pump(world)
    try:
        pump.start()
        wait_until(lambda: world.count(Measurement.READING) >= 500, 60, "readings to flow")
        world.stack.stop_service("influxd")
        time.sleep(OUTAGE_S)
        world.stack.start_service("influxd")
        wait_until(pump.drained, 120 + OUTAGE_S, f"the edge's buffer to drain ({pump.stats})")
        # Acknowledged means safe, in InfluxDB or in ingest's disk spool; the spool drains into InfluxDB next.
        wait_until(lambda: world.count(Measurement.READING) >= len(pump.want), 60, "ingest's spool to drain")
        assert stored_readings(world) == pump.want
        assert world.count(Measurement.READING) == len(pump.want)
    finally:
        pump.close()
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(30)


def log_says(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


@pytest.mark.timeout(OUTAGE_S + 300)
def test_analytics_and_alert_engine_ride_through_an_influxdb_outage(world: World) -> None:
    """InfluxDB killed while analytics is part-way through a day of QC and the alert engine is passing: both stay
    up and say so, both carry on when it is back, and the flags are those of an uninterrupted run."""
    analytics = Analytics()
    proc: subprocess.Popen[bytes] | None = None
    engine: subprocess.Popen[bytes] | None = None
    analytics_log, engine_log = world.tmp / "analytics.log", world.tmp / "alerts.log"
    try:
        analytics.prepare(world)
        engine_env = {**world.env(), "PILOTWATCH_ALERTS_INTERVAL_S": "0.5"}
        with engine_log.open("ab") as log:
            engine = subprocess.Popen(
                [
                    sys.executable, "-m", "commands.cli", "alerts", "run", "--influx-url",
                    world.stack.config.influx_url, "--database", world.stack.config.database,
                    "--state-dir", str(world.tmp / "alerts"),
                ],
                cwd=REPO, env=engine_env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        proc = analytics._command(world, world.stack.config.database, world.tmp / "analytics", analytics_log)
        wait_until(lambda: analytics.busy(world), 120, "analytics to be busy")
        assert not analytics.complete(world), "the outage came too late to interrupt anything"
        world.stack.stop_service("influxd")
        for what, p, log_file in (("analytics", proc, analytics_log), ("the engine", engine, engine_log)):
            wait_until(
                lambda p=p, log_file=log_file: log_says(log_file, "InfluxDB unavailable") or p.poll() is not None,
                60,
                f"{what} to report the outage",
            )
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, analytics_log.read_text()
        assert engine.poll() is None, engine_log.read_text()
        world.stack.start_service("influxd")
        assert proc.wait(300) == 0, analytics_log.read_text()
        assert log_says(analytics_log, "InfluxDB is back")
        analytics.verify(world)
        wait_until(lambda: log_says(engine_log, "InfluxDB is back"), 120, "the engine to carry on")
        assert engine.poll() is None
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(30) == 0
    finally:
        for p in (proc, engine):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if not world.stack.status()["influxd"]["running"]:
            world.stack.start_service("influxd")  # so the failure shown is the test's, not the clean-up's
        analytics.close(world)
