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

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from analytics.labels import Label
from analytics.pipeline import evaluate_site
from analytics.service import sensor_qc
from firmware_sim.faults import RANDOM_HOURS
from firmware_sim.fleet import SimulatedFleet, TruthRow
from pilotwatch.manifest import FaultKind, Manifest
from pilotwatch.qc_config import QCConfig
from pilotwatch.schema import QartodFlag

SEED = 7
START_MS = 1_772_409_600_000  # 2026-03-02, the pilots' baseline period
DAYS = 30
FAULTS_PER_WEEK = 3.0
MIN_OVERALL_PRECISION = 0.8  # measured 0.85 (it was 0.28 with direction-blind agreement and derived configs)


def pivot(
    rows: Iterable[TruthRow],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """One device's ground-truth rows as columns on their common time axis: times (ms), and per sensor its
    values (NaN where it has none), its truth ("normal" where none) and its parameter."""
    rows = list(rows)
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
    return times, values, truth, kinds


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
        times, values, truth, kinds = pivot(rows)
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


# ------------------------------------------------------------------------------------------------ fouling
# The random faults above foul whatever sensor the draw picks (most of the 35 fouling episodes fall on temperature
# and bin-fill sensors, whose "fouling" the simulator models as a small upward drift). Biofilm is a real error of
# the probes that sit in the water and measure through a membrane, a cell or a window: dissolved oxygen,
# conductivity, turbidity (../shared/reference). Here every such probe of the water sites is fouled twice in
# 42 days, with the simulator's own random durations and magnitudes, and nothing else goes wrong.
FOULING_DAYS = 42
FOULED_PARAMS = ("do", "conductivity", "turbidity")
# Measured with seed 7 (docs/qc.md) minus a margin: (episode recall, precision of the fouling flags).
FOULING_MINIMUM = {"do": (0.8, 0.95), "conductivity": (0.55, 0.9), "turbidity": (0.75, 0.95)}


def fouling_plan(manifest: Manifest) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    low, high = RANDOM_HOURS[FaultKind.FOULING]
    data = manifest.model_dump(mode="json")
    for city in data["cities"]:
        for site in city["sites"]:
            faults = []
            if site["kind"] == "water":
                for device in site["devices"]:
                    for sensor in device["sensors"]:
                        if sensor["param"] not in FOULED_PARAMS:
                            continue
                        # two episodes, the first after the profile's two-day grace, the second after a clean week
                        first = 3 + rng.uniform(0, 8)
                        for day in (first, first + 17 + rng.uniform(0, 8)):
                            hours = rng.uniform(low, high)
                            start = START_MS + round(day * 86_400_000)
                            faults.append(
                                {
                                    "device": device["id"],
                                    "sensor": sensor["id"],
                                    "kind": "fouling",
                                    "start": dt.datetime.fromtimestamp(start / 1000, dt.UTC).isoformat(),
                                    "hours": hours,
                                    "magnitude": rng.uniform(0.6, 1.4),
                                }
                            )
            site["simulation"] = {**site["simulation"], "fault_rate_per_week": 0.0, "faults": faults}
    return data


@pytest.fixture(scope="module")
def fouled(manifest: Manifest) -> dict[str, Any]:
    plan = Manifest.model_validate(fouling_plan(manifest))
    fleet = SimulatedFleet(plan, seed=SEED)
    index = plan.device_index()
    found: dict[str, list[bool]] = defaultdict(list)
    hits: dict[str, int] = defaultdict(int)
    false: dict[str, int] = defaultdict(int)
    on_events = [0, 0]  # event readings of these probes flagged fouled, all event readings of these probes
    for device in fleet.devices:
        place = index[device.id]
        if place.site.kind.value != "water":
            continue
        rows = list(fleet.truth(START_MS, START_MS + FOULING_DAYS * 86_400_000, devices=[device.id]))
        times, values, truth, kinds = pivot(rows)
        cfg = QCConfig(parameters={s.id: sensor_qc(s) for s in device.device.sensors})
        ns = (times * 1_000_000).view("datetime64[ns]")
        result = evaluate_site(values, ns, cfg, kinds=kinds, site_kind="water")
        for sensor, res in result.parameters.items():
            if kinds[sensor] not in FOULED_PARAMS:
                continue
            flagged = res.tests["fouling"] == QartodFlag.SUSPECT
            mask = truth[sensor] == "fault:fouling"
            found[kinds[sensor]] += [
                bool(flagged[a:b].any() & (res.label[a:b] == Label.FAULT).any()) for a, b in runs(mask)
            ]
            hits[kinds[sensor]] += int((flagged & mask).sum())
            # an hour of grace after the cleaning: the signature closes on the hour after it
            near = mask | np.isin(np.arange(mask.shape[0]) - 13, np.flatnonzero(mask))
            for lag in range(1, 13):
                near |= np.roll(mask, lag)
            false[kinds[sensor]] += int((flagged & ~near).sum())
            events = np.array([t.startswith("event:") for t in truth[sensor]]) & ~mask
            on_events[0] += int((events & flagged).sum())
            on_events[1] += int(events.sum())
    return {
        "found": found,
        "precision": {k: hits[k] / max(hits[k] + false[k], 1) for k in FOULED_PARAMS},
        "false": dict(false),
        "on_events": on_events,
    }


@pytest.mark.parametrize("param", FOULED_PARAMS)
def test_fouling_of_the_probes_that_foul(fouled: dict[str, Any], param: str) -> None:
    found = fouled["found"][param]
    assert len(found) >= 8, f"only {len(found)} {param} fouling episodes"
    recall, precision = FOULING_MINIMUM[param]
    assert np.mean(found) >= recall, f"{param}: {sum(found)}/{len(found)} fouled stretches labelled fault"
    assert fouled["precision"][param] >= precision, f"{param}: {fouled['precision']} false {fouled['false']}"
    flagged, events = fouled["on_events"]
    # false fouling episodes that overlap a discharge or a rain (measured: see docs/qc.md)
    assert flagged / events < 0.01, f"{flagged}/{events} readings during environmental events called fouled"
