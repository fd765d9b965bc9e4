"""The demo's alert table, from readings QC'd by the analytics service in a real InfluxDB."""

from __future__ import annotations

import random
from pathlib import Path

from rich.console import Console

from alerts.demo import run_alerts_for_demo
from analytics.service import evaluate_window
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from tests.alerts.test_gap_and_hysteresis import HOUR, START, readings


def test_demo_table_counts_alerts_per_city_and_kind(influx: InfluxV1, manifest: Manifest, tmp_path: Path) -> None:
    assert influx.write_lines(readings(START, START + 6 * HOUR, random.Random(3))).status_code == 204
    evaluate_window(manifest, influx.url, influx.database, START, START + 6 * HOUR, tmp_path / "qc")
    console = Console(record=True, width=160)
    out = run_alerts_for_demo(
        manifest, influx.url, influx.database, tmp_path / "alerts", START, START + 6 * HOUR, console
    )
    assert out.by_city_kind[("bangkok", "limit_exceedance")] == 1  # the oscillating pH: one alert
    assert sum(v for (city, _), v in out.by_city_kind.items() if city != "bangkok") == 0
    text = console.export_text()
    assert "alerts per city and kind" in text
    assert "/inbox" in text
    bangkok = next(line for line in text.splitlines() if line.strip().startswith("│ Bangkok") or "Bangkok" in line)
    assert "1" in bangkok
    # the alerts are in InfluxDB for Grafana too
    assert len(influx.query("SELECT alert_id FROM alert")) == sum(out.by_city_kind.values())
