"""Fault-vs-event scoring on the firmware_sim fleet (the project's sensor simulator, with ground truth).

Every device of the default manifest runs for 30 days with a fixed seed and three random faults per site and
week (the manifest's rate is 0.5; more faults give every kind enough episodes to score). Each device is
evaluated with the manifest's QC (``Sensor.qc`` completed by :func:`analytics.service.sensor_qc`) and its site
kind's event signatures — exactly what the live service runs; nothing is tuned on the ground truth.

Scores, per fault kind:

- **recall**: share of the kind's fault episodes (runs of ``fault:<kind>`` readings of one sensor) with at
  least one reading labelled fault — or missing, for the kinds whose fault *is* missing data;
- **precision**: readings of the kind labelled fault (or missing), over those plus every false fault label of
  the fleet (a fault label more than one reading away from any fault of its sensor: rate of change flags the
  reading after a jump). The false alarms are shared by all kinds, so a kind with few readings (spikes) has a
  low precision even when every false alarm is rare.

Not scored: ``clock_jump`` — timestamps shift, values do not, so value-based QC cannot see it (ingest's clock
checks can). ``dropout`` and ``dead_battery`` are missing data by nature: flag 9 / label missing, found by
definition; the battery sag before a dead battery is not an error in the readings.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from analytics.labels import Label
from analytics.pipeline import evaluate_site
from analytics.service import sensor_qc
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.manifest import Manifest
from pilotwatch.qc_config import QCConfig

SEED = 7
START_MS = 1_772_409_600_000  # 2026-03-02, the pilots' baseline period
DAYS = 30
FAULTS_PER_WEEK = 3.0
MIN_OVERALL_PRECISION = 0.8  # measured 0.85 (it was 0.28 with direction-blind agreement and derived configs)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


@pytest.fixture(scope="module")
def scored(manifest: Manifest) -> dict[str, Any]:
    data = manifest.model_dump(mode="json")
    for city in data["cities"]:
        for site in city["sites"]:
            site["simulation"]["fault_rate_per_week"] = FAULTS_PER_WEEK
    faulty = Manifest.model_validate(data)
    fleet = SimulatedFleet(faulty, seed=SEED)
    index = faulty.device_index()
    episodes: dict[str, list[bool]] = defaultdict(list)
    hits: dict[str, int] = defaultdict(int)
    false_faults = fault_labels = 0
    counts = {"event": [0, 0], "fault": [0, 0]}  # [labelled right, anomalous]
    for device in fleet.devices:
        place = index[device.id]
        rows = list(fleet.truth(START_MS, START_MS + DAYS * 86_400_000, devices=[device.id]))
        times = np.array(sorted({r.t_ms for r in rows}), dtype=np.int64)
        position = {t: i for i, t in enumerate(times)}
        values: dict[str, np.ndarray] = {}
        truth: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        for r in rows:
            if r.sensor not in values:
                values[r.sensor] = np.full(times.shape[0], np.nan)
                truth[r.sensor] = np.full(times.shape[0], "normal", dtype=object)
                kinds[r.sensor] = r.param
            values[r.sensor][position[r.t_ms]] = r.value
            truth[r.sensor][position[r.t_ms]] = r.truth
        cfg = QCConfig(parameters={s.id: sensor_qc(s) for s in device.device.sensors})
        ns = (times * 1_000_000).view("datetime64[ns]")
        result = evaluate_site(values, ns, cfg, kinds=kinds, site_kind=place.site.kind.value)
        for sensor, res in result.parameters.items():
            tr, lab = truth[sensor], res.label
            caught = np.isin(lab, [Label.FAULT, Label.MISSING])
            for kind in {t for t in tr if t.startswith("fault:")}:
                name = kind.removeprefix("fault:")
                mask = tr == kind
                episodes[name] += [bool(caught[a:b].any()) for a, b in runs(mask)]
                hits[name] += int((mask & caught).sum())
            is_fault = np.array([t.startswith("fault:") for t in tr])
            near_fault = is_fault | np.roll(is_fault, 1) | np.roll(is_fault, -1)
            false_faults += int(((lab == Label.FAULT) & ~near_fault).sum())
            fault_labels += int((lab == Label.FAULT).sum())
            anomalous = np.isin(lab, [Label.FAULT, Label.EVENT])
            for what, label in (("event", Label.EVENT), ("fault", Label.FAULT)):
                mask = np.array([t.startswith(f"{what}:") for t in tr]) & anomalous
                counts[what][0] += int((mask & (lab == label)).sum())
                counts[what][1] += int(mask.sum())
    return {
        "episodes": episodes,
        "precision": {k: hits[k] / max(hits[k] + false_faults, 1) for k in hits},
        "overall_precision": 1 - false_faults / max(fault_labels, 1),
        "counts": counts,
    }


# Measured with seed 7 (docs/qc.md) minus a margin: (episode recall, precision).
MINIMUM = {
    "spike": (0.75, 0.04),
    "drift": (0.35, 0.15),
    "fouling": (0.2, 0.05),
    "flat_line": (0.75, 0.6),
    "noise_burst": (0.15, 0.15),
    "dropout": (0.95, 0.6),
    "dead_battery": (0.95, 0.9),
}


@pytest.mark.parametrize("kind", sorted(MINIMUM))
def test_recall_and_precision_per_fault_kind(scored: dict[str, Any], kind: str) -> None:
    found = scored["episodes"][kind]
    assert len(found) >= 10, f"seed {SEED}: only {len(found)} {kind} episodes, too few to score"
    recall, precision = MINIMUM[kind]
    assert np.mean(found) >= recall, f"{kind}: {sum(found)}/{len(found)} episodes found (seed {SEED})"
    assert scored["precision"][kind] >= precision, f"{kind}: precision {scored['precision'][kind]:.2f}"


def test_fault_and_event_labels(scored: dict[str, Any]) -> None:
    (event_ok, event_all), (fault_ok, fault_all) = scored["counts"]["event"], scored["counts"]["fault"]
    # Anomalous readings during a discharge, rain, dye bath dump or bin fire: labelled event (measured 0.84;
    # the rest is mostly bin overflows lasting past a day, which the fill sensor's flat line takes for a stuck
    # probe, and the first readings of an event before a second parameter moves).
    assert event_ok / event_all >= 0.78, f"{event_ok}/{event_all} (seed {SEED})"
    # Anomalous readings during a sensor fault: labelled fault (measured 0.82).
    assert fault_ok / fault_all >= 0.75, f"{fault_ok}/{fault_all} (seed {SEED})"
    # Share of all fault labels that are on a fault or next to one.
    assert scored["overall_precision"] >= MIN_OVERALL_PRECISION, f"{scored['overall_precision']:.2f} (seed {SEED})"
