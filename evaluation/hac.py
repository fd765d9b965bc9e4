"""Ordinary least squares with heteroskedasticity- and autocorrelation-consistent (HAC) standard errors.

Contract: :func:`ols_hac` takes a design matrix (n, k) and a response ``y`` (n,), both finite, rows in time
order, and returns the OLS coefficients with the Newey-West (1987) covariance: Bartlett weights
``1 - l / (maxlags + 1)`` over lags ``1..maxlags`` of the score products ``x_t u_t``. With ``time`` (one integer
period per row, for a panel such as an impact and a control site observed at the same times) the scores are first
summed per period, which is the Driscoll & Kraay (1998) estimator. Small-sample factors are those of statsmodels,
with its defaults (none for a time series, ``CLUSTER`` for a panel): ``HAC`` multiplies by ``n / (n - k)``,
``CLUSTER`` by ``G / (G - 1) * (n - 1) / (n - k)`` (G periods). The result equals statsmodels'
``OLS(y, X).fit(cov_type="HAC" | "hac-groupsum", ...)`` to 1e-9 (tests hold it).

Intervals use the normal distribution, as statsmodels does for a robust covariance.

:func:`newey_west_lags` is the lag rule the evaluation uses: the larger of Newey & West's (1994) plug-in
``floor(4 (n / 100) ** (2 / 9))`` and the series' Politis-White block length, because sensor series stay
correlated for a day (hundreds of 5-minute lags), far past what the plug-in rule assumes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F8 = npt.NDArray[np.float64]

Z_975 = 1.959963984540054
"""The 97.5 % point of the standard normal distribution (two-sided 95 % intervals)."""


class SmallSample(enum.StrEnum):
    NONE = "none"
    HAC = "hac"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class OlsHac:
    params: F8
    cov: F8
    nobs: int
    maxlags: int
    correction: SmallSample
    groups: int | None = None

    @property
    def bse(self) -> F8:
        se: F8 = np.sqrt(np.diag(self.cov))
        return se

    def interval(self, column: int, z: float = Z_975) -> tuple[float, float]:
        centre, half = float(self.params[column]), z * float(self.bse[column])
        return centre - half, centre + half


def _weighted_autocov_sum(scores: F8, maxlags: int) -> F8:
    if scores.shape[1] == 1 and maxlags > 32:
        # One column (``only=``) and many lags: all autocovariances at once by FFT, O(n log n) instead of
        # O(n * maxlags); the same sum to rounding (~1e-13 of the lag-0 term).
        x = scores[:, 0]
        size = 1 << int(2 * x.shape[0] - 1).bit_length()
        spectrum = np.fft.rfft(x, size)
        acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: maxlags + 1]
        weights = 1.0 - np.arange(1, maxlags + 1) / (maxlags + 1.0)
        return np.array([[acov[0] + 2.0 * float(weights @ acov[1:])]])
    s: F8 = scores.T @ scores
    for lag in range(1, maxlags + 1):
        gamma = scores[lag:].T @ scores[:-lag]
        s += (1.0 - lag / (maxlags + 1.0)) * (gamma + gamma.T)
    return s


def ols_hac(
    design: npt.ArrayLike,
    y: npt.ArrayLike,
    maxlags: int,
    *,
    time: npt.ArrayLike | None = None,
    correction: SmallSample | None = None,
    only: int | None = None,
) -> OlsHac:
    """OLS of ``y`` on the design with Newey-West (or, with ``time``, Driscoll-Kraay) covariance.

    With ``only`` (a column), just that coefficient's variance is computed (the other entries of ``cov`` are NaN):
    the same number, from the scores projected on that row of (X'X)^-1, in O(n * maxlags) instead of
    O(n * k^2 * maxlags) — what a model with 23 hour-of-day columns and a day of lags needs.
    """
    x = np.asarray(design, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or yy.ndim != 1 or x.shape[0] != yy.shape[0]:
        raise ValueError(f"the design must be (n, k) and y (n,) with the same n; got {x.shape} and {yy.shape}")
    n, k = x.shape
    if n <= k:
        raise ValueError(f"OLS needs more rows than columns: {n} rows, {k} columns")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(yy))):
        raise ValueError("the design and y must be finite (drop missing readings first)")
    if maxlags < 0:
        raise ValueError(f"maxlags must be >= 0, got {maxlags}")
    # The normal equations, not an SVD of X: X has n rows (a year of 5-minute readings) and few columns, so
    # (X'X)^-1 of k x k is cheap and, for these well-conditioned designs, equal to statsmodels' pinv to 1e-9.
    bread = np.linalg.inv(x.T @ x)
    params = bread @ (x.T @ yy)
    scores = x * (yy - x @ params)[:, None]
    groups: int | None = None
    if time is None:
        corr = correction or SmallSample.NONE
    else:
        periods = np.asarray(time)
        if periods.shape != (n,):
            raise ValueError(f"time must hold one period per row: {periods.shape} for {n} rows")
        codes, inverse = np.unique(periods, return_inverse=True)
        groups = int(codes.shape[0])
        summed = np.zeros((groups, k))
        np.add.at(summed, inverse, scores)
        scores = summed
        corr = correction or SmallSample.CLUSTER
    if only is None:
        cov = bread @ _weighted_autocov_sum(scores, maxlags) @ bread
    else:
        row = bread[only]
        cov = np.full((k, k), np.nan)
        cov[only, only] = _weighted_autocov_sum((scores @ row)[:, None], maxlags)[0, 0]
    if corr is SmallSample.HAC:
        cov *= n / (n - k)
    elif corr is SmallSample.CLUSTER:
        g = groups if groups is not None else n
        cov *= g / (g - 1.0) * ((n - 1.0) / (n - k))
    return OlsHac(params=params, cov=cov, nobs=n, maxlags=maxlags, correction=corr, groups=groups)


def newey_west_lags(n: int, block_length: float | None = None) -> int:
    """Lags for the HAC covariance of a series of ``n`` observations (see the module docstring)."""
    plug_in = math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))
    if block_length is not None and math.isfinite(block_length):
        plug_in = max(plug_in, math.ceil(block_length))
    return int(min(plug_in, max(n - 2, 0)))
