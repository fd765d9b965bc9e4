"""The analytics service as deployed: settings from the environment, QC from the manifest, device health from
``device_status``, a checkpoint file, late data from an edge buffer, and ``pilotwatch analytics run`` — against
a real influxd, compared with a batch run of the same configuration over the same readings."""

from __future__ import annotations

import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from analytics.labels import LABEL_NAMES, Label
from analytics.pipeline import evaluate_site
from analytics.service import AnalyticsService, RunReport, check_streamable, evaluate_window, sensor_qc
from analytics.settings import AnalyticsSettings
from commands.cli import main as pilotwatch_main
from firmware_sim.fleet import SimulatedFleet, TruthRow
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.qc_config import FlatLine, GrossRange, ParameterQC, QCConfig
from pilotwatch.schema import line

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START_MS = 1_772_409_600_000  # 2026-03-02T00:00Z, inside the pilots' baseline period
DEVICE = "bkk-pratunam-wq1"
LOW_BATTERY = (START_MS + 30 * HOUR_MS, START_MS + 31 * HOUR_MS)  # a brown-out the status reports


def test_settings_from_the_deployment_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX__URL", "http://influxdb:8086")
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX__DATABASE", "city")
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX__TOKEN", "s3cret")
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INTERVAL_S", "30")
    s = AnalyticsSettings()
    assert (s.influx.url, s.influx.database, s.state_dir, s.interval_s) == (
        "http://influxdb:8086",
        "city",
        tmp_path,
        30,
    )
    assert s.influx.token is not None
    assert s.influx.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    with pytest.raises(ValidationError, match="influx url must start with http"):
        AnalyticsSettings(influx={"url": "influxdb:8086"})
    with pytest.raises(ValidationError, match="must cover agreement_window_s"):
        AnalyticsSettings(late_window_s=600)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AnalyticsSettings(intervall_s=5)  # type: ignore[call-arg]


def test_manifest_qc_with_defaults_from_the_valid_range(manifest: Manifest) -> None:
    sensor = manifest.device_index()[DEVICE].device.sensor("turb")
    assert sensor is not None
    bare = sensor.model_copy(update={"qc": ParameterQC()})
    qc = sensor_qc(bare)
    assert qc.qartod.gross_range == GrossRange(fail_span=sensor.valid_range)
    assert qc.qartod.flat_line == FlatLine(suspect_threshold=43_200, fail_threshold=86_400, tolerance=1e-9)
    assert qc.detectors.configured() == {}
    # What the manifest says is kept as it is.
    assert sensor_qc(sensor).qartod.gross_range == (sensor.qc.qartod.gross_range or qc.qartod.gross_range)
    long_flat = ParameterQC.model_validate({"qartod": {"flat_line": {"suspect_threshold": 1, "fail_threshold": 2e5}}})
    with pytest.raises(ValueError, match="longer than the service's context"):
        check_streamable(long_flat, 86_400, "d/s")
    whole = ParameterQC.model_validate(
        {"qartod": {"attenuated_signal": {"suspect_threshold": 1, "fail_threshold": 0.5}}}
    )
    with pytest.raises(ValueError, match="needs a test_period"):
        check_streamable(whole, 86_400, "d/s")


def _rows(manifest: Manifest, days: int) -> list[TruthRow]:
    fleet = SimulatedFleet(manifest, seed=5)
    return [r for r in fleet.truth(START_MS, START_MS + days * DAY_MS, devices=[DEVICE]) if math.isfinite(r.value)]


def _reading_lines(manifest: Manifest, rows: list[TruthRow]) -> list[str]:
    place = manifest.device_index()[DEVICE]
    tags = {"city": place.city.id, "site": place.site.id, "device": DEVICE}
    return [
        line("reading", {**tags, "sensor": r.sensor, "param": r.param}, {"value": r.value, "seq": i}, r.t_ms)
        for i, r in enumerate(rows)
    ]


def _status_lines(manifest: Manifest, days: int) -> list[str]:
    place = manifest.device_index()[DEVICE]
    tags = {"city": place.city.id, "site": place.site.id, "device": DEVICE}
    out = []
    for t in range(START_MS, START_MS + days * DAY_MS, HOUR_MS):
        battery = 2.0 if LOW_BATTERY[0] <= t < LOW_BATTERY[1] else 95.0
        out.append(line("device_status", tags, {"state": "online", "battery_pct": battery}, t))
    return out


def _batch(manifest: Manifest, rows: list[TruthRow]) -> tuple[np.ndarray, dict[str, np.ndarray], object]:
    times = np.array(sorted({r.t_ms for r in rows}), dtype=np.int64)
    index = {t: i for i, t in enumerate(times)}
    values: dict[str, np.ndarray] = {}
    for r in rows:
        values.setdefault(r.sensor, np.full(times.shape[0], np.nan))[index[r.t_ms]] = r.value
    device = manifest.device_index()[DEVICE].device
    cfg = QCConfig(parameters={s.id: sensor_qc(s) for s in device.sensors})
    # The status each reading falls under (hourly statuses from START_MS): low inside LOW_BATTERY.
    ok = ~((times >= LOW_BATTERY[0]) & (times < LOW_BATTERY[1]))
    kinds = {s.id: s.param.value for s in device.sensors}
    site_kind = manifest.device_index()[DEVICE].site.kind.value
    result = evaluate_site(values, times.astype("datetime64[ms]"), cfg, device_ok=ok, kinds=kinds, site_kind=site_kind)
    return times, values, result


def test_late_data_restart_and_batch_equality(influx: InfluxV1, manifest: Manifest, tmp_path: Path) -> None:
    days = 3
    rows = _rows(manifest, days)
    # An edge buffer holds hours 44-47 back (a 4G outage) and delivers them with the next window.
    held = [r for r in rows if START_MS + 44 * HOUR_MS <= r.t_ms < START_MS + 47 * HOUR_MS]
    first = [r for r in rows if r.t_ms < START_MS + 2 * DAY_MS and r not in held]
    rest = [r for r in rows if r.t_ms >= START_MS + 2 * DAY_MS]
    assert influx.write_lines(_status_lines(manifest, days)).status_code == 204
    assert influx.write_lines(_reading_lines(manifest, first)).status_code == 204
    state = tmp_path / "state"
    url, db = influx.url, influx.database

    one = evaluate_window(manifest, url, db, START_MS, START_MS + 2 * DAY_MS, state)
    assert (state / "qc_state.json").is_file()
    assert one.points_written >= len(first)
    assert one.late_points == 0
    assert one.passes == 2  # two days in steps of max_window_s (one day)

    assert influx.write_lines(_reading_lines(manifest, held + rest)).status_code == 204
    # A new service process: it resumes from the checkpoint, not from scratch.
    two = evaluate_window(manifest, url, db, START_MS + 2 * DAY_MS, START_MS + days * DAY_MS, state)
    assert two.late_points == len(held)
    assert two.too_late == 0

    times, values, batch = _batch(manifest, rows)
    got = {(r["sensor"], int(r["time"])): r for r in influx.query("SELECT * FROM qc GROUP BY sensor")}
    assert len(got) == len(rows)
    labels: Counter[str] = Counter()
    for sensor, res in batch.parameters.items():  # type: ignore[attr-defined]
        for i in np.flatnonzero(np.isfinite(values[sensor])):
            row = got[(sensor, int(times[i]))]
            assert row["flag"] == res.flag[i], (sensor, i)
            for test, flags in res.tests.items():
                assert row[test] == flags[i], (sensor, i, test)
            assert row["anomaly_score"] == pytest.approx(res.score[i], rel=1e-9, abs=1e-12), (sensor, i)
            assert row["label"] == LABEL_NAMES[Label(int(res.label[i]))], (sensor, i)
            labels[row["label"]] += 1
    # The brown-out hour's readings are faults, whatever the values say.
    low = [r for (s, t), r in got.items() if LOW_BATTERY[0] <= t < LOW_BATTERY[1]]
    assert low
    assert all(r["label"] == "fault" for r in low)
    # The reports count each reading once. A window's last late_window is provisional: here the held-back
    # hours re-labelled some of the readings around them, so only the totals and the second window compare.
    assert sum(one.labels.values()) + sum(two.labels.values()) == len(rows)
    assert sum(one.flags.values()) + sum(two.flags.values()) == len(rows)
    second = [r for (_, t), r in got.items() if t >= START_MS + 2 * DAY_MS]
    held_times = {r.t_ms for r in held}
    second += [r for (_, t), r in got.items() if t in held_times]
    assert two.labels == Counter(r["label"] for r in second)
    assert two.flags == Counter(int(r["flag"]) for r in second)
    assert two.anomalies == sum(int(r["anomaly"]) for r in second)
    assert sum(labels.values()) == len(rows)


def test_cli_run_once_and_window(
    influx: InfluxV1,
    manifest: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = _rows(manifest, 1)
    assert influx.write_lines(_reading_lines(manifest, rows)).status_code == 204
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX__URL", influx.url)
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX__DATABASE", influx.database)
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_STATE_DIR", str(tmp_path / "state"))
    code = pilotwatch_main(
        ["analytics", "run", "--since", "2026-03-02T00:00:00Z", "--until", "2026-03-02T12:00:00Z", "--json"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert '"points_written"' in out
    half = influx.count("qc", "flag")
    assert half == sum(1 for r in rows if r.t_ms < START_MS + 12 * HOUR_MS)
    # --once continues from the checkpoint up to now: the rest of the day is evaluated too.
    assert pilotwatch_main(["analytics", "run", "--once"]) == 0
    assert influx.count("qc", "flag") == len(rows)
    assert pilotwatch_main(["analytics", "run", "--until", "2026-03-02T00:00:00Z"]) == 2
    # The loop (what `pilotwatch analytics run` runs until SIGTERM) from the same checkpoint: nothing new.
    stop = threading.Event()
    reports: list[RunReport] = []

    def once(report: RunReport) -> None:
        reports.append(report)
        stop.set()

    assert AnalyticsService(AnalyticsSettings(), manifest).run_forever(stop, on_pass=once) == 0
    assert reports[0].late_points == 0
    assert influx.count("qc", "flag") == len(rows)


def test_service_refuses_a_bad_neighbour(manifest: Manifest, tmp_path: Path) -> None:
    data = manifest.model_dump(mode="json")
    sensor = data["cities"][0]["sites"][0]["devices"][0]["sensors"][2]
    sensor["qc"] = {"qartod": {"neighbor": {"reference": "do_backup", "suspect_threshold": 1}}}
    bad = Manifest.model_validate(data)
    with pytest.raises(ValueError, match="neighbor reference 'do_backup' is not a sensor of the same device"):
        AnalyticsService(AnalyticsSettings(state_dir=tmp_path), bad)
