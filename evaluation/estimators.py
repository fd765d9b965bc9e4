"""Pure estimators: arrays in, a typed :class:`Estimate` out (estimate, interval, method, n).

Contract:

- Every function takes plain arrays (values already restricted to QC-good readings of one period) and returns
  :class:`Estimate` records; nothing here reads a database, a file or a clock.
- "Like with like" on the daily cycle: a period's level is the **hour-balanced mean**, the mean over the 24 hours
  of the local day of each hour's mean, so a period whose readings miss some nights is not compared with one that
  has them. Resamples are balanced the same way.
- Intervals are 95 % (configurable) percentile intervals of a block bootstrap (:mod:`evaluation.bootstrap`) whose
  unit is the **whole local day**: the day-to-day variation (weather, the day's discharges, a day's sensor state)
  makes every reading of a day depend on the others, and a block that cuts a day in two hides that dependence
  (blocks of readings chosen by Politis-White covered the truth only 88 % of the time in calibration). Days are
  resampled in blocks whose length (in days) is the Politis-White rule on the daily means, stated in ``method``;
  the periods are resampled independently. The second estimate is OLS with Newey-West / Driscoll-Kraay HAC errors
  (:mod:`evaluation.hac`).
- BACI-PS (Stewart-Oaten, Murdoch & Parker 1986): impact and control are paired by time and resampled together
  (the same days), so the cross-correlation that the paired design exploits survives the bootstrap. The
  relative BACI effect (``baci_relative``, the calibrated headline) is ``(I_after / I_before) / (C_after /
  C_before) - 1`` of the period **medians**: a multiplicative pilot effect ``e`` multiplies a median by exactly
  ``1 + e``, whatever each site's level, and a median is not moved by the few hours of a pollution event. The
  same ratio of hour-balanced means (``baci_relative_mean``) is beside it; in calibration its intervals covered
  the truth only ~90 % of the time over four-week periods, because a handful of rare events decide a mean and the
  bootstrap of a few days cannot see how rare they are.
- Relative changes are bootstrapped on the log scale and reported back as ``ratio - 1``; they are NaN (with the
  reason in ``note``) when a mean is not positive, since a ratio of means of a quantity that can be negative
  (temperature in some units, ORP) is meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from evaluation import _kernels
from evaluation.bootstrap import (
    BlockScheme,
    independent_units,
    optimal_block_length,
    percentile_interval,
    replicate,
    strata_means,
)
from evaluation.hac import ols_hac

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]

HOURS = 24
MIN_DAY_HOURS = 12
"""A local day enters the daily series (Hodges-Lehmann) only with readings in at least this many of its hours."""


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    replicates: int = 2000
    scheme: BlockScheme = BlockScheme.STATIONARY
    confidence: float = 0.95
    seed: int = 20260901

    def __post_init__(self) -> None:
        if self.replicates < 99:
            raise ValueError(f"replicates must be at least 99 for a 95 % percentile interval, got {self.replicates}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimate with its interval; ``periods`` holds the per-period figures it was computed from."""

    quantity: str
    estimate: float
    low: float
    high: float
    method: str
    n: int
    unit: str = ""
    block_length: float | None = None
    periods: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0.0 or self.high < 0.0)


@dataclass(frozen=True, slots=True)
class PeriodSample:
    """One period of one series: values, the local hour (0-23) and local day number of each value, time order."""

    values: F8
    hours: I8
    days: I8

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.hours.shape != (n,) or self.days.shape != (n,):
            raise ValueError(
                f"values, hours and days must have the same length; got {n}, {self.hours.shape}, {self.days.shape}"
            )
        if n and (self.hours.min() < 0 or self.hours.max() >= HOURS):
            raise ValueError("hours must be local hours of the day, 0-23")

    @property
    def n(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True, slots=True)
class PairedSample:
    """One period of an impact and a control series on shared sample times."""

    impact: F8
    control: F8
    hours: I8
    days: I8

    @property
    def n(self) -> int:
        return int(self.impact.shape[0])

    def difference(self) -> PeriodSample:
        return PeriodSample(self.impact - self.control, self.hours, self.days)


# ------------------------------------------------------------------------------------------------ small pieces
def hodges_lehmann(before: npt.ArrayLike, after: npt.ArrayLike) -> float:
    """The Hodges-Lehmann shift: the median of all differences ``after_j - before_i`` (not a difference of
    medians)."""
    x = np.asarray(before, dtype=np.float64)
    y = np.asarray(after, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        raise ValueError("hodges_lehmann needs at least one value in each sample")
    return float(np.median(np.subtract.outer(y, x)))


def balanced_mean(values: npt.ArrayLike, hours: npt.ArrayLike) -> float:
    """The mean over the local hours present of each hour's mean."""
    v = np.asarray(values, dtype=np.float64)
    h = np.asarray(hours, dtype=np.int64)
    return float(strata_means(v[:, None], h, HOURS, np.arange(v.shape[0], dtype=np.int64))[0])


def daily_means(sample: PeriodSample) -> F8:
    """Means per local day, for days with readings in at least :data:`MIN_DAY_HOURS` hours, in day order."""
    if sample.n == 0:
        return np.zeros(0)
    days, inverse = np.unique(sample.days, return_inverse=True)
    sums = np.bincount(inverse, weights=sample.values, minlength=days.shape[0])
    counts = np.bincount(inverse, minlength=days.shape[0])
    hours_seen = np.zeros((days.shape[0], HOURS), dtype=bool)
    hours_seen[inverse, sample.hours] = True
    keep = hours_seen.sum(axis=1) >= MIN_DAY_HOURS
    out: F8 = (sums / np.maximum(counts, 1))[keep]
    return out


@dataclass(frozen=True, slots=True)
class DayTable:
    """A period's readings summed per local day and hour: the unit the bootstrap resamples is a whole day."""

    sums: F8  # (days, 24, k)
    counts: F8  # (days, 24)
    starts: I8  # first reading of each day (readings are in time order, so a day's readings are contiguous)
    lengths: I8
    daily: F8  # (days, k): each day's mean, for the block length
    sorted_values: F8  # (k, n): each column's readings in ascending order
    sorted_days: I8  # (k, n): the table row (day) of each sorted reading

    @property
    def days(self) -> int:
        return int(self.counts.shape[0])

    def median(self, column: int, day_idx: I8) -> float:
        """The median of column ``column`` over the readings of the days drawn (with repetition)."""
        weights = np.bincount(day_idx, minlength=self.days).astype(np.int64)
        return float(_kernels.day_weighted_median(self.sorted_values[column], self.sorted_days[column], weights))


def day_table(values: F8, hours: I8, days: I8) -> DayTable:
    """Sum ``values`` (n, k) per local day and hour."""
    if values.shape[0] and np.any(np.diff(days) < 0):
        raise ValueError("readings must be in time order (local days ascending)")
    labels, starts, inverse, lengths = np.unique(days, return_index=True, return_inverse=True, return_counts=True)
    k = values.shape[1]
    sums = np.zeros((labels.shape[0], HOURS, k))
    counts = np.zeros((labels.shape[0], HOURS))
    np.add.at(sums, (inverse, hours), values)
    np.add.at(counts, (inverse, hours), 1.0)
    daily = sums.sum(axis=1) / counts.sum(axis=1)[:, None]
    order = np.argsort(values, axis=0, kind="stable")
    sorted_values = np.ascontiguousarray(np.take_along_axis(values, order, axis=0).T)
    sorted_days = np.ascontiguousarray(inverse.astype(np.int64)[order].T)
    return DayTable(sums, counts, starts.astype(np.int64), lengths.astype(np.int64), daily, sorted_values, sorted_days)


def day_block(daily: F8, scheme: BlockScheme) -> float:
    """Politis-White block length, in days, of a daily series, at least one day; 1 (days independent) when the
    series is too short (< 9 days) or constant to estimate."""
    if daily.shape[0] < 9 or not np.any(daily - daily.mean()):
        return 1.0
    return max(1.0, optimal_block_length(daily).for_scheme(scheme))


def resampled_means(table: DayTable, day_idx: I8) -> F8:
    out: F8 = _kernels.day_strata_means(table.sums, table.counts, day_idx)
    return out


def resampled_readings(table: DayTable, day_idx: I8) -> I8:
    out: I8 = _kernels.expand_days(table.starts, table.lengths, day_idx)
    return out


def _method(config: BootstrapConfig, blocks: Sequence[float], what: str, unit: str = "days") -> str:
    lengths = " and ".join(f"{b:.1f}" for b in blocks)
    return (
        f"{config.scheme.value} block bootstrap of whole local days, {what}; {config.replicates} replicates, "
        f"block lengths {lengths} {unit} (Politis-White on daily means; baseline and intervention), "
        f"{config.confidence:.0%} percentile interval expanded for the number of days (Hesterberg)"
    )


def _log_ratio(after: F8, before: F8) -> F8:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F8 = np.where((after > 0) & (before > 0), np.log(after / before), np.nan)
    return out


def _need(sample_n: int, what: str, minimum: int = 2) -> None:
    if sample_n < minimum:
        raise ValueError(f"{what} needs at least {minimum} readings in each period, got {sample_n}")


# ------------------------------------------------------------------------------------------------ before/after
def before_after(
    baseline: PeriodSample, intervention: PeriodSample, config: BootstrapConfig, unit: str = ""
) -> list[Estimate]:
    """Change at one site from baseline to intervention: hour-balanced means and medians per period, their
    differences, the relative change, the Hodges-Lehmann shift of daily means, and OLS with HAC errors."""
    _need(min(baseline.n, intervention.n), "before/after")
    scheme = config.scheme
    tb = day_table(baseline.values[:, None], baseline.hours, baseline.days)
    ta = day_table(intervention.values[:, None], intervention.hours, intervention.days)
    block_b, block_a = day_block(tb.daily[:, 0], scheme), day_block(ta.daily[:, 0], scheme)

    def stat(idx: Sequence[I8]) -> F8:
        ib, ia = idx
        return np.array(
            [
                resampled_means(tb, ib)[0],
                resampled_means(ta, ia)[0],
                tb.median(0, ib),
                ta.median(0, ia),
            ]
        )

    reps = replicate(
        [tb.days, ta.days],
        stat,
        blocks=[block_b, block_a],
        scheme=scheme,
        replicates=config.replicates,
        seed=config.seed,
    )
    mean_b, mean_a = (
        balanced_mean(baseline.values, baseline.hours),
        balanced_mean(intervention.values, intervention.hours),
    )
    med_b, med_a = float(np.median(baseline.values)), float(np.median(intervention.values))
    units = independent_units([tb.days, ta.days], [block_b, block_a])
    n = baseline.n + intervention.n
    blocks = (block_b, block_a)
    out = [
        Estimate(
            "mean_difference",
            mean_a - mean_b,
            *percentile_interval(reps[:, 1] - reps[:, 0], config.confidence, units),
            _method(config, blocks, "hour-balanced means"),
            n,
            unit,
            block_b,
            {"baseline": mean_b, "intervention": mean_a},
        ),
        Estimate(
            "median_difference",
            med_a - med_b,
            *percentile_interval(reps[:, 3] - reps[:, 2], config.confidence, units),
            _method(config, blocks, "medians"),
            n,
            unit,
            block_b,
            {"baseline": med_b, "intervention": med_a},
        ),
    ]
    if mean_b > 0 and mean_a > 0:
        low, high = percentile_interval(_log_ratio(reps[:, 1], reps[:, 0]), config.confidence, units)
        out.append(
            Estimate(
                "relative_change",
                mean_a / mean_b - 1.0,
                math.expm1(low),
                math.expm1(high),
                _method(config, blocks, "the log ratio of hour-balanced means"),
                n,
                "ratio - 1",
                block_b,
                {"baseline": mean_b, "intervention": mean_a},
            )
        )
    else:
        out.append(
            Estimate(
                "relative_change",
                math.nan,
                math.nan,
                math.nan,
                "ratio of hour-balanced means",
                n,
                "ratio - 1",
                note="not defined: a period's mean is not positive",
            )
        )
    out.append(hodges_lehmann_days(baseline, intervention, config, unit))
    per_day = (baseline.n + intervention.n) / (tb.days + ta.days)
    out.append(ols_before_after(baseline, intervention, max(block_b, block_a) * per_day, unit))
    return out


def hodges_lehmann_days(
    baseline: PeriodSample, intervention: PeriodSample, config: BootstrapConfig, unit: str = ""
) -> Estimate:
    """Hodges-Lehmann shift between the periods' daily means, with a block bootstrap over days."""
    db, da = daily_means(baseline), daily_means(intervention)
    if db.shape[0] < 2 or da.shape[0] < 2:
        return Estimate(
            "hodges_lehmann_shift",
            math.nan,
            math.nan,
            math.nan,
            "Hodges-Lehmann shift of daily means",
            int(db.shape[0] + da.shape[0]),
            unit,
            note=f"needs 2 full days per period; have {db.shape[0]} and {da.shape[0]}",
        )
    bb, ba = day_block(db, config.scheme), day_block(da, config.scheme)
    reps = replicate(
        [db.shape[0], da.shape[0]],
        lambda idx: np.array([hodges_lehmann(db[idx[0]], da[idx[1]])]),
        blocks=[bb, ba],
        scheme=config.scheme,
        replicates=config.replicates,
        seed=config.seed + 1,
    )
    return Estimate(
        "hodges_lehmann_shift",
        hodges_lehmann(db, da),
        *percentile_interval(reps[:, 0], config.confidence, independent_units([db.size, da.size], [bb, ba])),
        _method(config, (bb, ba), f"the Hodges-Lehmann shift of daily means (days with >= {MIN_DAY_HOURS} hours)"),
        int(db.shape[0] + da.shape[0]),
        unit,
        bb,
        {"baseline_days": float(db.shape[0]), "intervention_days": float(da.shape[0])},
    )


def _hour_dummies(hours: I8) -> F8:
    """Columns for hours 1..23 (hour 0 is the reference level)."""
    out: F8 = (hours[:, None] == np.arange(1, HOURS)[None, :]).astype(np.float64)
    return out


def _drop_empty(x: F8) -> F8:
    """Leave out dummy columns that are all zero (an hour never seen), which would make X'X singular."""
    keep = np.any(x != 0.0, axis=0)
    keep[:2] = True
    out: F8 = x[:, keep]
    return out


def ols_before_after(baseline: PeriodSample, intervention: PeriodSample, block: float, unit: str = "") -> Estimate:
    """``y = a + b * intervention + hour-of-day dummies``; ``b`` with Newey-West HAC errors (``block``: the
    bootstrap's block length in readings, which sets the lags, see :func:`evaluation.hac.newey_west_lags`)."""
    from evaluation.hac import newey_west_lags  # noqa: PLC0415 - kept beside its one use for readability

    y = np.concatenate([baseline.values, intervention.values])
    after = np.concatenate([np.zeros(baseline.n), np.ones(intervention.n)])
    hours = np.concatenate([baseline.hours, intervention.hours])
    x = _drop_empty(np.column_stack([np.ones_like(y), after, _hour_dummies(hours)]))
    lags = newey_west_lags(y.shape[0], block)
    fit = ols_hac(x, y, lags, only=1)
    low, high = fit.interval(1)
    return Estimate(
        "ols_hac_difference",
        float(fit.params[1]),
        low,
        high,
        f"OLS y ~ period + hour of day, Newey-West HAC errors ({lags} lags, Bartlett), normal 95 % interval",
        fit.nobs,
        unit,
        block,
        {"se": float(fit.bse[1])},
    )


# ------------------------------------------------------------------------------------------------ BACI
def baci(baseline: PairedSample, intervention: PairedSample, config: BootstrapConfig, unit: str = "") -> list[Estimate]:
    """BACI-PS from impact and control readings paired by time, and the BACI interaction from OLS with
    Driscoll-Kraay HAC errors."""
    _need(min(baseline.n, intervention.n), "BACI")
    scheme = config.scheme
    pb = np.column_stack([baseline.impact, baseline.control])
    pa = np.column_stack([intervention.impact, intervention.control])
    tb = day_table(pb, baseline.hours, baseline.days)
    ta = day_table(pa, intervention.hours, intervention.days)
    # The block length follows the paired difference, the series whose dependence the interval must respect.
    block_b = day_block(tb.daily[:, 0] - tb.daily[:, 1], scheme)
    block_a = day_block(ta.daily[:, 0] - ta.daily[:, 1], scheme)

    def stat(idx: Sequence[I8]) -> F8:
        mb = resampled_means(tb, idx[0])
        ma = resampled_means(ta, idx[1])
        medians = [tb.median(0, idx[0]), tb.median(1, idx[0]), ta.median(0, idx[1]), ta.median(1, idx[1])]
        return np.array([mb[0], mb[1], ma[0], ma[1], *medians])

    reps = replicate(
        [tb.days, ta.days],
        stat,
        blocks=[block_b, block_a],
        scheme=scheme,
        replicates=config.replicates,
        seed=config.seed,
    )
    ib, cb = (float(v) for v in strata_means(pb, baseline.hours, HOURS, np.arange(baseline.n, dtype=np.int64)))
    ia, ca = (float(v) for v in strata_means(pa, intervention.hours, HOURS, np.arange(intervention.n, dtype=np.int64)))
    medians = [
        float(np.median(x)) for x in (baseline.impact, baseline.control, intervention.impact, intervention.control)
    ]
    n = baseline.n + intervention.n
    blocks = (block_b, block_a)
    periods = {"impact_baseline": ib, "control_baseline": cb, "impact_intervention": ia, "control_intervention": ca}
    diff_reps = (reps[:, 2] - reps[:, 3]) - (reps[:, 0] - reps[:, 1])
    units = independent_units([tb.days, ta.days], [block_b, block_a])
    out = [
        Estimate(
            "baci_difference",
            (ia - ca) - (ib - cb),
            *percentile_interval(diff_reps, config.confidence, units),
            _method(config, blocks, "impact and control paired by time (BACI-PS), hour-balanced means"),
            n,
            unit,
            block_b,
            periods,
        )
    ]
    out.append(
        _relative(
            "baci_relative",
            (medians[0], medians[1], medians[2], medians[3]),
            reps[:, 4:8],
            method=_method(
                config, blocks, "the ratio of medians (I_after/I_before)/(C_after/C_before), paired by time"
            ),
            config=config,
            n=n,
            block=block_b,
            level="median",
            units=units,
        )
    )
    out.append(
        _relative(
            "baci_relative_mean",
            (ib, cb, ia, ca),
            reps[:, 0:4],
            method=_method(config, blocks, "the ratio of hour-balanced means (I_after/I_before)/(C_after/C_before)"),
            config=config,
            n=n,
            block=block_b,
            level="mean",
            units=units,
        )
    )
    per_day = (baseline.n + intervention.n) / (tb.days + ta.days)
    out.append(ols_baci(baseline, intervention, max(block_b, block_a) * per_day, unit))
    return out


def _relative(
    quantity: str,
    levels: tuple[float, float, float, float],
    reps: F8,
    *,
    method: str,
    config: BootstrapConfig,
    n: int,
    block: float,
    level: str,
    units: float,
) -> Estimate:
    """``(I_a / I_b) / (C_a / C_b) - 1`` of four levels (impact and control, before and after), its interval from
    the log-scale replicates (columns in the same order)."""
    ib, cb, ia, ca = levels
    periods = {
        f"impact_baseline_{level}": ib,
        f"control_baseline_{level}": cb,
        f"impact_intervention_{level}": ia,
        f"control_intervention_{level}": ca,
    }
    if min(levels) <= 0:
        return Estimate(
            quantity,
            math.nan,
            math.nan,
            math.nan,
            method,
            n,
            "ratio - 1",
            block,
            periods,
            note=f"not defined: a site's period {level} is not positive",
        )
    log_reps = _log_ratio(reps[:, 2], reps[:, 0]) - _log_ratio(reps[:, 3], reps[:, 1])
    low, high = percentile_interval(log_reps, config.confidence, units)
    note = ""
    if high - low <= 1e-12 * max(1.0, abs(low)):
        # An intermittent discharge: the median is the idle level, tied at the sensor's resolution in every
        # resample, so the replicates do not vary and the interval carries no information.
        note = f"every resample gives the same {level} (tied readings): this interval is not informative"
    return Estimate(
        quantity,
        (ia / ib) / (ca / cb) - 1.0,
        math.expm1(low),
        math.expm1(high),
        method,
        n,
        "ratio - 1",
        block,
        periods,
        note,
    )


def ols_baci(baseline: PairedSample, intervention: PairedSample, block: float, unit: str = "") -> Estimate:
    """``y = a + b impact + c after + d impact x after + hour dummies`` over both sites stacked; ``d`` is the BACI
    interaction, with Driscoll-Kraay errors (scores summed per sample time, Bartlett weights over time)."""
    from evaluation.hac import newey_west_lags  # noqa: PLC0415

    nb, na = baseline.n, intervention.n
    times = np.arange(nb + na)
    y = np.concatenate([baseline.impact, intervention.impact, baseline.control, intervention.control])
    impact = np.concatenate([np.ones(nb + na), np.zeros(nb + na)])
    after = np.tile(np.concatenate([np.zeros(nb), np.ones(na)]), 2)
    hours = np.tile(np.concatenate([baseline.hours, intervention.hours]), 2)
    x = _drop_empty(np.column_stack([impact * after, np.ones_like(y), impact, after, _hour_dummies(hours)]))
    lags = newey_west_lags(nb + na, block)
    fit = ols_hac(x, y, lags, time=np.tile(times, 2), only=0)
    low, high = fit.interval(0)
    return Estimate(
        "baci_interaction_hac",
        float(fit.params[0]),
        low,
        high,
        f"OLS y ~ site * period + hour of day over impact and control, Driscoll-Kraay HAC errors ({lags} lags, "
        "Bartlett), normal 95 % interval",
        fit.nobs,
        unit,
        block,
        {"se": float(fit.bse[0])},
    )
