"""Every QARTOD test against ioos_qc, flag for flag, and against the naive references of ``naive.py``.

Where pilotwatch deliberately differs from ioos_qc (docs/qc.md, "Where we differ"), the test states the exact
positions that may differ, asserts equality everywhere else, and checks the differing positions against the
naive reference of pilotwatch's own rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import _kernels as k
from analytics import qartod
from tests.analytics import naive

with warnings.catch_warnings():
    # ioos_qc imports pkg_resources-era helpers that may warn on import; the warning is not ours to fix.
    warnings.simplefilter("ignore")
    from ioos_qc import qartod as ioos

SEED = 20240917
STEP = np.timedelta64(60, "s")


def _ioos(fn: Callable[..., object], *args: object, **kwargs: object) -> np.ndarray:
    with warnings.catch_warnings():
        # ioos_qc computes on masked arrays holding NaN and raises numpy RuntimeWarnings internally.
        warnings.simplefilter("ignore")
        return np.asarray(np.ma.getdata(fn(*args, **kwargs))).astype(np.uint8)


def _times(n: int, step: np.timedelta64 = STEP) -> np.ndarray:
    return np.datetime64("2021-03-01T00:00:00", "ns") + np.arange(n) * step


def _ns(times: np.ndarray) -> list[int]:
    return [int(t) for t in times.astype("datetime64[ns]").view(np.int64)]


def random_series(n: int, seed: int, nan_share: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 10 + np.cumsum(rng.normal(0, 0.3, n)) + rng.normal(0, 0.2, n)
    spikes = rng.random(n) < 0.03
    x[spikes] += rng.choice([-1, 1], spikes.sum()) * rng.uniform(1, 6, spikes.sum())
    flats = rng.integers(0, max(n - 40, 1), 4)
    for f in flats:
        x[f : f + rng.integers(3, 40)] = x[f]
    if nan_share:
        x[rng.random(n) < nan_share] = np.nan
    return x


CASES = {
    "random": lambda n: random_series(n, SEED),
    "nan": lambda n: random_series(n, SEED + 1, nan_share=0.08),
    "constant": lambda n: np.full(n, 7.25),
    "nan_runs": lambda n: np.where((np.arange(n) // 17) % 5 == 0, np.nan, random_series(n, SEED + 2)),
}


def after_missing(x: np.ndarray) -> np.ndarray:
    """Positions whose previous sample is missing: ioos_qc does not compare them with anything."""
    prev_missing = np.zeros(x.shape, dtype=bool)
    prev_missing[1:] = ~np.isfinite(x[:-1])
    return prev_missing & np.isfinite(x)


# ------------------------------------------------------------------------------------------------ regular data
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 57, 3000])
class TestRegularSampling:
    def test_gross_range(self, case: str, n: int) -> None:
        x = CASES[case](n)
        ours = qartod.gross_range_test(x, fail_span=(0, 20), suspect_span=(5, 15))
        assert ours.tolist() == _ioos(ioos.gross_range_test, x, fail_span=(0, 20), suspect_span=(5, 15)).tolist()
        assert ours.tolist() == naive.gross_range(x.tolist(), (0, 20), (5, 15))

    @pytest.mark.parametrize("method", ["average", "differential"])
    def test_spike(self, case: str, n: int, method: str) -> None:
        x = CASES[case](n)
        ours = qartod.spike_test(x, _times(n), suspect_threshold=0.8, fail_threshold=3.0, method=method)
        theirs = _ioos(ioos.spike_test, x, suspect_threshold=0.8, fail_threshold=3.0, method=method)
        assert ours.tolist() == theirs.tolist()
        assert ours.tolist() == naive.spike(x.tolist(), 0.8, 3.0, method == "differential")

    def test_rate_of_change(self, case: str, n: int) -> None:
        x, t = CASES[case](n), _times(n)
        ours = qartod.rate_of_change_test(x, t, threshold=0.01, fail_threshold=0.05)
        theirs = _ioos(ioos.rate_of_change_test, x, t, threshold=0.01, fail_threshold=0.05)
        same = ~after_missing(x)
        assert ours[same].tolist() == theirs[same].tolist()
        assert ours.tolist() == naive.rate_of_change(x.tolist(), _ns(t), 0.01, 0.05)

    @pytest.mark.parametrize(("suspect", "fail", "tol"), [(300, 900, 0.01), (150, 200, 0.5), (30, 45, 0.1)])
    def test_flat_line(self, case: str, n: int, suspect: float, fail: float, tol: float) -> None:
        x, t = CASES[case](n), _times(n)
        ours = qartod.flat_line_test(x, t, suspect_threshold=suspect, fail_threshold=fail, tolerance=tol)
        theirs = _ioos(ioos.flat_line_test, x, t, suspect_threshold=suspect, fail_threshold=fail, tolerance=tol)
        # Below 3 points ioos_qc says GOOD even for a missing value; we say MISSING.
        same = np.isfinite(x) | (n >= 3)
        assert ours[same].tolist() == theirs[same].tolist()
        assert ours.tolist() == naive.flat_line(x.tolist(), _ns(t), suspect, fail, tol)

    @pytest.mark.parametrize("check_type", ["std", "range"])
    @pytest.mark.parametrize("period", [None, 600, 3600])
    def test_attenuated_signal(self, case: str, n: int, check_type: str, period: int | None) -> None:
        x, t = CASES[case](n), _times(n)
        kw = {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": period, "check_type": check_type}
        ours = qartod.attenuated_signal_test(x, t, **kw)
        theirs = _ioos(ioos.attenuated_signal_test, x, t, **kw)
        same = np.ones(n, dtype=bool)
        if period and check_type == "range":
            # ioos_qc's rolling range is NaN (UNKNOWN) for any window holding a missing value; ours skips them.
            has_nan = pd.Series(np.isnan(x).astype(float), index=t).rolling(f"{period}s").max().to_numpy() > 0
            same = ~has_nan
        assert ours[same].tolist() == theirs[same].tolist()
        assert ours.tolist() == naive.attenuated(x.tolist(), _ns(t), 0.4, 0.1, period, 1, check_type)

    def test_attenuated_min_obs_min_period(self, case: str, n: int) -> None:
        x, t = CASES[case](n), _times(n)
        for extra in ({"min_obs": 5}, {"min_period": 400}):
            kw = {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": 900, **extra}
            ours = qartod.attenuated_signal_test(x, t, **kw)
            assert ours.tolist() == _ioos(ioos.attenuated_signal_test, x, t, **kw).tolist()

    @pytest.mark.parametrize(
        "members",
        [
            [{"tspan": (0, 12), "vspan": (5, 15), "fspan": (0, 20), "period": "month"}],
            [
                {"tspan": (0, 11), "vspan": (8, 14), "period": "hour"},
                {"tspan": (12, 23), "vspan": (6, 12), "fspan": (2, 18), "period": "hour"},
                {"tspan": (1, 2), "vspan": (9, 10), "period": "dayofweek"},
            ],
            [
                {"tspan": (9, 10), "vspan": (8, 12), "period": "week"},
                {"tspan": (60, 61), "vspan": (0, 9), "period": "dayofyear"},
            ],
            [
                {"tspan": ("2021-03-01T01:00", "2021-03-02T10:00"), "vspan": (8, 12), "fspan": (4, 17), "period": None},
                {"tspan": (1, 1), "vspan": (1, 11), "period": "quarter"},
            ],
        ],
    )
    def test_climatology(self, case: str, n: int, members: list[dict[str, object]]) -> None:
        x, t = CASES[case](n), _times(n)
        ours = qartod.climatology_test(x, t, members=members)
        theirs = _ioos(ioos.climatology_test, members, x, t, np.full(n, np.nan))
        # ioos_qc flags a missing value GOOD inside a member's time span; ours stays MISSING.
        finite = np.isfinite(x)
        assert ours[finite].tolist() == theirs[finite].tolist()
        assert (ours[~finite] == 9).all()
        if all(m["period"] is not None for m in members):
            assert ours.tolist() == naive.climatology(x.tolist(), _ns(t), members)

    def test_aggregate(self, case: str, n: int) -> None:
        x, t = CASES[case](n), _times(n)
        flags = [
            qartod.gross_range_test(x, fail_span=(0, 20), suspect_span=(5, 15)),
            qartod.spike_test(x, t, suspect_threshold=0.8, fail_threshold=3.0),
            qartod.flat_line_test(x, t, suspect_threshold=300, fail_threshold=900, tolerance=0.01),
        ]
        ours = qartod.aggregate(flags)
        assert ours.tolist() == np.asarray(ioos.qartod_compare(flags)).tolist()
        assert ours.tolist() == naive.aggregate([f.tolist() for f in flags])


# ------------------------------------------------------------------------------------------------ irregular time
def test_unsorted_times_equal_ioos_on_sorted_series() -> None:
    n = 800
    x, t = random_series(n, SEED + 5), _times(n)
    perm = np.random.default_rng(SEED).permutation(n)
    xs, ts = x[perm], t[perm]
    tests = [
        (qartod.spike_test, ioos.spike_test, {"suspect_threshold": 0.8, "fail_threshold": 3.0}, False),
        (qartod.rate_of_change_test, ioos.rate_of_change_test, {"threshold": 0.01, "fail_threshold": 0.05}, True),
        (
            qartod.flat_line_test,
            ioos.flat_line_test,
            {"suspect_threshold": 300, "fail_threshold": 600, "tolerance": 0.5},
            True,
        ),
        (
            qartod.attenuated_signal_test,
            ioos.attenuated_signal_test,
            {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": 900},
            True,
        ),
    ]
    for ours_fn, ioos_fn, kw, with_times in tests:
        ours = ours_fn(xs, ts, **kw)
        theirs_sorted = _ioos(ioos_fn, x, t, **kw) if with_times else _ioos(ioos_fn, x, **kw)
        assert ours.tolist() == theirs_sorted[perm].tolist(), ours_fn.__name__


def test_duplicate_timestamps() -> None:
    n = 600
    x = random_series(n, SEED + 6)
    t = _times(n)
    dup = np.random.default_rng(SEED).random(n) < 0.05
    dup[0] = False
    t = t.copy()
    for i in np.flatnonzero(dup):
        t[i] = t[i - 1]
    t = np.maximum.accumulate(t)
    # gross range, spike and attenuated signal do not depend on the time step: identical to ioos_qc.
    assert (
        qartod.spike_test(x, t, suspect_threshold=0.8).tolist()
        == _ioos(ioos.spike_test, x, suspect_threshold=0.8).tolist()
    )
    kw = {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": 900}
    assert qartod.attenuated_signal_test(x, t, **kw).tolist() == _ioos(ioos.attenuated_signal_test, x, t, **kw).tolist()
    # Rate of change: where Δt = 0, ioos_qc divides by zero (masked, value-dependent); we take an infinite rate.
    ours = qartod.rate_of_change_test(x, t, threshold=0.01, fail_threshold=0.05)
    theirs = _ioos(ioos.rate_of_change_test, x, t, threshold=0.01, fail_threshold=0.05)
    assert ours[~dup].tolist() == theirs[~dup].tolist()
    assert ours.tolist() == naive.rate_of_change(x.tolist(), _ns(t), 0.01, 0.05)
    assert (ours[dup & (np.diff(x, prepend=np.nan) != 0)] == 4).all()
    fl = qartod.flat_line_test(x, t, suspect_threshold=300, fail_threshold=600, tolerance=0.5)
    assert fl.tolist() == naive.flat_line(x.tolist(), _ns(t), 300, 600, 0.5)


def test_time_gaps_regular_steps() -> None:
    n = 2000
    x = random_series(n, SEED + 7)
    keep = (np.arange(n) // 100) % 4 != 3  # drop every fourth block of 100 samples
    x, t = x[keep], _times(n)[keep]
    kw_roc = {"threshold": 0.01, "fail_threshold": 0.05}
    assert (
        qartod.rate_of_change_test(x, t, **kw_roc).tolist() == _ioos(ioos.rate_of_change_test, x, t, **kw_roc).tolist()
    )
    kw = {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": 3600, "min_period": 1200}
    assert qartod.attenuated_signal_test(x, t, **kw).tolist() == _ioos(ioos.attenuated_signal_test, x, t, **kw).tolist()
    assert (
        qartod.spike_test(x, t, suspect_threshold=0.8).tolist()
        == _ioos(ioos.spike_test, x, suspect_threshold=0.8).tolist()
    )
    fl = qartod.flat_line_test(x, t, suspect_threshold=600, fail_threshold=1200, tolerance=0.5)
    assert fl.tolist() == naive.flat_line(x.tolist(), _ns(t), 600, 1200, 0.5)


def _replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many points each exact replay of pandas' rolling std re-flags."""
    calls: list[int] = []
    replay = qartod._replay_rolling_std

    def spy(v: np.ndarray, t: np.ndarray, points: np.ndarray, out: np.ndarray, **kw: object) -> None:
        calls.append(points.size)
        replay(v, t, points, out, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(qartod, "_replay_rolling_std", spy)
    return calls


def test_attenuated_std_across_cores_equals_ioos_on_a_long_irregular_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """200,000 points (several parallel chunks) with missing values, irregular steps, gaps longer than the
    window (where pandas starts afresh) and spikes: flag for flag with ioos_qc, without any exact replay."""
    rng = np.random.default_rng(SEED + 11)
    n = 200_000
    x = random_series(n, SEED + 11, nan_share=0.02)
    steps = rng.choice([30, 60, 60, 60, 90], n).astype("timedelta64[s]")
    steps[rng.integers(0, n, 40)] = np.timedelta64(3 * 3600, "s")
    t = np.datetime64("2021-03-01T00:00:00", "ns") + np.cumsum(steps)
    replays = _replays(monkeypatch)
    for kw in (
        {"suspect_threshold": 0.4, "fail_threshold": 0.1, "test_period": 3600},
        {"suspect_threshold": 2.0, "fail_threshold": 0.8, "test_period": 1800, "min_obs": 10},
    ):
        ours = qartod.attenuated_signal_test(x, t, **kw)
        assert ours.tolist() == _ioos(ioos.attenuated_signal_test, x, t, **kw).tolist()
        assert set(np.unique(ours)) >= {1, 3, 4, 9}
    assert replays == []


def test_attenuated_std_exact_ties_on_quantised_data_follow_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values of 7.0 and 7.1 make every window split evenly between them a std of exactly 0.05, the suspect
    threshold: pandas' last bits decide those flags, so they are replayed exactly, and all flags equal ioos_qc's.
    """
    rng = np.random.default_rng(SEED + 12)
    n = 120_000
    x = np.where(rng.random(n) < 0.5, 7.0, 7.1)
    x[rng.random(n) < 0.01] = np.nan
    t = _times(n)
    replays = _replays(monkeypatch)
    kw = {"suspect_threshold": 0.05, "fail_threshold": 0.01, "test_period": 3600}
    ours = qartod.attenuated_signal_test(x, t, **kw)
    assert ours.tolist() == _ioos(ioos.attenuated_signal_test, x, t, **kw).tolist()
    assert sum(replays) > 100  # the ties went to the exact replay
    assert {1, 3} <= set(np.unique(ours).tolist())


@pytest.mark.parametrize("n", [0, 1, 2, 4095, 4096, 4097, 3 * 4096 + 5, (1 << 20) + 3])
def test_time_checks_serial_and_parallel_agree(n: int) -> None:
    """Order and NaT checks, serial and across cores, including a fault on each side of a block boundary."""
    t = np.arange(n, dtype=np.int64) * 60_000_000_000
    for check in (k._is_sorted, k._is_sorted_parallel, k.is_sorted):
        assert check(t)
    for check in (k._has_nat, k._has_nat_parallel, k.has_nat):
        assert not check(t)
    for at in sorted({1, 4095, 4096, 4097, n - 1} & set(range(1, n))):
        bad = t.copy()
        bad[at] = bad[at - 1] - 1
        assert not k._is_sorted(bad), at
        assert not k._is_sorted_parallel(bad), at
        nat = t.copy()
        nat[at] = k.NAT
        assert k._has_nat(nat), at
        assert k._has_nat_parallel(nat), at


def test_empty_series() -> None:
    empty = np.array([], dtype=float)
    t = _times(0)
    assert qartod.gross_range_test(empty, fail_span=(0, 1)).shape == (0,)
    assert qartod.spike_test(empty, t, suspect_threshold=1).shape == (0,)
    assert qartod.rate_of_change_test(empty, t, threshold=1).shape == (0,)
    assert qartod.flat_line_test(empty, t, suspect_threshold=1, fail_threshold=2).shape == (0,)


# ------------------------------------------------------------------------------------------------ real data
LRO = Path(__file__).resolve().parents[3] / "shared" / "data" / "lro" / "MainStreet2019.csv"


@pytest.fixture(scope="module")
def lro_slice(shared_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(shared_dir / "data" / "lro" / "MainStreet2019.csv", nrows=4000, na_values=["NULL"])
    df["datetime"] = pd.to_datetime(df["datetime"])
    return df


@pytest.mark.parametrize(
    ("column", "gross", "spike", "roc", "flat"),
    [
        ("cond", ((0, 2000), (100, 800)), (5, 30), (0.01, 0.1), (0.05)),
        ("ph", ((0, 14), (7, 9)), (0.05, 0.3), (1e-4, 1e-3), (0.005)),
        ("turb", ((0, 1000), (0, 50)), (2, 10), (0.002, 0.02), (0.01)),
        ("do", ((0, 20), (4, 15)), (0.2, 1.0), (5e-4, 3e-3), (0.005)),
    ],
)
def test_real_lro_slice(lro_slice: pd.DataFrame, column: str, gross, spike, roc, flat) -> None:
    x = lro_slice[column].to_numpy(dtype=float)
    x = np.where(x == -9999, np.nan, x)
    t = lro_slice["datetime"].to_numpy()
    assert np.all(np.diff(t) == np.timedelta64(15, "m"))
    checks = [
        (
            qartod.gross_range_test(x, t, fail_span=gross[0], suspect_span=gross[1]),
            _ioos(ioos.gross_range_test, x, fail_span=gross[0], suspect_span=gross[1]),
            None,
        ),
        (
            qartod.spike_test(x, t, suspect_threshold=spike[0], fail_threshold=spike[1]),
            _ioos(ioos.spike_test, x, suspect_threshold=spike[0], fail_threshold=spike[1]),
            None,
        ),
        (
            qartod.rate_of_change_test(x, t, threshold=roc[0], fail_threshold=roc[1]),
            _ioos(ioos.rate_of_change_test, x, t, threshold=roc[0], fail_threshold=roc[1]),
            ~after_missing(x),
        ),
        (
            qartod.flat_line_test(x, t, suspect_threshold=3600, fail_threshold=3 * 3600, tolerance=flat),
            _ioos(ioos.flat_line_test, x, t, suspect_threshold=3600, fail_threshold=3 * 3600, tolerance=flat),
            None,
        ),
        (
            qartod.attenuated_signal_test(x, t, suspect_threshold=flat * 4, fail_threshold=flat, test_period=6 * 3600),
            _ioos(
                ioos.attenuated_signal_test, x, t, suspect_threshold=flat * 4, fail_threshold=flat, test_period=6 * 3600
            ),
            None,
        ),
    ]
    for ours, theirs, same in checks:
        mask = np.ones(len(x), dtype=bool) if same is None else same
        assert ours[mask].tolist() == theirs[mask].tolist()
