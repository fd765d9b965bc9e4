"""Detectors: each kernel against a naive pure-Python reference, streaming == batch, any chunking == batch,
checkpoint/restore == uninterrupted run, pickling, and argument validation."""

from __future__ import annotations

import json
import math
import pickle
import statistics

import numpy as np
import pytest

from analytics import detectors as det

SEED = 7
N = 1500


def series(seed: int = SEED, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.datetime64("2024-01-01", "ns") + np.arange(n) * np.timedelta64(900, "s")
    x = 5 + np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.2, n)
    x[rng.random(n) < 0.02] = np.nan
    x[rng.integers(0, n, 10)] += rng.normal(0, 5, 10)
    x = np.round(x, 2)  # quantised like a real logger, so MAD = 0 windows happen
    x[600:700] = x[600]
    return x, t


ALL = [
    lambda: det.RobustZScore(window=24, grace_period=10, min_scale=0.01),
    lambda: det.EWMAZScore(alpha=0.1, grace_period=10),
    lambda: det.CUSUM(alpha=0.02, k=0.5, h=5, grace_period=20),
    lambda: det.SeasonalBaseline(bins=24, alpha=0.2, grace_period=3),
    lambda: det.DriftDetector(step=900, fast_period=86_400, slow_period=4 * 86_400, grace_period=2),
]


def naive_robust_z(x: np.ndarray, window: int, grace: int, min_scale: float) -> list[float]:
    buf: list[float] = []
    learned = 0
    out = []
    for v in x:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        if learned < grace or not buf:
            out.append(0.0)
        else:
            med = statistics.median(buf)
            mad = statistics.median([abs(b - med) for b in buf])
            out.append(abs(v - med) / max(1.4826 * mad, min_scale, 1e-12))
        buf.append(v)
        if len(buf) > window:
            buf.pop(0)
        learned += 1
    return out


def naive_ewma(x: np.ndarray, alpha: float, grace: int) -> list[float]:
    n = 0
    mean = var = 0.0
    out = []
    for v in x:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        out.append(0.0 if n < grace or n == 0 else abs(v - mean) / max(math.sqrt(var), 1e-12))
        if n == 0:
            mean, var = v, 0.0
        else:
            diff = v - mean
            mean += alpha * diff
            var = (1 - alpha) * (var + diff * alpha * diff)
        n += 1
    return out


def naive_seasonal(x: np.ndarray, t: np.ndarray, bins: int, alpha: float, grace: int) -> list[float]:
    stats: dict[int, list[float]] = {}
    out = []
    day = 86_400 * 10**9
    for v, ti in zip(x, t.view(np.int64), strict=True):
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        b = int(ti % day) // (day // bins)
        c, m, s2 = stats.get(b, [0, 0.0, 0.0])
        out.append(0.0 if c < grace or c == 0 else abs(v - m) / max(math.sqrt(s2), 1e-12))
        if c == 0:
            m, s2 = v, 0.0
        else:
            d = v - m
            m += alpha * d
            s2 = (1 - alpha) * (s2 + d * alpha * d)
        stats[b] = [c + 1, m, s2]
    return out


def test_robust_z_vs_naive() -> None:
    x, _ = series()
    ours = det.RobustZScore(window=24, grace_period=10, min_scale=0.01).score_many(x)
    np.testing.assert_allclose(ours, naive_robust_z(x, 24, 10, 0.01), rtol=1e-12, equal_nan=True)


def test_robust_z_even_window_vs_naive() -> None:
    x, _ = series(SEED + 1)
    ours = det.RobustZScore(window=10, grace_period=0).score_many(x)
    np.testing.assert_allclose(ours, naive_robust_z(x, 10, 0, 0.0), rtol=1e-12, equal_nan=True)


def test_ewma_vs_naive() -> None:
    x, _ = series()
    ours = det.EWMAZScore(alpha=0.1, grace_period=10).score_many(x)
    np.testing.assert_allclose(ours, naive_ewma(x, 0.1, 10), rtol=1e-12, equal_nan=True)


def test_seasonal_vs_naive() -> None:
    x, t = series()
    ours = det.SeasonalBaseline(bins=24, alpha=0.2, grace_period=3).score_many(x, t)
    np.testing.assert_allclose(ours, naive_seasonal(x, t, 24, 0.2, 3), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("make", ALL)
def test_streaming_equals_batch(make) -> None:
    x, t = series()
    batch = make().score_many(x, t)
    d = make()
    stream = []
    for v, ti in zip(x, t, strict=True):
        stream.append(d.score_one(v, ti))
        d.learn_one(v, ti)
    np.testing.assert_array_equal(batch, np.array(stream))


@pytest.mark.parametrize("make", ALL)
def test_chunked_and_restored_equal_uninterrupted(make) -> None:
    x, t = series()
    whole = make().score_many(x, t)
    d = make()
    parts = []
    for lo, hi in [(0, 137), (137, 800), (800, N)]:
        parts.append(d.score_many(x[lo:hi], t[lo:hi]))
        # a restart between chunks: JSON checkpoint for one half, pickle for the other
        d = type(d).from_state(json.loads(json.dumps(d.state_dict()))) if lo == 0 else pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert det.detector_from_state(d.state_dict()).state_dict() == d.state_dict()


def test_score_only_does_not_learn() -> None:
    d = det.EWMAZScore(grace_period=0)
    for v in [1.0, 2.0, 1.5]:
        d.learn_one(v)
    before = d.state_dict()
    d.score_one(100.0)
    assert d.state_dict() == before


def test_detectors_catch_what_they_are_for() -> None:
    rng = np.random.default_rng(SEED)
    n = 96 * 20
    t = np.datetime64("2024-01-01", "ns") + np.arange(n) * np.timedelta64(900, "s")
    cycle = np.sin(np.arange(n) * 2 * np.pi / 96)
    x = 8 + cycle + rng.normal(0, 0.05, n)
    level = 8 + rng.normal(0, 0.05, n)
    shift = level.copy()
    shift[1500:] += 0.1  # two standard deviations: invisible point by point, plain to a CUSUM
    assert det.CUSUM().alarm_score(shift, t)[1500:1540].max() >= 1
    assert det.CUSUM().alarm_score(level, t)[200:1500].max() < 1
    noon = x.copy()
    noon[1000] = 8 - 1  # a night value at noon: normal for the day, not for the hour
    hour = (t[1000].astype("datetime64[h]").astype(int)) % 24
    assert det.SeasonalBaseline().alarm_score(noon, t)[1000] >= 1, hour
    fouled = 8 + cycle * np.where(np.arange(n) < 1100, 1.0, 0.1) + rng.normal(0, 0.05, n)
    drift = det.DriftDetector(step=900).alarm_score(fouled, t)
    assert drift[1100 + 3 * 96 :].max() >= 1
    assert drift[:1100].max() < 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: det.RobustZScore(window=2), "window"),
        (lambda: det.EWMAZScore(alpha=0), "alpha"),
        (lambda: det.CUSUM(h=-1), "h"),
        (lambda: det.SeasonalBaseline(bins=7), "bins"),
        (lambda: det.DriftDetector(fast_period=10, slow_period=5), "slow_period"),
        (lambda: det.RobustZScore(grace_period=-1), "grace_period"),
    ],
)
def test_bad_arguments_name_themselves(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_needs_times_and_sorted() -> None:
    with pytest.raises(ValueError, match="needs times"):
        det.SeasonalBaseline().score_many([1.0, 2.0])
    t = np.array(["2024-01-02", "2024-01-01"], dtype="datetime64[ns]")
    with pytest.raises(ValueError, match="sorted"):
        det.EWMAZScore().score_many([1.0, 2.0], t)
    with pytest.raises(ValueError, match="not RobustZScore"):
        det.RobustZScore.from_state(det.EWMAZScore().state_dict())
