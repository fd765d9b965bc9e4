"""``pilotwatch evaluate calibrate``: does a 95 % interval cover the truth 95 % of the time on realistic data?

Contract: for run ``r`` of ``N`` (seed ``S``) the simulator (``firmware_sim``: the site model with its daily cycle,
tides, day-to-day variation and pollution events; the sensor model with noise, resolution and random faults)
produces an intervention site and its control over a baseline and an intervention period, once with the known
pilot effect and once without. Each series is QC'd by the analytics core's public batch function
(:func:`analytics.pipeline.evaluate_parameter`), and the pair is evaluated by :func:`evaluation.evaluate.evaluate_pair`
— the function that evaluates stored data. The result counts how often the BACI interval covers the true
effect, how often it excludes zero when there is no effect (false positives), and, beside them, how often a naive
test that treats readings as independent (Welch's t on the impact - control differences) finds an effect that
is not there. Same N and S, same figures.

Which faults: the simulator's random faults at the manifest's rate, except drift and fouling by default. Those
two change a sensor's reading slowly for days, which QC cannot tell from a real change without a service visit
(docs/evaluation.md says how an evaluator handles them); ``--with-drift`` includes them to show their cost.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from analytics.pipeline import evaluate_parameter
from evaluation.estimators import BootstrapConfig, Estimate
from evaluation.evaluate import evaluate_pair, naive_t_test
from evaluation.series import QCAcceptance, Series
from firmware_sim.environment import SiteModel
from firmware_sim.faults import Fault, FaultSchedule
from firmware_sim.sensors import SensorModel
from pilotwatch.manifest import (
    City,
    FaultKind,
    Manifest,
    Parameter,
    Period,
    Periods,
    Site,
    SiteRole,
    load_manifest,
)

DAY_MS = 86_400_000
SLOW_FAULTS = frozenset({FaultKind.DRIFT, FaultKind.FOULING})
ESTIMATE = "baci_relative"


@dataclass(frozen=True, slots=True)
class CalibrationSetup:
    """What is simulated. Defaults: the Bangkok pair, dissolved oxygen, four weeks per period, a reading every
    30 minutes (the estimators do not depend on the interval; the simulator's cost does)."""

    runs: int
    seed: int
    city: str = "bangkok"
    parameter: Parameter = Parameter.DO
    effect: float = 0.35
    days_per_period: int = 28
    interval_s: float = 1800.0
    start: dt.date = dt.date(2026, 3, 2)
    replicates: int = 999
    with_drift: bool = False

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"--runs must be at least 1, got {self.runs}")
        if self.days_per_period < 7:
            raise ValueError(f"days per period must be at least 7, got {self.days_per_period}")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run: int
    effect: float
    estimate: float
    low: float
    high: float
    naive_p: float
    block_length: float | None

    @property
    def covers(self) -> bool:
        return self.low <= self.effect <= self.high

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


@dataclass(frozen=True, slots=True)
class Calibration:
    setup: CalibrationSetup
    with_effect: list[RunOutcome]
    without_effect: list[RunOutcome]
    seconds: float

    @property
    def coverage(self) -> float:
        return _share([o.covers for o in self.with_effect])

    @property
    def false_positives(self) -> float:
        return _share([o.excludes_zero for o in self.without_effect])

    @property
    def naive_false_positives(self) -> float:
        return _share([o.naive_p < 0.05 for o in self.without_effect])

    @property
    def power(self) -> float:
        return _share([o.excludes_zero for o in self.with_effect])

    def line(self) -> str:
        """The last line of the command, in the fixed form scripts parse."""
        return (
            f"calibration: coverage {self.coverage:.3f} ({self.setup.runs} runs, 95 % intervals) · "
            f"false positives {self.false_positives:.3f} under no effect · "
            f"naive t-test false positives {self.naive_false_positives:.3f}"
        )


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def _pair(manifest: Manifest, city_id: str, parameter: Parameter) -> tuple[City, Site, Site]:
    city = manifest.city(city_id)
    measured = [s for s in city.sites if any(x.param is parameter for d in s.devices for x in d.sensors)]
    impact = next((s for s in measured if s.role is SiteRole.INTERVENTION), None)
    control = next((s for s in measured if s.role is SiteRole.CONTROL and impact and s.kind is impact.kind), None)
    if impact is None or control is None:
        raise ValueError(f"city {city_id!r} has no intervention and control site that both measure {parameter.value}")
    return city, impact, control


def _setup_site(site: Site, setup: CalibrationSetup, effect: float) -> Site:
    periods = Periods(
        baseline=Period(start=setup.start, end=setup.start + dt.timedelta(days=setup.days_per_period)),
        intervention=Period(
            start=setup.start + dt.timedelta(days=setup.days_per_period),
            end=setup.start + dt.timedelta(days=2 * setup.days_per_period),
        ),
    )
    simulation = site.simulation.model_copy(
        update={"pilot_effect": {setup.parameter: effect} if effect else {}, "faults": []}
    )
    return site.model_copy(update={"periods": periods, "simulation": simulation})


class _WithoutSlowFaults(FaultSchedule):
    """The simulator's schedule less drift and fouling; every other random fault stays where it was drawn."""

    def week(self, week: int) -> tuple[Fault, ...]:
        return tuple(f for f in super().week(week) if f.kind not in SLOW_FAULTS)


def simulate_series(city: City, site: Site, parameter: Parameter, seed: int, setup: CalibrationSetup) -> Series:
    """What one sensor of the site stores over both periods, QC'd by the analytics core."""
    device, sensor = next((d, s) for d in site.devices for s in d.sensors if s.param is parameter)
    model = SiteModel(city, site, seed)
    schedule = FaultSchedule(site, seed) if setup.with_drift else _WithoutSlowFaults(site, seed)
    sensor_model = SensorModel(model, schedule, device, sensor, seed)
    start_ms = int(dt.datetime.combine(site.periods.baseline.start, dt.time(), dt.UTC).timestamp() * 1000) - DAY_MS
    end_ms = int(dt.datetime.combine(site.periods.intervention.end, dt.time(), dt.UTC).timestamp() * 1000) + DAY_MS
    step = int(setup.interval_s * 1000)
    stamps: list[int] = []
    values: list[float] = []
    for t in range(start_ms, end_ms, step):
        sample = sensor_model.sample(t)
        if sample.value is not None:  # a dropout or dead battery stores nothing
            stamps.append(sample.t_ms)
            values.append(sample.value)
    times = np.asarray(stamps, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    times, vals = times[order], vals[order]
    keep = np.concatenate([[True], np.diff(times) > 0])  # a clock jump back overwrites, as in InfluxDB
    times, vals = times[keep], vals[keep]
    # The analytics core takes datetime64 times (plain int64 would be read as nanoseconds).
    flags = evaluate_parameter(vals, times.astype("datetime64[ms]").astype("datetime64[ns]"), sensor.qc).flag
    return Series(times, vals, np.asarray(flags, dtype=np.uint8), setup.interval_s)


@functools.cache
def _default_pair(city_id: str, parameter: Parameter) -> tuple[City, Site, Site]:
    return _pair(load_manifest(), city_id, parameter)


def run_one(setup: CalibrationSetup, run: int, effect: float) -> RunOutcome:
    city, impact, control = _default_pair(setup.city, setup.parameter)
    seed = setup.seed * 1_000_003 + run * 2 + (1 if effect else 0)
    impact_site = _setup_site(impact, setup, effect)
    control_site = _setup_site(control, setup, 0.0)
    impact_series = simulate_series(city, impact_site, setup.parameter, seed, setup)
    control_series = simulate_series(city, control_site, setup.parameter, seed, setup)
    config = BootstrapConfig(replicates=setup.replicates, seed=seed)
    estimates = evaluate_pair(
        impact_series, control_series, impact_site.periods, city.timezone, acceptance=QCAcceptance.GOOD, config=config
    )
    chosen: Estimate = next(e for e in estimates if e.quantity == ESTIMATE)
    naive = naive_t_test(impact_series, control_series, impact_site.periods, city.timezone, QCAcceptance.GOOD)
    return RunOutcome(run, effect, chosen.estimate, chosen.low, chosen.high, naive, chosen.block_length)


def _job(args: tuple[CalibrationSetup, int, float]) -> RunOutcome:
    return run_one(*args)


def calibrate(
    setup: CalibrationSetup, *, workers: int | None = None, progress: Callable[[int, int], None] | None = None
) -> Calibration:
    """Run ``setup.runs`` pairs with the effect and as many without it; ``workers`` processes (default: cores)."""
    started = time.perf_counter()
    jobs = [(setup, r, setup.effect) for r in range(setup.runs)] + [(setup, r, 0.0) for r in range(setup.runs)]
    count = workers or os.cpu_count() or 1
    outcomes: list[RunOutcome] = []
    results: Iterator[RunOutcome]
    if count == 1:
        results = map(_job, jobs)
        for i, outcome in enumerate(results, 1):
            outcomes.append(outcome)
            if progress is not None:
                progress(i, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=count) as pool:
            for i, outcome in enumerate(pool.map(_job, jobs, chunksize=4), 1):
                outcomes.append(outcome)
                if progress is not None:
                    progress(i, len(jobs))
    with_effect = [o for o in outcomes if o.effect != 0.0]
    without = [o for o in outcomes if o.effect == 0.0]
    return Calibration(setup, with_effect, without, time.perf_counter() - started)
