"""Evaluate one site pair or one city: the functions that turn series and the manifest into estimates.

Contract: :func:`evaluate_pair` (BACI of an impact and a control series) and :func:`evaluate_site_parameter`
(before/after of one series) are what both the evidence pack and ``pilotwatch evaluate calibrate`` call, so the
calibration measures exactly the method applied to stored data. :func:`naive_t_test` is the test the method
replaces, kept only to show its false-positive rate.
"""

from __future__ import annotations

import math

import numpy as np

from evaluation.estimators import BootstrapConfig, Estimate, baci, before_after
from evaluation.series import QCAcceptance, Series, paired_sample, period_sample
from pilotwatch.manifest import Periods


def evaluate_site_parameter(
    series: Series,
    periods: Periods,
    timezone: str,
    *,
    acceptance: QCAcceptance,
    config: BootstrapConfig,
    unit: str = "",
) -> list[Estimate]:
    base = period_sample(series, periods.baseline, timezone, acceptance)
    after = period_sample(series, periods.intervention, timezone, acceptance)
    return before_after(base, after, config, unit)


def evaluate_pair(
    impact: Series,
    control: Series,
    periods: Periods,
    timezone: str,
    *,
    acceptance: QCAcceptance,
    config: BootstrapConfig,
    unit: str = "",
) -> list[Estimate]:
    """BACI estimates of an impact series against its control over the impact site's periods."""
    base = paired_sample(impact, control, periods.baseline, timezone, acceptance)
    after = paired_sample(impact, control, periods.intervention, timezone, acceptance)
    return baci(base, after, config, unit)


def naive_t_test(impact: Series, control: Series, periods: Periods, timezone: str, acceptance: QCAcceptance) -> float:
    """Two-sided p of Welch's t on the impact - control differences before vs after, readings taken as
    independent (normal approximation; n is in the thousands). This is the trap: do not report it as evidence."""
    base = paired_sample(impact, control, periods.baseline, timezone, acceptance).difference().values
    after = paired_sample(impact, control, periods.intervention, timezone, acceptance).difference().values
    if base.shape[0] < 2 or after.shape[0] < 2:
        return math.nan
    se = math.sqrt(np.var(base, ddof=1) / base.shape[0] + np.var(after, ddof=1) / after.shape[0])
    if se == 0:
        return math.nan
    t = (after.mean() - base.mean()) / se
    return math.erfc(abs(t) / math.sqrt(2.0))
