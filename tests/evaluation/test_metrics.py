"""Compliance by the statistic each standard names, bin metrics and coverage, on hand-made cases."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from evaluation.bins import bin_days, daily_change
from evaluation.compliance import period_compliance
from evaluation.coverage import period_coverage
from evaluation.estimators import BootstrapConfig
from evaluation.series import QCAcceptance, Series
from pilotwatch.manifest import LimitStatistic, ParameterLimit, Period
from pilotwatch.schema import QartodFlag

DO = np.array([1.0, 1.5, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0])  # P20 = 2.3 (linear), P80 = 5.1


@pytest.mark.parametrize(
    ("limit", "value", "compliant", "outside"),
    [
        # Thai DO class 4: the 20th percentile must be at least 2.0 -> P20 2.3 meets it though two samples are below.
        (ParameterLimit(min=2.0, statistic=LimitStatistic.P20), 2.3, True, 2),
        (ParameterLimit(min=3.0, statistic=LimitStatistic.P20), 2.3, False, 3),
        # A P80 ceiling: 5.1 is above 5.0.
        (ParameterLimit(max=5.0, statistic=LimitStatistic.P80), 5.1, False, 2),
        (ParameterLimit(max=6.0, statistic=LimitStatistic.MEAN), 3.65, True, 0),
        # Every sample: one reading below 1.2 breaks a sample limit.
        (ParameterLimit(min=1.2, max=9.0, statistic=LimitStatistic.SAMPLE), math.nan, False, 1),
    ],
)
def test_compliance_uses_the_statistic_the_standard_names(
    limit: ParameterLimit, value: float, compliant: bool, outside: int
) -> None:
    result = period_compliance(DO, limit, interval_s=300.0)
    if math.isnan(value):
        assert math.isnan(result.value)
    else:
        assert result.value == pytest.approx(value)
    assert result.compliant is compliant
    assert result.outside == outside
    assert result.share_outside == pytest.approx(outside / 10)
    assert result.hours_outside == pytest.approx(outside * 300 / 3600)


def test_geometric_mean_limit() -> None:
    coliform = np.array([10.0, 100.0, 1000.0])  # geometric mean 100
    assert period_compliance(coliform, ParameterLimit(max=100.0, statistic=LimitStatistic.GEOMEAN), 3600).compliant
    assert not period_compliance(coliform, ParameterLimit(max=99.0, statistic=LimitStatistic.GEOMEAN), 3600).compliant
    assert period_compliance(np.zeros(0), ParameterLimit(max=1.0), 60).compliant is None


def test_bin_days_by_hand() -> None:
    # One day of hourly readings: 5 % rising 10 %/h to 85 % at 08:00, collected (09:00 reads 5 %), rising to 105 %
    # at 19:00 and staying there (three readings >= 100 %), collected again (22:00 reads 5 %), 15 % at 23:00.
    hours = np.arange(24)
    fill = np.empty(24)
    fill[:9] = 5 + 10 * hours[:9]
    fill[9:20] = 5 + 10 * np.arange(11)
    fill[20:22] = 105.0
    fill[22:] = [5.0, 15.0]
    times = (hours * 3_600_000).astype(np.int64)
    table = bin_days(times, fill, np.zeros(24, dtype=np.int64), 3600.0)
    row = table.iloc[0]
    assert row["collections"] == 2
    assert row["fill_at_collection"] == pytest.approx((85 + 105) / 2)
    assert row["nearly_full_collections"] == 2
    assert row["overflow_hours"] == pytest.approx(3.0)
    assert row["fill_rate"] == pytest.approx((80 + 100 + 10) / 21)


def test_daily_change_of_collections_per_week() -> None:
    rng = np.random.default_rng(1)
    before = rng.poisson(1.0, 60).astype(float)
    after = rng.poisson(0.5, 60).astype(float)
    est = {
        e.quantity: e
        for e in daily_change(
            before,
            after,
            BootstrapConfig(replicates=299),
            name="collections_per_week",
            unit="collections/week",
            scale=7.0,
        )
    }
    diff = est["collections_per_week_difference"]
    assert diff.estimate == pytest.approx(7 * (after.mean() - before.mean()))
    assert diff.high < 0  # clearly fewer collections
    assert est["collections_per_week_relative_change"].covers(after.mean() / before.mean() - 1)


def test_coverage_counts_expected_received_accepted_and_gaps() -> None:
    # Bangkok (UTC+7): the period 2026-06-01..06-03 local is 48 h; 5-minute sensor -> 576 expected.
    start = int(dt.datetime(2026, 5, 31, 17, tzinfo=dt.UTC).timestamp() * 1000)
    times = start + np.arange(576, dtype=np.int64) * 300_000
    keep = np.ones(576, dtype=bool)
    keep[100:130] = False  # a 2.5 h gap
    flags = np.full(576, int(QartodFlag.GOOD), np.uint8)
    flags[:10] = int(QartodFlag.SUSPECT)
    series = Series(times[keep], np.ones(int(keep.sum())), flags[keep], 300.0)
    _, days = series.local("Asia/Bangkok")
    period = Period(start=dt.date(2026, 6, 1), end=dt.date(2026, 6, 3))
    far_future = 10**13
    cov = period_coverage(series, days, period, "Asia/Bangkok", acceptance=QCAcceptance.GOOD, as_of_ms=far_future)
    assert (cov.expected, cov.received, cov.accepted) == (576, 546, 536)
    assert cov.gaps == 1
    assert cov.longest_gap_h == pytest.approx(31 * 5 / 60)
    assert cov.coverage == pytest.approx(536 / 576)
    # Nothing is expected from the future: as of noon local on day one, 12 h are due.
    noon = start + 12 * 3_600_000
    partial = period_coverage(series, days, period, "Asia/Bangkok", acceptance=QCAcceptance.GOOD, as_of_ms=noon)
    assert partial.expected == 144
