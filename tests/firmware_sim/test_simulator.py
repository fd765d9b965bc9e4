"""The simulator: deterministic for a seed; events, faults and the pilot effect appear as configured, both in
what the sensors report and in the ground truth (statistical checks with fixed seeds)."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from edge.clock import SimulatedClock
from edge.drivers.base import SensorError
from firmware_sim.environment import EVENT_KINDS, HOUR_MS, WEEK_MS
from firmware_sim.fleet import SimulatedFleet, TruthRow, write_truth
from pilotwatch.manifest import FaultKind, Manifest, SiteKind, parse_manifest

DAY_MS = 24 * HOUR_MS
T0 = int(dt.datetime(2026, 4, 6, tzinfo=dt.UTC).timestamp() * 1000)  # a Monday in the baseline period


def default_data() -> dict[str, Any]:
    text = resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def with_faults(faults: list[dict[str, Any]], site: str = "bkk-pratunam-pier", rate: float = 0.0) -> Manifest:
    data = default_data()
    for city in data["cities"]:
        for s in city["sites"]:
            s.setdefault("simulation", {})["fault_rate_per_week"] = 0.0
            if s["id"] == site:
                s["simulation"]["faults"] = faults
                s["simulation"]["fault_rate_per_week"] = rate
    return parse_manifest(data)


def rows(fleet: SimulatedFleet, device: str, start: int, end: int, sensor: str | None = None) -> list[TruthRow]:
    return [r for r in fleet.device(device).truth(start, end) if sensor is None or r.sensor == sensor]


def test_same_seed_same_fleet_in_any_order(manifest: Manifest) -> None:
    a = list(SimulatedFleet(manifest, 5).truth(T0, T0 + DAY_MS))
    b = list(
        SimulatedFleet(manifest, 5).truth(
            T0, T0 + DAY_MS, devices=reversed([d.id for _, _, d in manifest.iter_devices()])
        )
    )
    assert sorted(a, key=str) == sorted(b, key=str)
    c = list(SimulatedFleet(manifest, 6).truth(T0, T0 + DAY_MS))
    assert [r.value for r in a] != [r.value for r in c]
    # One sample on its own equals the same sample inside a run: nothing depends on what was sampled before.
    lone = SimulatedFleet(manifest, 5).device("smg-natural-ef1").models["colour"].sample(T0 + 10 * HOUR_MS)
    inside = next(
        r for r in a if r.device == "smg-natural-ef1" and r.sensor == "colour" and r.true_t_ms == T0 + 10 * HOUR_MS
    )
    assert lone.value == inside.value


def test_events_arrive_at_the_configured_rate_and_every_kind_appears(manifest: Manifest) -> None:
    fleet = SimulatedFleet(manifest, 1)
    weeks = 52
    for site_id, model in fleet.sites.items():
        events = model.events_between(T0, T0 + weeks * WEEK_MS)
        rate = model.site.simulation.events_per_week
        expected = rate * weeks
        assert abs(len(events) - expected) <= 4 * math.sqrt(expected) + 1, (site_id, len(events), expected)
        kinds = {e.kind for e in events}
        assert kinds == {k[0] for k in EVENT_KINDS[model.site.kind]}, site_id


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def test_sewage_discharge_drops_do_and_raises_conductivity_and_turbidity_together(manifest: Manifest) -> None:
    fleet = SimulatedFleet(manifest, 2)
    truth = rows(fleet, "bkk-pratunam-wq1", T0, T0 + 8 * WEEK_MS)
    by = {(r.sensor, r.true_t_ms): r for r in truth}
    sewage_times = {r.true_t_ms for r in truth if r.event == "sewage_discharge" and r.sensor == "do"}
    normal_times = {r.true_t_ms for r in truth if r.truth == "normal" and r.sensor == "do"}
    assert len(sewage_times) > 30

    def mean(sensor: str, times: set[int]) -> float:
        return _mean([by[(sensor, t)].value for t in times if not math.isnan(by[(sensor, t)].value)])

    assert mean("do", sewage_times) < 0.7 * mean("do", normal_times)
    assert mean("ec", sewage_times) > 1.2 * mean("ec", normal_times)
    assert mean("turb", sewage_times) > 1.8 * mean("turb", normal_times)
    assert mean("orp", sewage_times) < mean("orp", normal_times) - 80
    rain = {r.true_t_ms for r in truth if r.event == "rain" and r.sensor == "do"}
    assert mean("turb", rain) > 1.8 * mean("turb", normal_times)
    assert mean("ec", rain) < mean("ec", normal_times)
    # Bangkok canal DO sits in 0-2 mg/L on average (class 4-5, ../shared/reference).
    assert 0.5 < mean("do", normal_times) < 2.5


def test_effluent_follows_the_workshop_and_spikes_on_dumps(manifest: Manifest) -> None:
    fleet = SimulatedFleet(manifest, 3)
    truth = rows(fleet, "smg-conventional-ef1", T0, T0 + 4 * WEEK_MS)
    model = fleet.sites["smg-batik-conventional"]
    flow = [r for r in truth if r.sensor == "flow" and r.truth == "normal"]
    sunday = [r.value for r in flow if model.weekday(model.local_day(r.true_t_ms)) == 6]
    workday_batches = [r.value for r in flow if model.weekday(model.local_day(r.true_t_ms)) < 6 and r.value > 1]
    assert max(sunday) < 0.2  # no dyeing on Sunday
    assert len(workday_batches) > 4 * 6 * 4 * 3  # batches drained every working day
    colour = [r for r in truth if r.sensor == "colour"]
    spikes = [r.value for r in colour if r.event == "discharge_spike" and r.faults == ""]
    quiet = [r.value for r in colour if r.truth == "normal"]
    assert spikes
    assert _mean(spikes) > 4 * _mean(quiet)


def test_bins_fill_by_market_hours_reset_at_collection_overflow_and_burn(manifest: Manifest) -> None:
    fleet = SimulatedFleet(manifest, 4)
    truth = rows(fleet, "cto-anlac-bin1", T0, T0 + 6 * WEEK_MS)
    model = fleet.sites["cto-an-lac-market"]
    fill = [r for r in truth if r.sensor == "fill" and r.faults == ""]
    after_collection = [
        r.value
        for r in fill
        if 7.0 <= model.local_hour(r.true_t_ms) < 7.25 and model.weekday(model.local_day(r.true_t_ms)) != 6
    ]
    assert max(after_collection) < 10.0
    overflow = [r for r in fill if r.truth == "event:overflow"]
    assert overflow
    assert all(r.true_value >= 100.0 for r in overflow)
    assert all(r.value >= 95.0 for r in overflow)  # the sensor sees a full bin (in its blind zone)
    fires = [r for r in truth if r.sensor == "temp" and r.event == "fire" and r.faults == ""]
    assert fires
    assert max(r.value for r in fires) > 50.0
    assert max(r.value for r in truth if r.sensor == "temp" and r.truth == "normal") < 40.0


FAULT_START = dt.datetime(2026, 4, 7, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("kind", list(FaultKind))
def test_each_scheduled_fault_shows_in_readings_and_truth(kind: FaultKind) -> None:
    device, sensor = "bkk-pratunam-wq1", "ec"
    fault = {"device": device, "kind": kind.value, "start": FAULT_START.isoformat(), "hours": 12, "magnitude": 1.0}
    if kind not in (FaultKind.DEAD_BATTERY, FaultKind.CLOCK_JUMP):
        fault["sensor"] = sensor
    faulty = SimulatedFleet(with_faults([fault]), 9)
    clean = SimulatedFleet(with_faults([]), 9)
    start = int(FAULT_START.timestamp() * 1000)
    window = (start - 6 * HOUR_MS, start + 18 * HOUR_MS)
    got = rows(faulty, device, *window)
    ref = {(r.sensor, r.true_t_ms): r for r in rows(clean, device, *window)}
    inside = [
        r
        for r in got
        if start <= r.true_t_ms < start + 12 * HOUR_MS
        and (r.sensor == sensor or kind in (FaultKind.DEAD_BATTERY, FaultKind.CLOCK_JUMP))
    ]
    outside = [r for r in got if not start <= r.true_t_ms < start + 12 * HOUR_MS]
    assert {r.truth for r in inside} == {f"fault:{kind.value}"}
    assert all(r.value == ref[(r.sensor, r.true_t_ms)].value or math.isnan(r.value) for r in outside)
    assert all(not r.truth.startswith("fault:") for r in outside)
    before = [ref[(r.sensor, r.true_t_ms)].value for r in inside]
    after = [r.value for r in inside]
    if kind in (FaultKind.DROPOUT, FaultKind.DEAD_BATTERY):
        assert all(math.isnan(v) for v in after)
    elif kind is FaultKind.FLAT_LINE:
        assert len(set(after)) == 1
    elif kind is FaultKind.SPIKE:
        # ±2000 µS/cm, clipped at the sensor range when negative; the noise is ~7 µS/cm.
        assert min(abs(a - b) for a, b in zip(after, before, strict=True)) > 400
    elif kind is FaultKind.DRIFT:
        offsets = [a - b for a, b in zip(after, before, strict=True)]
        assert offsets[-1] > 400 > offsets[0] + 50
    elif kind is FaultKind.FOULING:
        ratios = [a / b for a, b in zip(after, before, strict=True)]
        assert ratios[-1] < 0.7 < 0.95 < ratios[0]  # a fouled conductivity cell reads low, more and more
    elif kind is FaultKind.NOISE_BURST:
        assert statistics.pstdev(a - b for a, b in zip(after, before, strict=True)) > 200
    elif kind is FaultKind.CLOCK_JUMP:
        assert all(r.t_ms == r.true_t_ms + HOUR_MS for r in inside)
        assert after == before
    if kind is FaultKind.DEAD_BATTERY:
        sim = faulty.device(device)
        assert sim.battery_pct(start + HOUR_MS) == 0.0
        assert 5.0 < sim.battery_pct(start - 3 * HOUR_MS) < 100.0 == sim.battery_pct(start - 7 * HOUR_MS)


def test_random_faults_at_the_configured_rate_and_every_kind_appears() -> None:
    fleet = SimulatedFleet(with_faults([], rate=3.0), 12)
    faults = [f for f in fleet.faults(T0, T0 + 52 * WEEK_MS) if f.start_ms >= T0]
    assert abs(len(faults) - 156) <= 4 * math.sqrt(156)
    assert Counter(f.kind for f in faults).keys() == set(FaultKind)
    jumps = [f for f in faults if f.kind is FaultKind.CLOCK_JUMP]
    assert all(f.magnitude < 0 for f in jumps)  # a simulated device never stamps the future


def test_simulated_driver_raises_like_hardware_during_a_dropout() -> None:
    start = int(FAULT_START.timestamp() * 1000)
    fault = {
        "device": "bkk-pratunam-wq1",
        "sensor": "ph",
        "kind": "dropout",
        "start": FAULT_START.isoformat(),
        "hours": 1,
    }
    device = SimulatedFleet(with_faults([fault]), 1).device("bkk-pratunam-wq1")
    clock = SimulatedClock(start + 60_000)
    drivers = device.drivers(clock)
    with pytest.raises(SensorError) as no_data:
        drivers["ph"].read()
    assert no_data.value.code == "no_data"
    assert drivers["do"].read().value > 0


def test_pilot_effect_is_the_configured_true_change(manifest: Manifest) -> None:
    fleet = SimulatedFleet(with_faults([]), 21)
    baseline = int(dt.datetime(2026, 5, 4, tzinfo=dt.UTC).timestamp() * 1000)
    intervention = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp() * 1000)
    span = 6 * WEEK_MS

    def mean_true(device: str, sensor: str, start: int) -> float:
        # Hourly true values (the environment before the sensor) are enough for a mean over six weeks.
        model = fleet.device(device).models[sensor]
        return _mean([model.true_value(t)[0] for t in range(start, start + span, HOUR_MS)])

    # Bangkok intervention pier: DO +35 %; the control pier: no change.
    ratio = mean_true("bkk-pratunam-wq1", "do", intervention) / mean_true("bkk-pratunam-wq1", "do", baseline)
    control = mean_true("bkk-asok-wq1", "do", intervention) / mean_true("bkk-asok-wq1", "do", baseline)
    assert ratio / control == pytest.approx(1.35, rel=0.06)
    # Semarang natural dyes: colour -40 %, UV254 (the COD proxy) -30 %.
    colour = mean_true("smg-natural-ef1", "colour", intervention) / mean_true("smg-natural-ef1", "colour", baseline)
    assert colour == pytest.approx(0.6, rel=0.1)

    # Can Tho bins: a slower fill (-25 %) means fewer overflows.
    def overflows(start: int) -> int:
        model = fleet.device("cto-anlac-bin1").models["fill"]
        return sum(model.true_value(t)[1] == "overflow" for t in range(start, start + span, HOUR_MS))

    assert overflows(intervention) < 0.6 * overflows(baseline)


def test_truth_to_csv_and_parquet(manifest: Manifest, tmp_path: Path) -> None:
    truth = list(SimulatedFleet(manifest, 3).truth(T0, T0 + 6 * HOUR_MS, devices=["jkt-kalibaru-bin1"]))
    assert write_truth(truth, tmp_path / "t.csv") == len(truth)
    assert write_truth(truth, tmp_path / "t.parquet") == len(truth)
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert list(frame["t_ms"]) == [r.t_ms for r in truth]
    assert set(frame["truth"]) <= {"normal", "event:fire", "event:overflow"} | {f"fault:{k.value}" for k in FaultKind}
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("device,sensor,param,t_ms")
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_truth(truth, tmp_path / "t.json")


def test_every_site_kind_has_a_model_for_every_manifest_sensor(manifest: Manifest) -> None:
    fleet = SimulatedFleet(manifest, 0)
    kinds = {fleet.device(d.id).site.site.kind for _, _, d in manifest.iter_devices()}
    assert kinds == set(SiteKind)
    assert all(not math.isnan(r.true_value) for r in fleet.truth(T0, T0 + HOUR_MS))
