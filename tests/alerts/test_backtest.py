"""``pilotwatch alerts backtest --simulate --days 14 --seed 11`` on the default manifest: the issue's contract."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.backtest import backtest_history
from alerts.settings import AlertSettings
from analytics.service import evaluate_window
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from tests.alerts.test_gap_and_hysteresis import HOUR, START, readings

ROOT = Path(__file__).resolve().parents[2]
FINAL = re.compile(
    r"^backtest: events (\d+) caught (\d+) \(recall ([0-9.]+|nan)\) · false alerts (\d+) \(per week ([0-9.]+)\) · "
    r"alerts on sensor faults (\d+) · median delay ([0-9]+|nan) s$"
)


def test_simulated_backtest_catches_pollution_and_never_alerts_city_staff_on_faults() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "alerts", "backtest", "--simulate", "--days", "14", "--seed", "11"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    match = FINAL.match(lines[-1])
    assert match, f"last line is not the contract line: {lines[-1]!r}"
    events, caught, recall, false, per_week, on_faults, delay = match.groups()
    assert int(events) >= 20  # the default manifest's 14 days hold that many discharges
    assert int(caught) / int(events) == float(recall) or abs(int(caught) / int(events) - float(recall)) < 0.006
    assert float(recall) >= 0.9
    assert int(on_faults) == 0
    assert abs(float(per_week) - int(false) / 2.0) < 0.006
    assert 0 < float(delay) < 3600
    # the per-rule table names every city alert kind with its own figures
    table = "\n".join(lines)
    for rule in ("pollution", "limit", "device.sensor_fault", "bin.full"):
        assert re.search(rf"^{re.escape(rule)}\s", table, re.MULTILINE), rule


def test_backtest_refuses_an_ambiguous_source() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "alerts", "backtest"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "give either --simulate" in done.stderr


def test_history_backtest_reads_stored_qc_and_sends_nothing(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    assert influx.write_lines(readings(START, START + 6 * HOUR, random.Random(4))).status_code == 204
    evaluate_window(manifest, influx.url, influx.database, START, START + 6 * HOUR, tmp_path / "qc")
    score = backtest_history(manifest, influx, START - 1, START + 6 * HOUR)
    assert score.rows[("limit", "bangkok")].alerts == 1
    assert not score.has_truth
    assert "limit" in "\n".join(score.table())
    assert influx.query("SELECT * FROM alert") == []  # a backtest writes no alert anywhere the live system reads


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PILOTWATCH_ALERTS_INFLUX__URL", "http://influxdb:8086")
    monkeypatch.setenv("PILOTWATCH_ALERTS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PILOTWATCH_ALERTS_RULES__BIN_FULL_PCT", "85")
    s = AlertSettings()
    assert (s.influx.url, s.store_path, s.rules.bin_full_pct) == (
        "http://influxdb:8086",
        tmp_path / "alerts.sqlite",
        85,
    )
    with pytest.raises(ValidationError, match="influx url must start with http"):
        AlertSettings(influx={"url": "influxdb:8086"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AlertSettings(intervall_s=5)  # type: ignore[call-arg]
