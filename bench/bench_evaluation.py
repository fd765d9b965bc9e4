"""Evaluation cost: one city's six months of 5-minute data, 2,000 bootstrap replicates, against arch's bootstrap.

Usage: .venv/bin/python bench/bench_evaluation.py [--days 184] [--replicates 2000] [--quick]

Data: the Bangkok city of the default manifest (an intervention and a control site, six sensors each), one reading
every 5 minutes for --days local days, the periods switched half-way; values are synthetic (daily cycle, AR(1)
noise, day-to-day variation, a +20 % effect on the intervention site) because the benchmark measures the
evaluation, not the simulator. Three figures, each in the same run:

1. ``evaluate_city``: every estimate of the city (before/after per sensor, BACI per pair, compliance, coverage),
   2,000 replicates each, from arrays in memory (no InfluxDB).
2. The BACI bootstrap of every pair (hour-balanced means and medians of impact and control, whole-day blocks):
   pilotwatch's resampler and Numba kernels (the median of a resample of days is read off the period's sorted
   readings weighted by how often each day was drawn, without building the resample).
3. The same BACI bootstrap done with ``arch.bootstrap.StationaryBootstrap`` on the same day tables, same seed:
   arch draws the blocks and resamples the arrays, numpy computes the statistic. The replicates are checked equal
   (1e-9) before the times are printed.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import yaml
from arch.bootstrap import StationaryBootstrap

from evaluation.bootstrap import BlockScheme, replicate
from evaluation.estimators import (
    HOURS,
    BootstrapConfig,
    day_block,
    day_table,
    resampled_means,
)
from evaluation.evaluate import evaluate_city
from evaluation.series import QCAcceptance, Series, paired_sample
from pilotwatch.manifest import Device, Sensor, Site, parse_manifest
from pilotwatch.schema import QartodFlag

STEP_S = 300
START = dt.date(2026, 3, 1)


def city_manifest(days: int) -> Any:
    text = resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text(encoding="utf-8")
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(text))
    raw["cities"] = [c for c in raw["cities"] if c["id"] == "bangkok"]
    raw["alerts"] = [a for a in raw.get("alerts", []) if a["city"] in ("bangkok", "*")]
    switch = START + dt.timedelta(days=days // 2)
    for site in raw["cities"][0]["sites"]:
        site["periods"] = {
            "baseline": {"start": START.isoformat(), "end": switch.isoformat()},
            "intervention": {"start": switch.isoformat(), "end": (START + dt.timedelta(days=days)).isoformat()},
        }
    return parse_manifest(raw, "bench manifest")


def synthetic(site: Site, sensor: Sensor, days: int, seed: int) -> Series:
    rng = np.random.default_rng(seed)
    start_ms = int(dt.datetime.combine(START, dt.time(), dt.UTC).timestamp() * 1000) - 7 * 3_600_000
    n = days * 86_400 // STEP_S
    t = start_ms + np.arange(n, dtype=np.int64) * STEP_S * 1000
    hour = ((t // 3_600_000) + 7) % 24
    level = float(np.mean(sensor.valid_range)) * 0.3 + 1.0
    noise = np.empty(n)
    noise[0] = 0.0
    e = rng.standard_normal(n) * 0.02
    for i in range(1, n):
        noise[i] = 0.95 * noise[i - 1] + e[i]
    day_effect = np.repeat(rng.standard_normal(days) * 0.03, 86_400 // STEP_S)
    values = level * (1 + 0.1 * np.sin(2 * np.pi * (hour - 8) / 24) + noise + day_effect)
    if site.role.value == "intervention":
        values[n // 2 :] *= 1.2
    flags = np.full(n, int(QartodFlag.GOOD), np.uint8)
    flags[rng.random(n) < 0.01] = int(QartodFlag.SUSPECT)
    return Series(t, values, flags, float(STEP_S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=184)
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="60 days, 500 replicates")
    args = parser.parse_args()
    days, reps = (60, 500) if args.quick else (args.days, args.replicates)
    manifest = city_manifest(days)
    city = manifest.city("bangkok")
    data = {
        (site.id, sensor.id): synthetic(site, sensor, days, k)
        for k, (site, sensor) in enumerate((s, x) for s in city.sites for d in s.devices for x in d.sensors)
    }

    def loader(site: Site, device: Device, sensor: Sensor, start_ms: int, end_ms: int) -> Series:
        return data[(site.id, sensor.id)]

    readings = sum(s.n for s in data.values())
    config = BootstrapConfig(replicates=reps)
    as_of = int(dt.datetime.combine(START + dt.timedelta(days=days), dt.time(), dt.UTC).timestamp() * 1000)
    evaluate_city(manifest, "bangkok", loader, config=BootstrapConfig(replicates=99), as_of_ms=as_of)  # compile
    started = time.perf_counter()
    ev = evaluate_city(manifest, "bangkok", loader, config=config, as_of_ms=as_of)
    whole = time.perf_counter() - started

    impact, control = city.sites[0], city.sites[1]
    pairs = []
    for sensor in impact.devices[0].sensors:
        a, b = data[(impact.id, sensor.id)], data[(control.id, sensor.id)]
        for period in (impact.periods.baseline, impact.periods.intervention):
            p = paired_sample(a, b, period, city.timezone, QCAcceptance.GOOD)
            values = np.column_stack([p.impact, p.control])
            pairs.append((values, day_table(values, p.hours, p.days)))

    def ours() -> list[np.ndarray]:
        out = []
        for _values, table in pairs:
            block = day_block(table.daily[:, 0] - table.daily[:, 1], BlockScheme.STATIONARY)

            def stat(idx: Sequence[np.ndarray], table: Any = table) -> np.ndarray:
                means = resampled_means(table, idx[0])
                return np.array([means[0], means[1], table.median(0, idx[0]), table.median(1, idx[0])])

            out.append(
                replicate(
                    [table.days],
                    stat,
                    blocks=[block],
                    scheme=BlockScheme.STATIONARY,
                    replicates=reps,
                    seed=np.random.default_rng(11),
                )
            )
        return out

    def with_arch() -> list[np.ndarray]:
        out = []
        for values, table in pairs:
            block = day_block(table.daily[:, 0] - table.daily[:, 1], BlockScheme.STATIONARY)
            readings_of_day = [values[s : s + n] for s, n in zip(table.starts, table.lengths, strict=True)]
            # arch's stationary bootstrap takes a mean block length; its signature says int, its code a float.
            bs = StationaryBootstrap(block, np.arange(table.days), seed=np.random.default_rng(11))  # type: ignore[arg-type]
            rows = []
            for (days_drawn,), _ in bs.bootstrap(reps):
                sums = table.sums[days_drawn].sum(axis=0)
                counts = table.counts[days_drawn].sum(axis=0)
                seen = counts > 0
                means = (sums[seen] / counts[seen][:, None]).mean(axis=0)
                drawn = np.concatenate([readings_of_day[d] for d in days_drawn])
                rows.append([means[0], means[1], np.median(drawn[:, 0]), np.median(drawn[:, 1])])
            out.append(np.asarray(rows))
        return out

    ours()  # warm
    started = time.perf_counter()
    mine = ours()
    t_ours = time.perf_counter() - started
    started = time.perf_counter()
    theirs = with_arch()
    t_arch = time.perf_counter() - started
    for got, expected in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert HOURS == 24
    print(f"data: {len(data)} series, {readings:,} readings ({days} days at {STEP_S} s), {reps} replicates")
    print("| work | time |")
    print("|---|---|")
    print(f"| evaluate_city: {len(ev.records)} estimates (before/after, BACI, compliance, coverage) | {whole:.1f} s |")
    print(f"| BACI bootstrap of {len(pairs)} pair-periods, pilotwatch (Numba kernels) | {t_ours:.2f} s |")
    print(f"| the same with arch StationaryBootstrap + numpy (replicates equal to 1e-9) | {t_arch:.2f} s |")
    print(f"arch / pilotwatch: {t_arch / t_ours:.2f}x")


if __name__ == "__main__":
    main()
