"""The simulated alert backtest: the manifest's simulated fleet through the analytics core and the alert engine,
scored against the simulator's ground truth (``pilotwatch alerts backtest --simulate``).

It lives in the command layer because it composes three services: :mod:`firmware_sim` makes the readings and the
truth, the analytics core's public functions give each reading its verdict exactly as the live service does
(:func:`analytics.pipeline.evaluate_parameter` per series, :func:`analytics.labels.label_site` per site), and the
alert engine (:func:`alerts.backtest.replay`) decides; :func:`alerts.backtest.score_simulated` scores.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.backtest import STATUS_EVERY_MS, Score, Truth, TruthKey, default_start, replay, score_simulated
from alerts.engine import Engine
from alerts.rules import Point, RuleConfig, Status
from alerts.store import AlertStore
from analytics.labels import LABEL_NAMES, SIGNATURES, Label, label_site
from analytics.pipeline import evaluate_parameter
from analytics.service import sensor_qc
from analytics.settings import AnalyticsSettings
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.manifest import Manifest
from pilotwatch.schema import QartodFlag


def simulate_points(
    manifest: Manifest, seed: int, start_ms: int, end_ms: int, warmup_ms: int = 86_400_000
) -> tuple[list[Point], list[Status], dict[TruthKey, Truth], Any]:
    """The fleet's readings with the analytics core's verdict, status points, and the ground truth."""
    fleet = SimulatedFleet(manifest, seed)
    low_battery = AnalyticsSettings().low_battery_pct
    points: list[Point] = []
    statuses: list[Status] = []
    truth: dict[TruthKey, Truth] = {}
    arrival: dict[tuple[str, str, int], int] = {}
    for city, site in manifest.iter_sites():
        series: dict[str, tuple[Any, Any, npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        times: npt.NDArray[np.int64]
        for device in site.devices:
            sim = fleet.device(device.id)
            for st in range(start_ms - start_ms % STATUS_EVERY_MS, end_ms, STATUS_EVERY_MS):
                battery = sim.battery_pct(st)
                if battery > 0:  # a dead device sends no status either
                    statuses.append(Status(city.id, site.id, device.id, st, battery_pct=battery, buffer_depth=0))
            rows: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for r in sim.truth(start_ms - warmup_ms, end_ms):
                if r.t_ms >= start_ms:
                    truth[TruthKey(r.device, r.sensor, r.t_ms)] = Truth(r.value, r.true_value, r.truth, r.event)
                if math.isfinite(r.value):
                    rows[r.sensor].append((r.t_ms, r.value))
                    arrival[(r.device, r.sensor, r.t_ms)] = r.true_t_ms
            for sensor in device.sensors:
                pairs = sorted(dict(rows[sensor.id]).items())
                times = np.array([p[0] for p in pairs], dtype=np.int64)
                series[f"{device.id}|{sensor.id}"] = (device, sensor, times, np.array([p[1] for p in pairs]))
        if not series:
            continue
        axis = np.unique(np.concatenate([s[2] for s in series.values()]))
        tests: dict[str, dict[str, npt.NDArray[np.uint8]]] = {}
        flags: dict[str, npt.NDArray[np.uint8]] = {}
        anomaly: dict[str, npt.NDArray[np.bool_]] = {}
        values: dict[str, npt.NDArray[np.float64]] = {}
        device_ok: dict[str, npt.NDArray[np.bool_]] = {}
        kinds: dict[str, str] = {}
        scores: dict[str, npt.NDArray[np.float64]] = {}
        for name, (device, sensor, t, v) in series.items():
            res = evaluate_parameter(v, t.astype("datetime64[ms]").astype("datetime64[ns]"), sensor_qc(sensor))
            pos = np.searchsorted(axis, t)
            f = np.full(axis.shape[0], QartodFlag.MISSING, dtype=np.uint8)
            f[pos] = res.flag
            a = np.zeros(axis.shape[0], dtype=bool)
            a[pos] = res.anomaly
            vv = np.full(axis.shape[0], np.nan)
            vv[pos] = v
            tt = {}
            for test, fl in res.tests.items():
                col = np.full(axis.shape[0], QartodFlag.MISSING, dtype=np.uint8)
                col[pos] = fl
                tt[test] = col
            sim = fleet.device(device.id)
            ok = np.array([sim.battery_pct(int(x)) >= low_battery for x in axis], dtype=bool)
            tests[name], flags[name], anomaly[name], values[name], device_ok[name] = tt, f, a, vv, ok
            kinds[name] = sensor.param.value
            scores[name] = res.score
        labels = label_site(
            tests,
            flags,
            anomaly,
            axis * 1_000_000,
            device_ok=device_ok,
            values=values,
            kinds=kinds,
            signatures=SIGNATURES.get(site.kind.value),
        )
        for name, (device, sensor, t, v) in series.items():
            lab = labels[name][np.searchsorted(axis, t)]
            pos_flags = flags[name][np.searchsorted(axis, t)]
            score_of = np.nan_to_num(scores[name])
            for k in np.flatnonzero(t >= start_ms):
                points.append(
                    Point(
                        city.id,
                        site.id,
                        device.id,
                        sensor.id,
                        sensor.param.value,
                        int(t[k]),
                        float(v[k]),
                        int(pos_flags[k]),
                        LABEL_NAMES[Label(int(lab[k]))],
                        float(score_of[k]),
                        arrival[(device.id, sensor.id, int(t[k]))],
                    )
                )
    return points, statuses, truth, fleet


def backtest_simulated(
    manifest: Manifest,
    days: float,
    seed: int,
    *,
    start_ms: int | None = None,
    config: RuleConfig | None = None,
    store_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Score:
    """Run the rules over the simulated fleet and score them against its ground truth (module docstring)."""
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    start = default_start(manifest) if start_ms is None else start_ms
    end = start + round(days * 86_400_000)
    if progress:
        progress("simulating the fleet and running QC, detectors and labels")
    points, statuses, truth, fleet = simulate_points(manifest, seed, start, end)
    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(store_dir or tmp) / "backtest.sqlite")
        try:
            engine = Engine(manifest, store, config)
            if progress:
                progress(f"replaying {len(points):,} readings through the rules")
            report = replay(engine, points, statuses, start, end)
            score = score_simulated(store.all_alerts(), truth, fleet, manifest=manifest, start_ms=start, end_ms=end)
        finally:
            store.close()
    score.suppressed = report.suppressed
    return score
