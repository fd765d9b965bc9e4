"""The reconciliation pass against a real influxd: readings that arrive later than the live pass's late window (an
edge buffer replayed after a day offline) get exactly one ``qc`` point, marked ``late``, with the QARTOD flags a
batch run gives; the verdicts already written stay byte for byte; a second pass writes nothing; a ``kill -9`` of
``pilotwatch analytics run`` mid-backfill, then a restart, ends with the same points as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alerts.source import read_points
from analytics.pipeline import evaluate_site
from analytics.service import AnalyticsService, sensor_qc
from analytics.settings import AnalyticsSettings
from commands.stack import LocalStack
from firmware_sim.fleet import SimulatedFleet, TruthRow
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.outage import Outage, OutageEvent
from pilotwatch.qc_config import QCConfig
from pilotwatch.schema import QC_TEST_FIELDS, QartodFlag, line
from pilotwatch.settings import InfluxConnection
from tests.analytics.test_firmware_sim import pivot

REPO = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START_MS = 1_772_409_600_000  # 2026-03-02T00:00Z
DEVICE = "bkk-pratunam-wq1"  # six sensors every 300 s
LATE = (START_MS + 40 * HOUR_MS, START_MS + 70 * HOUR_MS)  # 30 h held by the edge, delivered a day late
NOW_MS = START_MS + 96 * HOUR_MS
GROSS_AT = LATE[0] + 5 * HOUR_MS  # pH beyond the probe's valid range: gross range FAIL
SPIKE_AT = LATE[0] + 20 * HOUR_MS  # one temperature reading 8 °C off its neighbours: spike


def _rows(manifest: Manifest, start_ms: int, end_ms: int) -> list[TruthRow]:
    rows = SimulatedFleet(manifest, seed=5).truth(start_ms, end_ms, devices=[DEVICE])
    out = []
    for r in rows:
        if not math.isfinite(r.value):
            continue
        value = r.value
        if r.t_ms == GROSS_AT and r.sensor == "ph":
            value = 14.5
        if r.t_ms == SPIKE_AT and r.sensor == "temp":
            value = r.value + 8.0
        out.append(dataclasses.replace(r, value=value))
    return out


def _lines(manifest: Manifest, rows: list[TruthRow]) -> list[str]:
    place = manifest.device_index()[DEVICE]
    tags = {"city": place.city.id, "site": place.site.id, "device": DEVICE}
    return [
        line("reading", {**tags, "sensor": r.sensor, "param": r.param}, {"value": r.value, "seq": i}, r.t_ms)
        for i, r in enumerate(rows)
    ]


def _write(influx: InfluxV1, lines: list[str]) -> None:
    for i in range(0, len(lines), 5_000):
        assert influx.write_lines(lines[i : i + 5_000]).status_code == 204


def _qc(influx: InfluxV1) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["sensor"], int(r["time"])): r for r in influx.query("SELECT * FROM qc GROUP BY sensor")}


def _service(
    influx: InfluxV1, manifest: Manifest, state: Path, clock: Callable[[], float], **settings: Any
) -> AnalyticsService:
    config = AnalyticsSettings(
        influx=InfluxConnection(url=influx.url, database=influx.database),
        state_dir=state,
        start_lookback_s=5 * 86_400,
        **settings,
    )
    return AnalyticsService(config, manifest, clock=clock)


def test_late_readings_get_one_qc_point_each_with_batch_qartod_flags(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    rows = _rows(manifest, START_MS, START_MS + 88 * HOUR_MS)
    on_time = [r for r in rows if not LATE[0] <= r.t_ms < LATE[1]]
    late = [r for r in rows if LATE[0] <= r.t_ms < LATE[1]]
    _write(influx, _lines(manifest, on_time))
    now = [NOW_MS / 1000]
    with _service(influx, manifest, tmp_path / "state", lambda: now[0], reconcile_max_hours=24) as service:
        first = service.step()
        assert first.backfilled == 0
        assert first.backfill_pending_hours == 0
        before = _qc(influx)
        assert len(before) == len(on_time)

        _write(influx, _lines(manifest, late))
        now[0] += 60  # the next live pass, inside the reconcile interval: nothing back-filled yet
        live = service.step()
        # The live pass sees only the late readings inside its re-read context, and cannot QC them.
        assert 0 < live.too_late < len(late)
        assert live.backfilled == 0
        assert len(_qc(influx)) == len(on_time)

        now[0] += 600
        one = service.step()
        assert one.backfill_pending_hours == 6  # 30 h short, 24 h a pass, oldest first
        assert 0 < one.backfilled < len(late)
        now[0] += 600
        two = service.step()
        assert two.backfill_pending_hours == 0
        assert one.backfilled + two.backfilled == len(late)
        now[0] += 600
        three = service.step()
        assert (three.backfilled, three.backfill_pending_hours) == (0, 0)

    after = _qc(influx)
    assert set(after) == {(r.sensor, r.t_ms) for r in rows}
    assert influx.count("qc", "flag") == len(rows)  # exactly one point per reading
    # Live verdicts untouched, field for field (SELECT * now also shows the late column, empty on them).
    assert all(after[k].pop("late") is None for k in before)
    assert {k: after[k] for k in before} == before
    late_keys = {(r.sensor, r.t_ms) for r in late}
    assert all(after[k]["late"] == 1 for k in late_keys)

    # QARTOD flags equal a batch run over all the readings (detector scores may differ: the back-fill scores
    # with the detectors' state of now, a batch with the state of then).
    times, values, _truth, _kinds = pivot(rows)
    device = manifest.device_index()[DEVICE].device
    cfg = QCConfig(parameters={s.id: sensor_qc(s) for s in device.sensors})
    batch = evaluate_site(values, times.astype("datetime64[ms]"), cfg)
    compared = 0
    for sensor, t in late_keys:
        got, res, i = after[(sensor, t)], batch.parameters[sensor], int(np.searchsorted(times, t))
        for test in QC_TEST_FIELDS:
            if test in res.tests:
                assert got[test] == res.tests[test][i], (sensor, t, test)
                compared += 1
        if not cfg.parameters[sensor].detectors.configured().keys() & {"fouling"}:
            assert got["flag"] == res.flag[i], (sensor, t)
    assert compared >= 4 * len(late)
    assert after[("ph", GROSS_AT)]["gross_range"] == QartodFlag.FAIL
    assert after[("ph", GROSS_AT)]["flag"] == QartodFlag.FAIL
    assert after[("temp", SPIKE_AT)]["spike"] >= QartodFlag.SUSPECT

    # The alert engine's input leaves the late verdicts out (docs/alerts.md): the pH FAIL above raises nothing.
    seen = {(p.sensor, p.t_ms) for p in read_points(influx, LATE[0] - 2 * HOUR_MS, LATE[1] + 2 * HOUR_MS)}
    assert seen == {(r.sensor, r.t_ms) for r in on_time if LATE[0] - 2 * HOUR_MS < r.t_ms <= LATE[1] + 2 * HOUR_MS}


def _count(influx: InfluxV1) -> int:
    return influx.count("qc", "flag")


def test_kill_9_mid_backfill_converges_to_an_uninterrupted_run(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    base = int(time.time() * 1000) // HOUR_MS * HOUR_MS - 3 * DAY_MS
    truth = SimulatedFleet(manifest, seed=5).truth(base, base + 2 * DAY_MS, devices=[DEVICE])
    rows = [r for r in truth if math.isfinite(r.value)]
    held = (base + 30 * HOUR_MS, base + 42 * HOUR_MS)
    late = [r for r in rows if held[0] <= r.t_ms < held[1]]
    on_time = [r for r in rows if not held[0] <= r.t_ms < held[1]]
    reference = InfluxV1(influx.url, influx.database + "_ref")
    reference.create_database()
    try:
        for db, state in ((influx, tmp_path / "state"), (reference, tmp_path / "ref")):
            _write(db, _lines(manifest, on_time))
            with _service(db, manifest, state, time.time, reconcile_interval_s=0) as service:
                service.step()
            _write(db, _lines(manifest, late))
        with _service(reference, manifest, tmp_path / "ref", time.time) as service:
            assert service.step().backfilled == len(late)
        want = _qc(reference)

        env = {
            **os.environ,
            "PILOTWATCH_ANALYTICS_INFLUX__URL": influx.url,
            "PILOTWATCH_ANALYTICS_INFLUX__DATABASE": influx.database,
            "PILOTWATCH_ANALYTICS_STATE_DIR": str(tmp_path / "state"),
            "PILOTWATCH_ANALYTICS_INTERVAL_S": "0.3",
            "PILOTWATCH_ANALYTICS_RECONCILE_INTERVAL_S": "0.1",
            "PILOTWATCH_ANALYTICS_RECONCILE_MAX_HOURS": "1",
        }
        command = [sys.executable, "-m", "commands.cli", "analytics", "run"]
        log = tmp_path / "analytics.log"

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as err:  # the child keeps its own descriptor
                return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)

        proc = start()
        try:
            deadline = time.monotonic() + 60
            while _count(influx) == len(on_time):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the back-fill never started"
                time.sleep(0.05)
            proc.kill()
            proc.wait(10)
            assert _count(influx) < len(rows), "the kill came too late to interrupt the back-fill"
            proc = start()
            deadline = time.monotonic() + 60
            while _count(influx) < len(rows):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"the back-fill stalled at {_count(influx)} of {len(rows)}"
                time.sleep(0.1)
            time.sleep(1.0)  # a few more passes: nothing more may be written
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert _count(influx) == len(rows)
        assert _qc(influx) == want
    finally:
        reference.drop_database()
        reference.close()


def test_reconciliation_rides_through_an_influxdb_outage(
    private_stack: LocalStack, manifest: Manifest, tmp_path: Path
) -> None:
    """influxd stopped just as the reconciliation asks its first count (the live pass done): the pass waits, tries
    again when influxd is back, and back-fills every late reading once."""
    influx = InfluxV1(private_stack.config.influx_url, private_stack.config.database)
    rows = _rows(manifest, START_MS, START_MS + 88 * HOUR_MS)
    late = [r for r in rows if LATE[0] <= r.t_ms < LATE[1]]
    _write(influx, _lines(manifest, [r for r in rows if not LATE[0] <= r.t_ms < LATE[1]]))
    now = [NOW_MS / 1000]
    with _service(influx, manifest, tmp_path / "state", lambda: now[0]) as service:
        service.step()
    _write(influx, _lines(manifest, late))

    outage = threading.Event()

    class GoesAway(InfluxV1):
        """The real client; the first reconciliation query stops the real influxd (back 1 s later)."""

        def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]:
            if "count(" in q and not outage.is_set():
                outage.set()
                private_stack.stop_service("influxd")
                threading.Timer(1.0, private_stack.start_service, ("influxd",)).start()
            return super().query(q, epoch)

    events: list[OutageEvent] = []
    settings = AnalyticsSettings(
        influx=InfluxConnection(url=influx.url, database=influx.database),
        state_dir=tmp_path / "state",
        reconcile_max_hours=48,
    )
    service = AnalyticsService(
        settings,
        manifest,
        clock=lambda: now[0] + 600,
        client_factory=lambda s: GoesAway(s.influx.url, s.influx.database),
        on_outage=events.append,
    )
    with service:
        report = service.step()
    assert outage.is_set()
    assert [e for e in events if isinstance(e, Outage)], "the reconciliation never met the outage"
    assert report.backfilled == len(late)
    assert influx.count("qc", "flag") == len(rows)
    influx.close()
