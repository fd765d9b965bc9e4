"""The estimators against statsmodels and arch on fixed data (1e-9), naive kernels, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from arch.bootstrap import CircularBlockBootstrap, StationaryBootstrap
from arch.bootstrap import optimal_block_length as arch_block_length

from evaluation import _kernels
from evaluation.bootstrap import (
    BlockScheme,
    expanded_alpha,
    optimal_block_length,
    percentile_interval,
    replicate,
    resample_indices,
    strata_means,
)
from evaluation.estimators import (
    BootstrapConfig,
    PairedSample,
    PeriodSample,
    baci,
    balanced_mean,
    before_after,
    daily_means,
    day_table,
    hodges_lehmann,
    resampled_readings,
)
from evaluation.hac import SmallSample, ols_hac
from tests.evaluation import naive

TOL = 1e-9


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


@pytest.mark.parametrize(("n", "phi"), [(500, 0.8), (2000, 0.3), (12_000, 0.97), (50, 0.0)])
def test_politis_white_equals_arch(n: int, phi: float) -> None:
    x = ar1(n, phi, seed=n)
    ours = optimal_block_length(x)
    theirs = arch_block_length(x)
    assert ours.stationary == pytest.approx(float(theirs["stationary"].iloc[0]), abs=TOL, rel=TOL)
    assert ours.circular == pytest.approx(float(theirs["circular"].iloc[0]), abs=TOL, rel=TOL)


def test_politis_white_grows_with_autocorrelation() -> None:
    weak = optimal_block_length(ar1(3000, 0.2, 1)).stationary
    strong = optimal_block_length(ar1(3000, 0.95, 1)).stationary
    assert strong > 4 * weak


def test_block_length_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 9 finite values"):
        optimal_block_length([1.0, 2.0, np.nan] * 5)
    with pytest.raises(ValueError, match="constant"):
        optimal_block_length(np.ones(50))


@pytest.mark.parametrize(
    ("scheme", "arch_cls", "block"),
    [
        (BlockScheme.STATIONARY, StationaryBootstrap, 7.3),
        (BlockScheme.CIRCULAR, CircularBlockBootstrap, 9),
    ],
)
def test_bootstrap_equals_arch_given_the_same_seed(scheme: BlockScheme, arch_cls: type, block: float) -> None:
    x = ar1(1001, 0.7, seed=3)
    bs = arch_cls(block, x, seed=np.random.default_rng(42))
    theirs = np.array([np.mean(data[0][0]) for data in bs.bootstrap(200)])
    ours = replicate(
        [x.shape[0]],
        lambda idx: np.array([np.mean(x[idx[0]])]),
        blocks=[block],
        scheme=scheme,
        replicates=200,
        seed=np.random.default_rng(42),
    )[:, 0]
    np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL)
    assert np.std(ours) > 0  # the replicates really differ


def test_index_kernels_equal_naive_twins() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 2, 17, 400):
        starts = rng.integers(n, size=n, dtype=np.int64)
        u = rng.random(n)
        expected = naive.stationary_indices(starts, u, 0.1)
        np.testing.assert_array_equal(_kernels.stationary_indices(starts.copy(), u, 0.1), expected)
        for block in (1, 3, n):
            blocks = -(-n // block)
            s = rng.integers(n, size=blocks, dtype=np.int64)
            np.testing.assert_array_equal(_kernels.circular_indices(s, block, n), naive.circular_indices(s, block, n))


def test_strata_means_kernel_equals_naive_twin() -> None:
    rng = np.random.default_rng(9)
    values = rng.standard_normal((300, 2))
    strata = rng.integers(24, size=300, dtype=np.int64)
    idx = resample_indices(rng, 300, BlockScheme.STATIONARY, 10.0)
    np.testing.assert_allclose(strata_means(values, strata, 24, idx), naive.strata_means(values, strata, idx), rtol=TOL)


def _design(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hours = np.arange(n) % 24
    after = (np.arange(n) >= n // 2).astype(float)
    dummies = (hours[:, None] == np.arange(1, 24)[None, :]).astype(float)
    x = np.column_stack([np.ones(n), after, dummies])
    y = 2.0 + 0.5 * after + np.sin(hours / 24 * 2 * np.pi) + ar1(n, 0.8, seed)
    return x, y + 0.01 * rng.standard_normal(n)


@pytest.mark.parametrize(("maxlags", "correction"), [(0, None), (1, None), (12, SmallSample.HAC), (60, None)])
def test_ols_hac_equals_statsmodels(maxlags: int, correction: SmallSample | None) -> None:
    x, y = _design(1500, seed=maxlags)
    ours = ols_hac(x, y, maxlags, correction=correction)
    kwds = {"maxlags": maxlags, "use_correction": correction is SmallSample.HAC}
    theirs = sm.OLS(y, x).fit(cov_type="HAC", cov_kwds=kwds)
    np.testing.assert_allclose(ours.params, theirs.params, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours.interval(1), theirs.conf_int()[1], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("correction", [SmallSample.CLUSTER, SmallSample.HAC, SmallSample.NONE])
def test_driscoll_kraay_equals_statsmodels_groupsum(correction: SmallSample) -> None:
    x1, y1 = _design(400, seed=1)
    x2, y2 = _design(400, seed=2)
    impact = np.concatenate([np.ones(400), np.zeros(400)])
    x = np.column_stack([np.vstack([x1, x2]), impact, impact * np.concatenate([x1[:, 1], x2[:, 1]])])
    y = np.concatenate([y1 + 1.0, y2])
    time = np.tile(np.arange(400), 2)
    ours = ols_hac(x, y, 10, time=time, correction=correction)
    use = False if correction is SmallSample.NONE else correction.value
    theirs = sm.OLS(y, x).fit(cov_type="hac-groupsum", cov_kwds={"time": time, "maxlags": 10, "use_correction": use})
    np.testing.assert_allclose(ours.params, theirs.params, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=TOL, atol=TOL)


def test_hand_computed_cases() -> None:
    # All pairwise differences of [4, 6] - [1, 2, 3] are 3 2 1 5 4 3: median 3 (the difference of medians is 3 too,
    # so also a case where they differ: [0, 10] - [0, 1, 2] = 0 -1 -2 10 9 8 -> median 4, medians differ by 4)
    assert hodges_lehmann([1, 2, 3], [4, 6]) == 3.0
    assert hodges_lehmann([0, 1, 2], [0, 10]) == 4.0
    assert hodges_lehmann([0, 1, 2], [0, 10, 11]) == 9.0
    # Hour 0 has 1 and 3 (mean 2), hour 1 has 10 (mean 10): balanced mean 6, plain mean 14/3.
    assert balanced_mean([1.0, 3.0, 10.0], [0, 0, 1]) == 6.0
    # OLS with one regressor and maxlags 1 by hand: x = [1,1,1,1], y = [1,2,3,6] -> mean 3, residuals -2 -1 0 3;
    # S = sum u^2 + 2 * (1 - 1/2) * sum u_t u_{t-1} = 14 + (2 + 0 + 0) = 16; var = S / n^2 = 1; with the
    # small-sample factor n / (n - k) = 4/3.
    fit = ols_hac(np.ones((4, 1)), [1.0, 2.0, 3.0, 6.0], 1)
    assert fit.params[0] == pytest.approx(3.0, abs=TOL)
    assert fit.bse[0] == pytest.approx(1.0, abs=TOL)
    corrected = ols_hac(np.ones((4, 1)), [1.0, 2.0, 3.0, 6.0], 1, correction=SmallSample.HAC)
    assert corrected.bse[0] == pytest.approx(np.sqrt(4.0 / 3.0), abs=TOL)


def _periods(values: np.ndarray, days0: int = 0) -> PeriodSample:
    n = values.shape[0]
    hours = (np.arange(n) // 12) % 24  # 5-minute readings
    days = days0 + np.arange(n) // 288
    return PeriodSample(values, hours.astype(np.int64), days.astype(np.int64))


def test_before_after_recovers_a_known_shift_on_autocorrelated_data() -> None:
    n = 288 * 20
    base = _periods(10 + ar1(n, 0.9, 11))
    after = _periods(12 + ar1(n, 0.9, 12), days0=20)
    est = {e.quantity: e for e in before_after(base, after, BootstrapConfig(replicates=300, seed=1))}
    assert set(est) == {
        "mean_difference",
        "median_difference",
        "relative_change",
        "hodges_lehmann_shift",
        "ols_hac_difference",
    }
    for name in ("mean_difference", "median_difference", "hodges_lehmann_shift", "ols_hac_difference"):
        assert est[name].covers(2.0), est[name]
        assert est[name].excludes_zero, est[name]
    assert est["relative_change"].covers(0.2)
    assert est["mean_difference"].block_length is not None
    assert est["mean_difference"].block_length >= 1.0
    assert "whole local days" in est["mean_difference"].method
    assert "Politis-White" in est["mean_difference"].method


def test_daily_means_drop_short_days() -> None:
    sample = _periods(np.arange(288 * 2 + 60, dtype=float))
    assert daily_means(sample).shape == (2,)


def test_baci_difference_by_hand_and_no_effect_interval() -> None:
    # A control that moves with the impact: the paired difference removes the shared change entirely.
    n = 288 * 14
    common_b, common_a = ar1(n, 0.99, 21), ar1(n, 0.99, 22) + 3.0
    before = PairedSample(5 + common_b + 0.1 * ar1(n, 0.5, 23), 4 + common_b, *_hd(n, 0))
    after = PairedSample(5 + common_a + 0.1 * ar1(n, 0.5, 24), 4 + common_a, *_hd(n, 14))
    est = {e.quantity: e for e in baci(before, after, BootstrapConfig(replicates=300, seed=2))}
    expected = balanced_mean(after.impact - after.control, after.hours) - balanced_mean(
        before.impact - before.control, before.hours
    )
    assert est["baci_difference"].estimate == pytest.approx(expected, abs=TOL)
    assert est["baci_difference"].covers(0.0)
    assert est["baci_interaction_hac"].covers(0.0)
    assert est["baci_interaction_hac"].estimate == pytest.approx(expected, abs=0.01)


def _hd(n: int, day0: int) -> tuple[np.ndarray, np.ndarray]:
    return ((np.arange(n) // 12) % 24).astype(np.int64), (day0 + np.arange(n) // 288).astype(np.int64)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="replicates must be at least 99"):
        BootstrapConfig(replicates=10)
    with pytest.raises(ValueError, match="before/after needs at least 2 readings"):
        before_after(_periods(np.ones(1)), _periods(np.ones(5)), BootstrapConfig())


def test_expanded_percentile_interval_by_hand() -> None:
    # Hesterberg's expanded percentile: n = 28 days -> Phi(-sqrt(28/27) * t(0.975, 27)) = Phi(-2.08945) = 0.018334
    assert expanded_alpha(0.95, 28) == pytest.approx(0.018334, abs=2e-6)
    assert expanded_alpha(0.95, None) == pytest.approx(0.025)
    assert expanded_alpha(0.95, 1e6) == pytest.approx(0.025, abs=1e-5)  # many days: the plain percentile interval
    reps = np.linspace(0.0, 1.0, 100_001)
    low, high = percentile_interval(reps, 0.95, 28)
    assert (low, high) == pytest.approx((0.018334, 1 - 0.018334), abs=2e-6)


def test_one_coefficient_variance_equals_the_full_covariance() -> None:
    x, y = _design(800, seed=4)
    for lags in (30, 200):  # 200: the FFT path for many lags
        full = ols_hac(x, y, lags)
        only = ols_hac(x, y, lags, only=1)
        assert only.bse[1] == pytest.approx(full.bse[1], rel=TOL)
    time = np.tile(np.arange(400), 2)
    assert ols_hac(x, y, 9, time=time, only=0).bse[0] == pytest.approx(ols_hac(x, y, 9, time=time).bse[0], rel=TOL)


def test_day_weighted_median_equals_numpy_median_of_the_resample() -> None:
    rng = np.random.default_rng(3)
    sample = _periods(np.round(rng.standard_normal(288 * 12), 1))  # rounded: many ties
    table = day_table(sample.values[:, None], sample.hours, sample.days)
    for size in range(1, 14):
        idx = rng.integers(table.days, size=size, dtype=np.int64)
        concatenated = np.concatenate(
            [sample.values[table.starts[d] : table.starts[d] + table.lengths[d]] for d in idx]
        )
        assert table.median(0, idx) == np.median(concatenated)
        np.testing.assert_array_equal(sample.values[resampled_readings(table, idx)], concatenated)


def test_a_median_tied_in_every_resample_is_marked_not_informative() -> None:
    # An intermittent discharge: idle at 80 (resolution 1), a batch of 2,000 one hour a day; the pilot scales all.
    n = 288 * 14
    batch = ((np.arange(n) // 12) % 24 == 10) * np.repeat(np.random.default_rng(1).uniform(0.5, 1.5, 14), 288)
    idle_and_batches = 80.0 + np.round(1920.0 * batch)
    before = PairedSample(idle_and_batches.copy(), idle_and_batches.copy(), *_hd(n, 0))
    after = PairedSample(np.round(0.6 * idle_and_batches), idle_and_batches.copy(), *_hd(n, 14))
    est = {e.quantity: e for e in baci(before, after, BootstrapConfig(replicates=199, seed=3))}
    assert est["baci_relative"].estimate == pytest.approx(-0.4)
    assert "not informative" in est["baci_relative"].note
    assert est["baci_relative_mean"].note == ""
