"""``pilotwatch alerts backtest --simulate --days 14 --seed 11`` on the default manifest: the issue's contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FINAL = re.compile(
    r"^backtest: events (\d+) caught (\d+) \(recall ([0-9.]+|nan)\) · false alerts (\d+) \(per week ([0-9.]+)\) · "
    r"alerts on sensor faults (\d+) · median delay ([0-9]+|nan) s$"
)


def test_simulated_backtest_catches_pollution_and_never_alerts_city_staff_on_faults() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pilotwatch.cli", "alerts", "backtest", "--simulate", "--days", "14", "--seed", "11"],
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
        [sys.executable, "-m", "pilotwatch.cli", "alerts", "backtest"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "give either --simulate" in done.stderr
