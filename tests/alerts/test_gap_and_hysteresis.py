"""Hysteresis and outages on a real InfluxDB with the analytics service: a pH oscillating around its limit raises
one alert; a device silent for an hour raises one device alert, and the buffer it replays afterwards neither
resolves nor re-raises the firing limit alert."""

from __future__ import annotations

import math
import random
from pathlib import Path

from alerts.rules import RuleId
from alerts.service import AlertService
from alerts.settings import AlertSettings
from analytics.service import evaluate_window
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.schema import Measurement, line

HOUR = 3_600_000
STEP = 300_000
START = 1_772_409_600_000  # 2026-03-02 00:00 UTC
DEVICE = "bkk-pratunam-wq1"
TAGS = {"city": "bangkok", "site": "bkk-pratunam-pier", "device": DEVICE}
STEADY = {"temp": ("temperature", 30.0, 0.05), "do": ("do", 2.4, 0.04), "ec": ("conductivity", 650.0, 3.0),
          "turb": ("turbidity", 35.0, 0.8), "orp": ("orp", 60.0, 2.0)}  # fmt: skip


def readings(start: int, end: int, rnd: random.Random, do_mean: float | None = None) -> list[str]:
    out = []
    for t in range(start, end, STEP):
        # 9 ± 0.25 over two hours: above the limit (9.0, 9.18 with the guard band) half the time, never back
        # inside the clear band (8.55)
        ph = 9.0 + 0.25 * math.sin(2 * math.pi * (t - START) / (2 * HOUR)) + rnd.gauss(0, 0.01)
        out.append(line(Measurement.READING, {**TAGS, "sensor": "ph", "param": "ph"}, {"value": round(ph, 3)}, t))
        for sensor, (param, mean, sd) in STEADY.items():
            value = (do_mean if sensor == "do" and do_mean is not None else mean) + rnd.gauss(0, sd)
            out.append(line(Measurement.READING, {**TAGS, "sensor": sensor, "param": param}, {"value": value}, t))
    return out


def test_oscillation_one_alert_silence_one_alert_replay_changes_nothing(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    rnd = random.Random(5)
    clock = [START / 1000]
    settings = AlertSettings(influx={"url": influx.url, "database": influx.database}, state_dir=tmp_path / "alerts")
    assert influx.write_lines(readings(START, START + 8 * HOUR, rnd)).status_code == 204
    evaluate_window(manifest, influx.url, influx.database, START, START + 8 * HOUR, tmp_path / "qc")
    with AlertService(settings, manifest, clock=lambda: clock[0]) as engine:
        for minutes in range(15, 8 * 60 + 1, 15):  # a pass every 15 minutes of the first 8 hours
            clock[0] = (START + minutes * 60_000) / 1000
            engine.step()
        assert engine.store is not None
        alerts = engine.store.all_alerts()
        ph = [a for a in alerts if a["rule"] == "limit:th-surface-class4:ph"]
        assert len(ph) == 1, [(a["episode_ms"], a["resolved_ms"]) for a in ph]
        assert ph[0]["firing"]
        assert not [a for a in alerts if a["rule"] == RuleId.DEVICE_SILENT]

        # an hour with nothing arriving: passes go on
        for minutes in range(8 * 60 + 15, 9 * 60 + 30, 15):
            clock[0] = (START + minutes * 60_000) / 1000
            engine.step()
        silent = [a for a in engine.store.all_alerts() if a["rule"] == RuleId.DEVICE_SILENT]
        assert len(silent) == 1
        assert silent[0]["firing"]
        assert silent[0]["kind"] == "device"

        # the buffer comes in (the missing hour and on), QC runs, the engine goes on
        assert influx.write_lines(readings(START + 8 * HOUR, START + 10 * HOUR, rnd)).status_code == 204
        evaluate_window(manifest, influx.url, influx.database, START + 8 * HOUR, START + 10 * HOUR, tmp_path / "qc")
        for minutes in range(10 * 60, 10 * 60 + 16, 15):  # within 20 min of the newest reading
            clock[0] = (START + minutes * 60_000) / 1000
            engine.step()
        alerts = engine.store.all_alerts()
    silent = [a for a in alerts if a["rule"] == RuleId.DEVICE_SILENT]
    assert len(silent) == 1, [
        ((a["episode_ms"] - START) / HOUR, a["resolved_ms"] and (a["resolved_ms"] - START) / HOUR) for a in silent
    ]
    assert not silent[0]["firing"]
    ph = [a for a in alerts if a["rule"] == "limit:th-surface-class4:ph"]
    assert len(ph) == 1  # not resolved and re-raised by the gap
    assert ph[0]["firing"]
    assert ph[0]["resolved_ms"] is None
    assert not [a for a in alerts if a["kind"] == "pollution"]


def test_a_restart_replays_the_history_of_a_rolling_percentile(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    """Bangkok's DO limit is a 20th percentile (min 2.0 mg/L) over 30 days, counted once a day of data is in the
    window. A fresh engine reading only its 6 h window would never see a day; its first pass replays the DO
    history of the sites under that limit and decides on it, and a restart on the same store adds nothing."""
    end = START + 30 * HOUR
    assert influx.write_lines(readings(START, end, random.Random(6), do_mean=1.5)).status_code == 204
    evaluate_window(manifest, influx.url, influx.database, START, end, tmp_path / "qc")
    settings = AlertSettings(influx={"url": influx.url, "database": influx.database}, state_dir=tmp_path / "alerts")
    rule = "limit:th-surface-class4:do"
    for _ in range(2):
        with AlertService(settings, manifest, clock=lambda: end / 1000) as engine:
            engine.step()
            assert engine.store is not None
            do = [a for a in engine.store.all_alerts() if a["rule"] == rule]
        assert len(do) == 1
        assert do[0]["body"]["statistic"] == "p20"
        assert do[0]["body"]["window_days"] == 30
        assert do[0]["value"] < 2.0
        assert do[0]["fired_ms"] >= START + 24 * HOUR  # a day of data in the window first
