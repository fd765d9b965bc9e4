"""The alert engine on the real stack: simulated devices → edge agents → Mosquitto → ingest → InfluxDB →
analytics (qc) → alert engine, as ``pilotwatch alerts run`` runs it, killed with SIGKILL mid-episode.

Scenario (seed 18, Melaka's Kampung Morten site, 30 h from 2026-03-02 00:00 UTC): a sewage discharge starts at
18.8 h; the dissolved-oxygen probe is stuck (flat line) from 4 h to 12 h. Expected: one pollution alert for
Melaka fired within the event; one device alert for the stuck probe and no limit or pollution alert citing its
readings while it was stuck; after a kill -9 of the engine during the discharge and a restart, exactly the
alerts of an uninterrupted run, each once.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.service import AlertService
from alerts.settings import AlertSettings
from analytics.service import evaluate_window
from commands.stack import LocalStack
from firmware_sim.agents import run_fleet
from firmware_sim.fleet import SimulatedFleet
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, parse_manifest
from tests.conftest import DEFAULT_MANIFEST
from tests.ingest.conftest import forget_session

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
START = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
SPLIT = START + 20 * HOUR  # inside the discharge
END = START + 30 * HOUR
SEED = 18
DEVICE, SITE = "mlk-morten-wq1", "mlk-kampung-morten"
STUCK = (START + 4 * HOUR, START + 12 * HOUR)


def scenario_manifest(kind: str, window: tuple[int, int], **fault: Any) -> dict[str, Any]:
    """Melaka's Kampung Morten alone, no random faults, and one fault of ``kind`` on its DO probe over ``window``."""
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    raw["cities"] = [c for c in raw["cities"] if c["id"] == "melaka"]
    city = raw["cities"][0]
    city["sites"] = [s for s in city["sites"] if s["id"] == SITE]
    city["sites"][0]["simulation"] = {
        **city["sites"][0].get("simulation", {}),
        "fault_rate_per_week": 0.0,
        "faults": [
            {
                "device": DEVICE,
                "sensor": "do",
                "kind": kind,
                "start": dt.datetime.fromtimestamp(window[0] / 1000, dt.UTC).isoformat(),
                "hours": (window[1] - window[0]) / HOUR,
                **fault,
            }
        ],
    }
    return raw


def deliver(stack: LocalStack, influx: InfluxV1, manifest: Manifest, tmp: Path, start: int, end: int) -> None:
    """Sample, publish, ingest and QC ``[start, end)``."""
    # A group and a session of its own: the session stack's broker would otherwise keep queuing a share of every
    # later test's readings for this worker's persistent session after it stopped.
    settings = IngestSettings.for_local_stack(
        stack.config, tmp / "ingest", "alerts-ingest", database=influx.database, share_group="alerts"
    )
    ingest = IngestService(settings, manifest)
    ingest.start()
    try:
        ingest.wait_connected(30)
        counts = run_fleet(manifest, stack.config.host, stack.config.mqtt_port, tmp / "edge", start, end, SEED)
        assert all(c.held == 0 for c in counts.values())
    finally:
        ingest.stop()
        forget_session(stack.config.host, stack.config.mqtt_port, settings.client_id)
    evaluate_window(manifest, influx.url, influx.database, start, end, tmp / "analytics")


def engine_env(influx: InfluxV1, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PILOTWATCH_ALERTS_INFLUX__URL": influx.url,
        "PILOTWATCH_ALERTS_INFLUX__DATABASE": influx.database,
        "PILOTWATCH_ALERTS_STATE_DIR": str(state),
        "PILOTWATCH_ALERTS_READ_WINDOW_S": str(400 * 86_400),  # the scenario lies in the past
        "PILOTWATCH_ALERTS_INTERVAL_S": "0.2",
    }


def alerts_in(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM alerts ORDER BY rule, series, episode_ms")]


def wait_for(path: Path, rule: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            try:
                if any(a["rule"] == rule for a in alerts_in(path)):
                    return
            except sqlite3.OperationalError:
                pass  # the engine is still creating its tables
        time.sleep(0.1)
    pytest.fail(f"no {rule} alert in {path} after {timeout_s} s")


def test_pollution_stuck_probe_and_kill_9_on_the_real_stack(
    stack: LocalStack, influx: InfluxV1, tmp_path: Path
) -> None:
    raw = scenario_manifest("flat_line", STUCK)
    manifest = parse_manifest(raw, "scenario")
    manifest_file = tmp_path / "manifest.yaml"
    manifest_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    event = next(
        e for e in SimulatedFleet(manifest, SEED).sites[SITE].events_between(START, END) if e.kind == "sewage_discharge"
    )
    assert event.start_ms + HOUR < SPLIT

    # the first 20 h: then the engine runs as `pilotwatch alerts run` and is killed once it has fired
    deliver(stack, influx, manifest, tmp_path, START, SPLIT)
    state = tmp_path / "engine"
    cmd = [sys.executable, "-m", "commands.cli", "--manifest", str(manifest_file), "alerts", "run"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=engine_env(influx, state), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(state / "alerts.sqlite", "pollution")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()

    # the rest of the discharge arrives; the engine restarts
    deliver(stack, influx, manifest, tmp_path, SPLIT, END)
    done = subprocess.run(
        [*cmd, "--once"],
        cwd=ROOT,
        env=engine_env(influx, state),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = alerts_in(state / "alerts.sqlite")

    # an uninterrupted engine over the same data decides the same alerts
    clean_settings = AlertSettings(
        influx={"url": influx.url, "database": influx.database},
        state_dir=tmp_path / "clean",
        read_window_s=400 * 86_400,
    )
    with AlertService(clean_settings, manifest) as clean:
        clean.step()
    expected = alerts_in(clean_settings.store_path)
    key = ("alert_id", "rule", "series", "episode_ms", "fired_ms")

    def decided(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        # device.silent is measured against the wall clock, and this scenario lies in the past: the killed
        # engine rightly saw the device fall silent after the first 20 h; that alert is not the data's.
        return [tuple(a[k] for k in key) for a in alerts if a["rule"] != "device.silent"]

    assert decided(got) == decided(expected)
    assert len(decided(got)) >= 4
    assert len({a["alert_id"] for a in got}) == len(got)
    with sqlite3.connect(state / "alerts.sqlite") as conn:
        fired = [r[0] for r in conn.execute("SELECT alert_id FROM alert_transitions WHERE transition = 'fired'")]
    assert sorted(fired) == sorted(a["alert_id"] for a in got)

    # one pollution alert, for Melaka, fired during the discharge, after the rule's duration held
    pollution = [a for a in got if a["kind"] == "pollution"]
    assert len(pollution) == 1
    (p,) = pollution
    assert (p["city"], p["site"]) == ("melaka", SITE)
    assert event.start_ms <= p["episode_ms"] <= p["fired_ms"] <= event.end_ms
    assert p["fired_ms"] - p["episode_ms"] >= 300_000

    # the stuck probe: a device alert, and no city alert that cites its readings while it was stuck
    stuck = [a for a in got if a["rule"] == "device.sensor_fault" and a["sensor"] == "do"]
    assert len(stuck) == 1
    assert STUCK[0] <= stuck[0]["fired_ms"] <= STUCK[1]
    for a in got:
        if a["kind"] in ("pollution", "limit_exceedance"):
            cited = [r for r in json.loads(a["body"])["readings"] if r["sensor"] == "do"]
            assert not [r for r in cited if STUCK[0] <= r["t_ms"] < STUCK[1]], a["rule"]

    # the alerts are in InfluxDB too, one point per alert, for Grafana
    # (the clean run above wrote to the same database: same alert, same point)
    rows = influx.query("SELECT alert_id, status, kind FROM alert")
    in_influx = [r["alert_id"] for r in rows]
    assert len(in_influx) == len(set(in_influx))
    assert set(in_influx) == {a["alert_id"] for a in got} | {a["alert_id"] for a in expected}
    status = {r["alert_id"]: r["status"] for r in rows}
    assert all(status[a["alert_id"]] == a["status"] for a in got)
