"""Private Numba kernels of the block bootstrap; the public, validating wrappers are in :mod:`evaluation.bootstrap`.

Each kernel works on plain contiguous arrays and has a slow, obvious twin in the tests.
"""

from __future__ import annotations

import numpy as np

from evaluation._numba import kernel


@kernel
def stationary_indices(starts: np.ndarray, u: np.ndarray, p: float) -> np.ndarray:
    """Politis-Romano indices: position i continues the block of i-1 unless ``u[i] <= p`` (a new block starts at
    ``starts[i]``); blocks wrap around the end of the series. ``starts`` is consumed (overwritten)."""
    n = starts.shape[0]
    for i in range(1, n):
        if u[i] > p:
            nxt = starts[i - 1] + 1
            starts[i] = 0 if nxt == n else nxt
    return starts


@kernel
def circular_indices(starts: np.ndarray, block: int, n: int) -> np.ndarray:
    """Künsch/Politis-Romano circular blocks of fixed length ``block`` starting at ``starts``, cut to ``n``."""
    out = np.empty(n, dtype=np.int64)
    pos = 0
    for b in range(starts.shape[0]):
        for j in range(block):
            if pos == n:
                return out
            out[pos] = (starts[b] + j) % n
            pos += 1
    return out


@kernel
def strata_means(values: np.ndarray, strata: np.ndarray, n_strata: int, idx: np.ndarray) -> np.ndarray:
    """Per column of ``values`` (n, k): the mean over strata of the stratum means of the rows ``idx``.

    Strata are hours of the local day: an hour missing from a resample is left out of that replicate's average,
    so a resample is always compared like with like on the daily cycle.
    """
    k = values.shape[1]
    sums = np.zeros((n_strata, k))
    counts = np.zeros(n_strata)
    for i in range(idx.shape[0]):
        row = idx[i]
        s = strata[row]
        counts[s] += 1.0
        for j in range(k):
            sums[s, j] += values[row, j]
    out = np.zeros(k)
    used = 0
    for s in range(n_strata):
        if counts[s] > 0:
            used += 1
            for j in range(k):
                out[j] += sums[s, j] / counts[s]
    for j in range(k):
        out[j] = out[j] / used if used > 0 else np.nan
    return out


@kernel
def day_strata_means(sums: np.ndarray, counts: np.ndarray, day_idx: np.ndarray) -> np.ndarray:
    """Hour-balanced means of a resample of whole days: ``sums`` (days, hours, k) and ``counts`` (days, hours) of
    the readings of each day and hour; ``day_idx`` the days drawn. Hours without readings are left out."""
    n_hours = sums.shape[1]
    k = sums.shape[2]
    acc = np.zeros((n_hours, k))
    cnt = np.zeros(n_hours)
    for i in range(day_idx.shape[0]):
        d = day_idx[i]
        for h in range(n_hours):
            c = counts[d, h]
            if c > 0:
                cnt[h] += c
                for j in range(k):
                    acc[h, j] += sums[d, h, j]
    out = np.zeros(k)
    used = 0
    for h in range(n_hours):
        if cnt[h] > 0:
            used += 1
            for j in range(k):
                out[j] += acc[h, j] / cnt[h]
    for j in range(k):
        out[j] = out[j] / used if used > 0 else np.nan
    return out


@kernel
def expand_days(starts: np.ndarray, lengths: np.ndarray, day_idx: np.ndarray) -> np.ndarray:
    """Reading indices of the days drawn, day by day (readings of a day are contiguous from ``starts[d]``)."""
    total = 0
    for i in range(day_idx.shape[0]):
        total += lengths[day_idx[i]]
    out = np.empty(total, dtype=np.int64)
    pos = 0
    for i in range(day_idx.shape[0]):
        d = day_idx[i]
        for j in range(lengths[d]):
            out[pos] = starts[d] + j
            pos += 1
    return out


@kernel
def day_weighted_median(sorted_values: np.ndarray, sorted_days: np.ndarray, day_weights: np.ndarray) -> float:
    """The median of a resample of whole days without building it: ``sorted_values`` are all readings of the
    period in ascending order, ``sorted_days`` the day (table row) of each, ``day_weights`` how often each day was
    drawn. Scans to the middle order statistics, so it equals ``np.median`` of the concatenated resample."""
    total = 0
    for i in range(sorted_values.shape[0]):
        total += day_weights[sorted_days[i]]
    if total == 0:
        return np.nan
    lo_rank = (total - 1) // 2
    hi_rank = total // 2
    cum = 0
    lo = np.nan
    for i in range(sorted_values.shape[0]):
        w = day_weights[sorted_days[i]]
        if w == 0:
            continue
        if cum + w > lo_rank and np.isnan(lo):
            lo = sorted_values[i]
        if cum + w > hi_rank:
            return float((lo + sorted_values[i]) / 2.0)
        cum += w
    return float(lo)
