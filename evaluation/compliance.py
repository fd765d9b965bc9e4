"""Compliance with a limit, by the statistic the standard names, per period, and its change.

Contract: :func:`period_compliance` takes the accepted readings of one period and one
:class:`pilotwatch.manifest.ParameterLimit` and returns the statistic the standard names
(:class:`pilotwatch.manifest.LimitStatistic`: each sample, the 20th or 80th percentile over the samples, the mean
or the geometric mean), whether that statistic meets the limit, and the share and hours of readings outside the
limit (each reading stands for one sensor interval). :func:`exceedance_change` is the change of that share from
baseline to intervention, with the day-block bootstrap of :mod:`evaluation.estimators`.

Which bound a statistic is held to follows the standards in the reference: P20 is a floor (Thai DO), P80 a ceiling
(Thai BOD, coliform); a limit with both bounds (pH 5-9) is met when the statistic lies inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evaluation.bootstrap import independent_units, percentile_interval, replicate
from evaluation.estimators import (
    BootstrapConfig,
    Estimate,
    PeriodSample,
    day_block,
    day_table,
    resampled_means,
)
from pilotwatch.manifest import LimitStatistic, ParameterLimit

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PeriodCompliance:
    statistic: LimitStatistic
    value: float
    compliant: bool | None  # None: no readings
    readings: int
    outside: int
    share_outside: float
    hours_outside: float


def outside(values: F8, limit: ParameterLimit) -> npt.NDArray[np.bool_]:
    out = np.zeros(values.shape[0], dtype=bool)
    if limit.min is not None:
        out |= values < limit.min
    if limit.max is not None:
        out |= values > limit.max
    return out


def statistic_value(values: F8, statistic: LimitStatistic) -> float:
    if values.shape[0] == 0:
        return math.nan
    if statistic is LimitStatistic.P20:
        return float(np.percentile(values, 20))
    if statistic is LimitStatistic.P80:
        return float(np.percentile(values, 80))
    if statistic is LimitStatistic.MEAN:
        return float(values.mean())
    if statistic is LimitStatistic.GEOMEAN:
        return float(np.exp(np.log(values).mean())) if np.all(values > 0) else math.nan
    return math.nan  # SAMPLE: every reading is compared, there is no one statistic


def period_compliance(values: F8, limit: ParameterLimit, interval_s: float) -> PeriodCompliance:
    out = outside(values, limit)
    n = int(values.shape[0])
    stat = statistic_value(values, limit.statistic)
    if n == 0:
        compliant: bool | None = None
    elif limit.statistic is LimitStatistic.SAMPLE:
        compliant = not bool(out.any())
    else:
        low_ok = limit.min is None or stat >= limit.min
        high_ok = limit.max is None or stat <= limit.max
        compliant = bool(low_ok and high_ok) if math.isfinite(stat) else None
    return PeriodCompliance(
        statistic=limit.statistic,
        value=stat,
        compliant=compliant,
        readings=n,
        outside=int(out.sum()),
        share_outside=float(out.mean()) if n else math.nan,
        hours_outside=float(out.sum() * interval_s / 3600.0),
    )


def exceedance_change(
    baseline: PeriodSample, intervention: PeriodSample, limit: ParameterLimit, config: BootstrapConfig
) -> Estimate:
    """Share of readings outside the limit, intervention minus baseline, with a day-block bootstrap interval."""
    if baseline.n < 2 or intervention.n < 2:
        return Estimate(
            "exceedance_share_difference",
            math.nan,
            math.nan,
            math.nan,
            "share of readings outside the limit",
            baseline.n + intervention.n,
            "share",
            note="needs readings in both periods",
        )
    xb = outside(baseline.values, limit).astype(np.float64)[:, None]
    xa = outside(intervention.values, limit).astype(np.float64)[:, None]
    tb, ta = day_table(xb, baseline.hours, baseline.days), day_table(xa, intervention.hours, intervention.days)
    bb, ba = day_block(tb.daily[:, 0], config.scheme), day_block(ta.daily[:, 0], config.scheme)

    def stat(idx: Sequence[I8]) -> F8:
        return np.array([resampled_means(ta, idx[1])[0] - resampled_means(tb, idx[0])[0]])

    reps = replicate(
        [tb.days, ta.days],
        stat,
        blocks=[bb, ba],
        scheme=config.scheme,
        replicates=config.replicates,
        seed=config.seed + 7,
    )
    every = [np.arange(tb.days, dtype=np.int64), np.arange(ta.days, dtype=np.int64)]
    return Estimate(
        "exceedance_share_difference",
        float(stat(every)[0]),
        *percentile_interval(reps[:, 0], config.confidence, independent_units([tb.days, ta.days], [bb, ba])),
        f"{config.scheme.value} block bootstrap of whole local days, hour-balanced share of readings outside the "
        f"limit; {config.replicates} replicates, block lengths {bb:.1f} and {ba:.1f} days (Politis-White)",
        baseline.n + intervention.n,
        "share",
        bb,
        {"baseline": float(xb.mean()), "intervention": float(xa.mean())},
    )
