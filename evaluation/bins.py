"""Waste-bin and effluent pilot metrics, per local day, and their change from baseline to intervention.

Contract:

- :func:`bin_days` turns one bin's accepted fill readings (per cent) into one row per local day: collections (a
  fall of at least :data:`COLLECTION_DROP` points between consecutive readings), the fill level just before each
  collection, collections made when the bin was nearly full (>= :data:`NEARLY_FULL` %), overflow hours (readings
  at or above ``overflow_at`` %, each standing for one sensor interval) and the filling rate (the mean rise per
  hour between consecutive readings that are not a collection).
- :func:`effluent_load_days` multiplies a concentration-like series by the flow paired in time (load = value x
  flow, in the value's unit x m3/h, summed over the day's hours: unit x m3).
- :func:`daily_change` compares a daily metric between periods: the difference of the means of the daily values
  and the relative change, with a stationary/circular bootstrap over days (Politis-White block length on the daily
  series). A day enters a metric only when it has readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from evaluation.bootstrap import independent_units, percentile_interval, replicate
from evaluation.estimators import BootstrapConfig, Estimate, day_block
from evaluation.series import Series

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]

COLLECTION_DROP = 30.0
"""A fall of this many fill points between two readings is a collection (a bin does not empty itself)."""
NEARLY_FULL = 80.0
OVERFLOW_AT = 100.0


@dataclass(frozen=True, slots=True)
class DailyMetric:
    name: str
    unit: str
    days: I8  # local day numbers
    values: F8


def bin_days(times_ms: I8, fill: F8, days: I8, interval_s: float, overflow_at: float = OVERFLOW_AT) -> pd.DataFrame:
    """One row per local day with readings (see the module docstring); ``days`` are the readings' local days."""
    if fill.shape[0] == 0:
        return pd.DataFrame(
            columns=[
                "day",
                "collections",
                "fill_at_collection",
                "nearly_full_collections",
                "overflow_hours",
                "fill_rate",
            ]
        )
    step = np.diff(fill)
    hours = np.diff(times_ms) / 3_600_000.0
    collected = step <= -COLLECTION_DROP
    # Rate between readings no more than two intervals apart, so a gap does not smear a day's filling into one step.
    rising = (~collected) & (hours > 0) & (hours <= 2.0 * interval_s / 3600.0)
    frame = pd.DataFrame({"day": days, "overflow": fill >= overflow_at})
    per_day = frame.groupby("day").agg(overflow_hours=("overflow", "sum"))
    per_day["overflow_hours"] = per_day["overflow_hours"] * interval_s / 3600.0
    events = pd.DataFrame({"day": days[1:][collected], "level": fill[:-1][collected]})
    coll = events.groupby("day").agg(
        collections=("level", "size"),
        fill_at_collection=("level", "mean"),
        nearly_full_collections=("level", lambda s: int((s >= NEARLY_FULL).sum())),
    )
    rates = pd.DataFrame({"day": days[1:][rising], "rise": step[rising], "hours": hours[rising]})
    rate = rates.groupby("day").agg(rise=("rise", "sum"), hours=("hours", "sum"))
    per_day = per_day.join(coll, how="left").join(rate, how="left")
    per_day["collections"] = per_day["collections"].fillna(0).astype(int)
    per_day["nearly_full_collections"] = per_day["nearly_full_collections"].fillna(0).astype(int)
    per_day["fill_rate"] = per_day["rise"] / per_day["hours"]
    return per_day.drop(columns=["rise", "hours"]).reset_index()


def effluent_load_days(
    concentration: Series,
    flow: Series,
    days_of: npt.NDArray[np.int64],
    ok: npt.NDArray[np.bool_],
    flow_ok: npt.NDArray[np.bool_],
) -> pd.DataFrame:
    """Daily load (value x flow summed over the day's hours) of readings paired with a flow reading in the same
    interval cell. ``days_of`` are the concentration readings' local days; ``ok``/``flow_ok`` the accepted ones."""
    cell_ms = int(concentration.interval_s * 1000)
    c = (
        pd.DataFrame(
            {"cell": concentration.times_ms[ok] // cell_ms, "value": concentration.values[ok], "day": days_of[ok]}
        )
        .groupby("cell")
        .agg(value=("value", "mean"), day=("day", "first"))
    )
    f = pd.DataFrame({"cell": flow.times_ms[flow_ok] // cell_ms, "flow": flow.values[flow_ok]}).groupby("cell").mean()
    joined = c.join(f, how="inner")
    joined["load"] = joined["value"] * joined["flow"] * concentration.interval_s / 3600.0
    return joined.groupby("day").agg(load=("load", "sum"), cells=("load", "size")).reset_index()


def daily_change(
    baseline: F8, intervention: F8, config: BootstrapConfig, *, name: str, unit: str, scale: float = 1.0
) -> list[Estimate]:
    """Difference of the mean daily value (times ``scale``, e.g. 7 for per week) and the relative change."""
    b = baseline[np.isfinite(baseline)]
    a = intervention[np.isfinite(intervention)]
    if b.shape[0] < 2 or a.shape[0] < 2:
        note = f"needs 2 days with data in each period; have {b.shape[0]} and {a.shape[0]}"
        return [
            Estimate(
                f"{name}_difference",
                math.nan,
                math.nan,
                math.nan,
                "daily values",
                int(b.size + a.size),
                unit,
                note=note,
            )
        ]
    bb, ba = day_block(b, config.scheme), day_block(a, config.scheme)
    reps = replicate(
        [b.shape[0], a.shape[0]],
        lambda idx: np.array([b[idx[0]].mean(), a[idx[1]].mean()]),
        blocks=[bb, ba],
        scheme=config.scheme,
        replicates=config.replicates,
        seed=config.seed + 11,
    )
    method = (
        f"{config.scheme.value} block bootstrap of days, mean of daily values; {config.replicates} replicates, "
        f"block lengths {bb:.1f} and {ba:.1f} days (Politis-White on the daily series), "
        f"{config.confidence:.0%} percentile interval"
    )
    mb, ma = float(b.mean()), float(a.mean())
    units = independent_units([b.size, a.size], [bb, ba])
    low, high = percentile_interval(reps[:, 1] - reps[:, 0], config.confidence, units)
    periods = {
        "baseline": mb * scale,
        "intervention": ma * scale,
        "baseline_days": float(b.size),
        "intervention_days": float(a.size),
    }
    out = [
        Estimate(
            f"{name}_difference",
            (ma - mb) * scale,
            low * scale,
            high * scale,
            method,
            int(b.size + a.size),
            unit,
            bb,
            periods,
        )
    ]
    if mb > 0 and ma > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(reps[:, 1] / reps[:, 0])
        low, high = percentile_interval(logs, config.confidence)
        out.append(
            Estimate(
                f"{name}_relative_change",
                ma / mb - 1.0,
                math.expm1(low),
                math.expm1(high),
                method,
                int(b.size + a.size),
                "ratio - 1",
                bb,
                periods,
            )
        )
    return out
