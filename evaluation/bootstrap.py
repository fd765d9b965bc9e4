"""Block bootstrap for autocorrelated series: block length by Politis-White, stationary and circular resampling.

Contract:

- :func:`optimal_block_length` is the Politis & White (2004) rule with the Patton, Politis & White (2009)
  correction, for the stationary (Politis & Romano 1994) and the circular (Politis & Romano 1992) bootstrap. It
  equals ``arch.bootstrap.optimal_block_length`` (tests hold it to 1e-9), including arch's conventions: the
  tuning lag is the first of ``max(5, log10 n)`` insignificant autocorrelations, capped at ``sqrt(n) + k_n``;
  block lengths are capped at ``min(3 sqrt(n), n / 3)``.
- :func:`resample_indices` draws one replicate's indices from a NumPy ``Generator`` in the same order as arch's
  ``StationaryBootstrap`` / ``CircularBlockBootstrap`` (integers first, then uniforms), so the same seed gives the
  same blocks as arch; the index arithmetic runs in a Numba kernel.
- :func:`replicate` runs a statistic over ``replicates`` resamples of several independent samples (each its own
  block length) and returns a ``(replicates, m)`` array. Samples are drawn in the order given, replicate by
  replicate, so a result is reproducible from its seed.

Bootstrap intervals here are percentile intervals of the replicates (Efron's percentile method), expanded for
the small number of independent days a period holds (Hesterberg 2015), see :func:`expanded_alpha`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from evaluation import _kernels

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]


class BlockScheme(enum.StrEnum):
    """Which block bootstrap: random (geometric) block lengths, or fixed blocks wrapped around the end."""

    STATIONARY = "stationary"
    CIRCULAR = "circular"


@dataclass(frozen=True, slots=True)
class BlockLength:
    """Politis-White optimal block lengths for one series (in observations)."""

    stationary: float
    circular: float

    def for_scheme(self, scheme: BlockScheme) -> float:
        return self.stationary if scheme is BlockScheme.STATIONARY else self.circular


def optimal_block_length(x: npt.ArrayLike) -> BlockLength:
    """Politis-White block lengths of a 1-d series (at least 9 finite values, not constant)."""
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"optimal_block_length needs a 1-d series, got shape {data.shape}")
    if data.shape[0] < 9 or not np.all(np.isfinite(data)):
        raise ValueError(f"optimal_block_length needs at least 9 finite values, got {data.shape[0]} (NaN not allowed)")
    n = data.shape[0]
    eps = data - data.mean()
    if not np.any(eps):
        raise ValueError("optimal_block_length: the series is constant, so it has no autocorrelation to measure")
    b_max = math.ceil(min(3.0 * math.sqrt(n), n / 3.0))
    k_n = max(5, int(math.log10(n)))
    m_max = math.ceil(math.sqrt(n)) + k_n
    band = 2.0 * math.sqrt(math.log10(n) / n)
    autocov = np.zeros(m_max + 1)
    abs_corr = np.zeros(m_max + 1)
    tuning: int | None = None
    for lag in range(m_max + 1):
        cross = float(eps[lag:] @ eps[: n - lag])
        head = float(eps[lag + 1 :] @ eps[lag + 1 :])
        tail = float(eps[: n - lag - 1] @ eps[: n - lag - 1])
        autocov[lag] = cross / n
        abs_corr[lag] = abs(cross) / math.sqrt(head * tail) if head * tail > 0 else 0.0
        # The first run of k_n autocorrelations inside the band ends the search (the flat-top window's m-hat).
        if tuning is None and lag >= k_n and bool(np.all(abs_corr[lag - k_n : lag] < band)):
            tuning = lag - k_n
    m = min(2 * max(tuning, 1) if tuning is not None else m_max, m_max)
    g = 0.0
    long_run = autocov[0]
    for k in range(1, m + 1):
        weight = 1.0 if k / m <= 0.5 else 2.0 * (1.0 - k / m)  # the flat-top (trapezoid) lag window
        g += 2.0 * weight * k * autocov[k]
        long_run += 2.0 * weight * autocov[k]
    d_sb = 2.0 * long_run**2
    d_cb = 4.0 / 3.0 * long_run**2
    b_sb = ((2.0 * g**2) / d_sb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    b_cb = ((2.0 * g**2) / d_cb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return BlockLength(stationary=float(min(b_sb, b_max)), circular=float(min(b_cb, b_max)))


def usable_block(block: float, scheme: BlockScheme, n: int) -> float:
    """A block length the resampler can use: at least 1, at most n; whole for the circular bootstrap."""
    if not math.isfinite(block) or block <= 0:
        raise ValueError(f"block length must be a positive number, got {block}")
    if scheme is BlockScheme.CIRCULAR:
        return float(min(max(1, round(block)), n))
    return min(max(1.0, block), float(n))


def resample_indices(generator: np.random.Generator, n: int, scheme: BlockScheme, block: float) -> I8:
    """One replicate's indices into a series of length ``n`` (draws in arch's order for the same generator)."""
    if n < 1:
        raise ValueError(f"cannot resample an empty series (n = {n})")
    if scheme is BlockScheme.STATIONARY:
        starts = generator.integers(n, size=n, dtype=np.int64)
        u = generator.random(n)
        result: I8 = _kernels.stationary_indices(starts, u, 1.0 / block)
        return result
    size = int(block)
    blocks = -(-n // size)
    starts = generator.integers(n, size=blocks, dtype=np.int64)
    out: I8 = _kernels.circular_indices(starts, size, n)
    return out


Statistic = Callable[[Sequence[I8]], F8]
"""Given one index array per sample, the replicate's statistics as a 1-d array."""


def replicate(
    sizes: Sequence[int],
    statistic: Statistic,
    *,
    blocks: Sequence[float],
    scheme: BlockScheme,
    replicates: int,
    seed: int | np.random.Generator,
) -> F8:
    """``replicates`` rows of ``statistic`` over independent block resamples of samples of the given sizes."""
    if len(sizes) != len(blocks):
        raise ValueError(f"one block length per sample: {len(sizes)} samples, {len(blocks)} block lengths")
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    generator = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    usable = [usable_block(b, scheme, n) for b, n in zip(blocks, sizes, strict=True)]
    rows: list[F8] = []
    for _ in range(replicates):
        indices = [resample_indices(generator, n, scheme, b) for n, b in zip(sizes, usable, strict=True)]
        rows.append(np.asarray(statistic(indices), dtype=np.float64))
    return np.vstack(rows)


def strata_means(values: F8, strata: I8, n_strata: int, idx: I8) -> F8:
    """Per column of ``values`` (n, k), the mean of the stratum means of rows ``idx`` (empty strata left out)."""
    if values.ndim != 2 or strata.shape[0] != values.shape[0]:
        raise ValueError(f"values must be (n, k) with one stratum per row; got {values.shape} and {strata.shape}")
    out: F8 = _kernels.strata_means(
        np.ascontiguousarray(values), np.ascontiguousarray(strata), int(n_strata), np.ascontiguousarray(idx)
    )
    return out


def expanded_alpha(confidence: float, units: float | None) -> float:
    """The tail probability of Hesterberg's (2015) expanded percentile interval for ``units`` resampled units.

    A percentile interval is too narrow in small samples: it uses the normal quantile and the plug-in variance.
    The expanded interval reads the replicates at ``Phi(-sqrt(n / (n - 1)) * t[1 - alpha/2, n - 1])`` instead of
    ``alpha / 2``, with ``n`` the number of units resampled (here: days, the smaller period's). Calibration chose
    days over days / block length: the latter over-corrected (coverage 0.973 against 0.927 uncorrected).
    """
    alpha = (1.0 - confidence) / 2.0
    if units is None or not math.isfinite(units):
        return alpha
    n = max(float(units), 2.0)  # fewer than two units: as wide as the replicates go
    return float(stats.norm.cdf(-math.sqrt(n / (n - 1.0)) * stats.t.ppf(1.0 - alpha, n - 1.0)))


def percentile_interval(replicates: F8, confidence: float, units: float | None = None) -> tuple[float, float]:
    """The percentile interval of finite replicates (NaN, NaN if none); expanded for ``units`` independent units
    (see :func:`expanded_alpha`), plain when ``units`` is None."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = expanded_alpha(confidence, units)
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def independent_units(days: Sequence[float], blocks: Sequence[float]) -> float:
    """The resampled units of the smaller period (days) for :func:`expanded_alpha`; ``blocks`` are checked for
    length only (the block bootstrap already carries their dependence into the replicates' spread)."""
    if len(days) != len(blocks):
        raise ValueError(f"one block length per period: {len(days)} periods, {len(blocks)} block lengths")
    return float(min(days))
