"""Slow, obviously correct twins of the evaluation's Numba kernels."""

from __future__ import annotations

import numpy as np


def stationary_indices(starts: np.ndarray, u: np.ndarray, p: float) -> np.ndarray:
    out = starts.copy()
    for i in range(1, len(out)):
        if u[i] > p:
            out[i] = (out[i - 1] + 1) % len(out)
    return out


def circular_indices(starts: np.ndarray, block: int, n: int) -> np.ndarray:
    return np.array([(s + j) % n for s in starts for j in range(block)][:n], dtype=np.int64)


def strata_means(values: np.ndarray, strata: np.ndarray, idx: np.ndarray) -> np.ndarray:
    rows, groups = values[idx], strata[idx]
    return np.mean([rows[groups == g].mean(axis=0) for g in sorted(set(groups.tolist()))], axis=0)
