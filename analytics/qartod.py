"""QARTOD quality-control tests: pure functions from a series to a ``uint8`` flag array.

Each test is ``<check>_test(values, times, **params) -> np.ndarray[uint8]`` with the flag values of ioos_qc
(:class:`~pilotwatch.schema.QartodFlag`: 1 good, 2 not evaluated, 3 suspect, 4 fail, 9 missing). The keyword
parameters have ioos_qc's names, so an ioos_qc configuration ports directly, and they *are* the configuration schema
(:mod:`pilotwatch.qc_config`). Wrappers coerce inputs to contiguous ``float64`` values and ``int64`` epoch
nanoseconds, validate, and raise :class:`ValueError` naming the bad argument; the work is done by the private
Numba kernels of :mod:`analytics._kernels`.

Guarantees:

- On regularly sampled data with whole-second steps the flags equal ioos_qc 3.0's, flag for flag.
- Times may be unsorted or duplicated: a series is evaluated in time order (stable sort) and the flags are
  returned in the caller's order.
- Memory is O(points) for every test; no points × window copies.
- Where ioos_qc is wrong or weak, pilotwatch differs on purpose (see ``docs/qc.md``): exact sub-second time
  steps; rate of change measured from the last finite value across a NaN gap; flat line judged over a time window
  instead of a count derived from the median interval; NaN stays MISSING in the climatology test; an empty series
  returns an empty array.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from analytics import _kernels as k

FlagArray = npt.NDArray[np.uint8]


# ------------------------------------------------------------------------------------------------ coercion
def as_values(values: Any, name: str = "values") -> npt.NDArray[np.float64]:
    """``values`` as a contiguous 1-D float64 array (masked entries become NaN)."""
    if isinstance(values, np.ma.MaskedArray):
        values = np.ma.filled(values.astype(np.float64), np.nan)
    try:
        arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def as_times(times: Any, n: int, name: str = "times") -> npt.NDArray[np.int64]:
    """``times`` as contiguous int64 epoch nanoseconds (UTC).

    Accepts datetime64 arrays, pandas ``DatetimeIndex``/``Series`` (tz-aware ones are converted to UTC), Python
    datetimes, or numbers taken as epoch seconds (as ioos_qc does).
    """
    if times is None:
        raise ValueError(f"{name} is required for this test")
    if isinstance(times, pd.Series | pd.Index):
        if isinstance(times.dtype, pd.DatetimeTZDtype):
            times = times.tz_convert("UTC").tz_localize(None)
        arr = times.to_numpy()
    else:
        arr = np.asarray(times)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but values has {n}")
    if np.issubdtype(arr.dtype, np.datetime64):
        ns = arr.astype("datetime64[ns]", copy=False).view(np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        ns = arr.astype(np.int64) * k.NS_PER_S
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or inf; times must all be valid")
        ns = np.rint(arr * 1e9).astype(np.int64)
    elif arr.dtype == object or arr.dtype.kind in "US":
        try:
            ns = pd.to_datetime(arr, utc=True).tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be read as times: {exc}") from exc
    else:
        raise ValueError(f"{name} must be datetimes or epoch seconds, got dtype {arr.dtype}")
    ns = np.ascontiguousarray(ns, dtype=np.int64)
    if ns.shape[0] and k.has_nat(ns):
        raise ValueError(f"{name} contains NaT; drop those rows first")
    return ns


def _span(name: str, span: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(s) for s in span)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a pair of numbers (min, max), got {span!r}") from exc
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name} must not contain NaN, got {span!r}")
    return (min(lo, hi), max(lo, hi))


def _threshold(name: str, value: Any, *, required: bool = False) -> float | None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not out >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return out


def _in_time_order(
    values: npt.NDArray[np.float64],
    times: npt.NDArray[np.int64],
    run: Callable[[npt.NDArray[np.float64], npt.NDArray[np.int64]], FlagArray],
) -> FlagArray:
    """Run ``run`` on the series sorted by time (stable) and return flags in the caller's order."""
    if k.is_sorted(times):
        return run(values, times)
    order = np.argsort(times, kind="stable")
    flags_sorted = run(np.ascontiguousarray(values[order]), np.ascontiguousarray(times[order]))
    out = np.empty_like(flags_sorted)
    out[order] = flags_sorted
    return out


def _seconds_to_ns(name: str, seconds: Any) -> int:
    value = _threshold(name, seconds, required=True)
    assert value is not None
    return round(value * 1e9)


# ------------------------------------------------------------------------------------------------ tests
def gross_range_test(
    values: Any,
    times: Any = None,
    *,
    fail_span: Sequence[float],
    suspect_span: Sequence[float] | None = None,
) -> FlagArray:
    """FAIL outside ``fail_span`` (sensor range), SUSPECT outside ``suspect_span`` (operator range).

    NaN is MISSING; ±inf is an impossible reading and FAILs (as in ioos_qc). ``times`` is accepted for a uniform
    signature and ignored.
    """
    del times
    vals = as_values(values)
    flo, fhi = _span("fail_span", fail_span)
    slo, shi = flo, fhi
    if suspect_span is not None:
        slo, shi = _span("suspect_span", suspect_span)
        if slo < flo or shi > fhi:
            raise ValueError(f"suspect_span {suspect_span!r} must fall within fail_span {fail_span!r}")
    out = np.empty(vals.shape[0], dtype=np.uint8)
    k._gross_range(vals, flo, fhi, slo, shi, suspect_span is not None, out)
    return out


def climatology_test(
    values: Any,
    times: Any,
    *,
    members: Sequence[Mapping[str, Any]],
    depths: Any = None,
) -> FlagArray:
    """Seasonal / diurnal expected ranges, as ioos_qc's ``climatology_test`` with a ``ClimatologyConfig``.

    ``members`` is a list of ``{"tspan": (lo, hi), "vspan": (lo, hi), "fspan": (lo, hi) | None,
    "zspan": (lo, hi) | None, "period": None | "year" | "quarter" | "month" | "week" | "dayofyear" |
    "dayofweek" | "day" | "hour" | "minute"}``. With a period, ``tspan`` is in that unit (e.g. hours 6–18);
    without one it is a pair of datetimes. Points that no member covers are UNKNOWN; later members override
    earlier ones, as in ioos_qc. NaN is MISSING (ioos_qc flags it GOOD; see docs/qc.md).
    """
    vals = as_values(values)
    n = vals.shape[0]
    ts = as_times(times, n)
    z = np.empty(0) if depths is None else as_values(depths, "depths")
    if depths is not None and z.shape[0] != n:
        raise ValueError(f"depths has {z.shape[0]} entries but values has {n}")
    if isinstance(members, Mapping) or not isinstance(members, Sequence):
        raise ValueError("members must be a list of climatology members (dicts with tspan, vspan, ...)")
    m = len(members)
    codes = np.zeros(m, dtype=np.int64)
    arrays = {key: np.zeros(m) for key in ("t_lo", "t_hi", "v_lo", "v_hi", "f_lo", "f_hi", "z_lo", "z_hi")}
    abs_lo = np.zeros(m, dtype=np.int64)
    abs_hi = np.zeros(m, dtype=np.int64)
    has_f = np.zeros(m, dtype=np.bool_)
    has_z = np.zeros(m, dtype=np.bool_)
    allowed = {"tspan", "vspan", "fspan", "zspan", "period"}
    for idx, member in enumerate(members):
        unknown = set(member) - allowed
        if unknown:
            raise ValueError(f"members[{idx}] has unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")
        period = member.get("period")
        if period not in k.PERIOD_CODES:
            names = sorted(p for p in k.PERIOD_CODES if p is not None)
            raise ValueError(f"members[{idx}].period {period!r} is not one of {names} or None")
        codes[idx] = k.PERIOD_CODES[period]
        if "tspan" not in member or "vspan" not in member:
            raise ValueError(f"members[{idx}] needs tspan and vspan")
        if period is None:
            pair = as_times(list(member["tspan"]), 2, f"members[{idx}].tspan")
            abs_lo[idx], abs_hi[idx] = sorted(int(p) for p in pair)
        else:
            arrays["t_lo"][idx], arrays["t_hi"][idx] = _span(f"members[{idx}].tspan", member["tspan"])
        arrays["v_lo"][idx], arrays["v_hi"][idx] = _span(f"members[{idx}].vspan", member["vspan"])
        if member.get("fspan") is not None:
            has_f[idx] = True
            arrays["f_lo"][idx], arrays["f_hi"][idx] = _span(f"members[{idx}].fspan", member["fspan"])
        if member.get("zspan") is not None:
            has_z[idx] = True
            arrays["z_lo"][idx], arrays["z_hi"][idx] = _span(f"members[{idx}].zspan", member["zspan"])
    out = np.empty(n, dtype=np.uint8)
    k._climatology(
        vals,
        ts,
        np.ascontiguousarray(z),
        codes,
        arrays["t_lo"],
        arrays["t_hi"],
        abs_lo,
        abs_hi,
        arrays["v_lo"],
        arrays["v_hi"],
        arrays["f_lo"],
        arrays["f_hi"],
        has_f,
        arrays["z_lo"],
        arrays["z_hi"],
        has_z,
        out,
    )
    return out


SPIKE_METHODS = ("average", "differential")


def spike_test(
    values: Any,
    times: Any = None,
    *,
    suspect_threshold: float | None = None,
    fail_threshold: float | None = None,
    method: str = "average",
) -> FlagArray:
    """Spike at point n judged from its neighbours n-1 and n+1 (ioos_qc's ``average`` or ``differential``).

    First and last points, and points next to a missing value, are UNKNOWN; non-finite values are MISSING.
    With ``times`` the series is taken in time order; without, in array order.
    """
    vals = as_values(values)
    sus = _threshold("suspect_threshold", suspect_threshold)
    fail = _threshold("fail_threshold", fail_threshold)
    if method not in SPIKE_METHODS:
        raise ValueError(f"method must be one of {SPIKE_METHODS}, got {method!r}")
    # ioos_qc treats a zero threshold as "not set"; so do we.
    has_sus = bool(sus)
    has_fail = bool(fail)

    def run(v: npt.NDArray[np.float64], _t: npt.NDArray[np.int64]) -> FlagArray:
        out = np.empty(v.shape[0], dtype=np.uint8)
        k._spike(v, sus or 0.0, fail or 0.0, has_sus, has_fail, method == "differential", out)
        return out

    if times is None:
        return run(vals, np.zeros(0, dtype=np.int64))
    return _in_time_order(vals, as_times(times, vals.shape[0]), run)


def rate_of_change_test(
    values: Any,
    times: Any,
    *,
    threshold: float,
    fail_threshold: float | None = None,
) -> FlagArray:
    """SUSPECT where |Δvalue| / Δt exceeds ``threshold`` (units per second), FAIL above ``fail_threshold``.

    Δt is exact (nanoseconds), not truncated to whole seconds; across a run of missing values the rate is taken
    from the last finite value, so a jump right after a gap is checked. Two different values at the same
    instant have an infinite rate.
    """
    vals = as_values(values)
    ts = as_times(times, vals.shape[0])
    thr = _threshold("threshold", threshold, required=True)
    fail = _threshold("fail_threshold", fail_threshold)

    def run(v: npt.NDArray[np.float64], t: npt.NDArray[np.int64]) -> FlagArray:
        out = np.empty(v.shape[0], dtype=np.uint8)
        k._rate_of_change(v, t, thr or 0.0, fail or 0.0, fail is not None, out)
        return out

    return _in_time_order(vals, ts, run)


def flat_line_test(
    values: Any,
    times: Any,
    *,
    suspect_threshold: float,
    fail_threshold: float,
    tolerance: float = 0,
) -> FlagArray:
    """SUSPECT/FAIL where all values over the last ``suspect_threshold``/``fail_threshold`` seconds lie within
    ``tolerance`` (strictly less than).

    The window is a time window, not a count of points derived from the median interval, so gaps in the record
    neither stretch nor shrink it. Series shorter than 3 points are not judged (GOOD), as in ioos_qc.
    """
    vals = as_values(values)
    ts = as_times(times, vals.shape[0])
    sus_ns = _seconds_to_ns("suspect_threshold", suspect_threshold)
    fail_ns = _seconds_to_ns("fail_threshold", fail_threshold)
    tol = _threshold("tolerance", tolerance, required=True)

    def run(v: npt.NDArray[np.float64], t: npt.NDArray[np.int64]) -> FlagArray:
        n = v.shape[0]
        out = np.empty(n, dtype=np.uint8)
        sus = np.zeros(n, dtype=np.bool_)
        fail = np.zeros(n, dtype=np.bool_)
        if n >= 3:
            k._flat_window(v, t, sus_ns, tol or 0.0, sus)
            k._flat_window(v, t, fail_ns, tol or 0.0, fail)
        k._flat_line_flags(v, sus, fail, out)
        return out

    return _in_time_order(vals, ts, run)


CHECK_TYPES = ("std", "range")


def median_step_seconds(times: npt.NDArray[np.int64]) -> float:
    """Median sampling interval in seconds (exact), over the series in time order."""
    if times.shape[0] < 2:
        return float("nan")
    return float(np.median(np.diff(np.sort(times)))) / 1e9


def attenuated_signal_test(
    values: Any,
    times: Any,
    *,
    suspect_threshold: float,
    fail_threshold: float,
    test_period: float | None = None,
    min_obs: int | None = None,
    min_period: float | None = None,
    check_type: str = "std",
) -> FlagArray:
    """SUSPECT/FAIL where the spread (``std`` or ``range``) of the signal falls below the thresholds.

    Without ``test_period`` the spread is over the whole series; with it, over the trailing time window
    (t - test_period, t]. ``min_obs`` (a count) or ``min_period`` (seconds, converted with the median interval)
    sets how many finite values a window needs, else the point is UNKNOWN. Missing values inside a window are
    skipped for both check types.
    """
    vals = as_values(values)
    ts = as_times(times, vals.shape[0])
    sus = _threshold("suspect_threshold", suspect_threshold, required=True)
    fail = _threshold("fail_threshold", fail_threshold, required=True)
    if check_type not in CHECK_TYPES:
        raise ValueError(f"check_type must be one of {CHECK_TYPES}, got {check_type!r}")
    if min_obs is not None and min_period is not None:
        raise ValueError("give min_obs or min_period, not both")
    if min_obs is not None and (int(min_obs) != min_obs or min_obs < 0):
        raise ValueError(f"min_obs must be a whole number >= 0, got {min_obs!r}")
    use_range = check_type == "range"
    period_ns = None if not test_period else _seconds_to_ns("test_period", test_period)
    min_p = _threshold("min_period", min_period)

    def run(v: npt.NDArray[np.float64], t: npt.NDArray[np.int64]) -> FlagArray:
        n = v.shape[0]
        if period_ns is None:
            check = np.full(n, k._whole_spread(v, use_range))
        else:
            minp = 1
            if min_obs is not None:
                minp = int(min_obs)
            elif min_p is not None:
                step = median_step_seconds(t)
                minp = int(min_p / step) if step > 0 else 1
            if not use_range:
                return _rolling_std_flags(v, t, period_ns=period_ns, minp=minp, suspect=sus or 0.0, fail=fail or 0.0)
            check = np.empty(n)
            k._rolling_spread(v, t, period_ns, minp, use_range, check)
        out = np.empty(n, dtype=np.uint8)
        k._attenuated_flags(v, check, sus or 0.0, fail or 0.0, out)
        return out

    return _in_time_order(vals, ts, run)


# Points per chunk below which splitting the rolling variance across cores costs more than it saves.
_MIN_CHUNK = 32_768
_MAX_CHUNKS = 8


def _rolling_std_flags(
    v: npt.NDArray[np.float64], t: npt.NDArray[np.int64], *, period_ns: int, minp: int, suspect: float, fail: float
) -> FlagArray:
    """Attenuated-signal flags from a rolling std, equal to ioos_qc's (pandas' rolling std) flag for flag.

    pandas' rolling std is one sequential pass whose last bits depend on the whole history since the window last
    emptied; recomputing it that way is latency-bound. So the flags come from a parallel shifted-sum variance,
    and only where that lies within a rounding margin of a threshold (quantised data make exact ties, e.g. pH in
    steps of 0.01) do pandas' own last bits decide: those points alone get pandas' sequence, replayed from the
    last point where the window was empty.
    """
    n = v.shape[0]
    chunks = max(1, min(n // _MIN_CHUNK, _MAX_CHUNKS))
    starts = np.linspace(0, n, chunks + 1).astype(np.int64)
    # Each step of either sequence rounds away a few ulps of the largest squared deviation; 16 sqrt(n) covers
    # the random walk of those errors over the series with room to spare.
    rel_band = 16.0 * np.sqrt(n) * np.finfo(np.float64).eps
    out = np.empty(n, dtype=np.uint8)
    unsure = k._rolling_std_flags(v, t, period_ns, max(minp, 1), _square(suspect), _square(fail), rel_band, starts, out)
    if unsure:
        points = np.flatnonzero(out & k.UNSURE)
        out[points] &= ~k.UNSURE
        _replay_rolling_std(v, t, points, out, period_ns=period_ns, minp=minp, suspect=suspect, fail=fail)
    return out


def _square(threshold: float) -> float:
    """std < threshold as variance < threshold²; a threshold <= 0 can never be undercut."""
    return threshold * threshold if threshold > 0 else -np.inf


def _replay_rolling_std(
    v: npt.NDArray[np.float64],
    t: npt.NDArray[np.int64],
    points: npt.NDArray[np.int64],
    out: FlagArray,
    *,
    period_ns: int,
    minp: int,
    suspect: float,
    fail: float,
) -> None:
    """Re-flag ``points`` with pandas' exact rolling std, replaying each from the last reset before it: a point
    whose window holds only itself (the previous point is a whole period older), where pandas starts afresh."""
    resets = np.concatenate(([0], np.flatnonzero(np.diff(t) >= period_ns) + 1))
    segment = resets[np.searchsorted(resets, points, side="right") - 1]
    for start in np.unique(segment):
        mine = points[segment == start]
        stop = int(mine[-1]) + 1
        check = np.empty(stop - start)
        k._rolling_spread(v[start:stop], t[start:stop], period_ns, minp, False, check)
        flags = np.empty(stop - start, dtype=np.uint8)
        k._attenuated_flags(v[start:stop], check, suspect, fail, flags)
        out[mine] = flags[mine - start]


def neighbor_test(
    values: Any,
    times: Any = None,
    *,
    reference: Any,
    suspect_threshold: float,
    fail_threshold: float | None = None,
) -> FlagArray:
    """Multi-variate check against a co-located sensor or a parameter that must agree with this one.

    ``reference`` is aligned with ``values`` (same sample times, e.g. a second probe or a value predicted from
    another parameter). SUSPECT where |value - reference| > ``suspect_threshold``, FAIL above
    ``fail_threshold``; UNKNOWN where the reference is missing.
    """
    del times
    vals = as_values(values)
    ref = as_values(reference, "reference")
    if ref.shape != vals.shape:
        raise ValueError(f"reference has {ref.shape[0]} entries but values has {vals.shape[0]}")
    sus = _threshold("suspect_threshold", suspect_threshold, required=True)
    fail = _threshold("fail_threshold", fail_threshold)
    out = np.empty(vals.shape[0], dtype=np.uint8)
    k._neighbor(vals, ref, sus or 0.0, fail or 0.0, fail is not None, out)
    return out


def aggregate(flags: Sequence[Any] | Mapping[str, Any]) -> FlagArray:
    """Aggregate flag by QARTOD precedence FAIL > SUSPECT > GOOD > UNKNOWN > MISSING (ioos_qc's
    ``qartod_compare``): the most severe flag any test gave; MISSING when there are no tests."""
    arrays = list(flags.values()) if isinstance(flags, Mapping) else list(flags)
    if not arrays:
        raise ValueError("flags must hold at least one flag array")
    columns = tuple(np.ascontiguousarray(a, dtype=np.uint8) for a in arrays)
    n = columns[0].shape[0]
    for c in columns:
        if c.shape != (n,):
            raise ValueError(f"flag arrays must all have shape ({n},), got {c.shape}")
    out = np.empty(n, dtype=np.uint8)
    k._aggregate(columns, k.RANKS, out)
    return out


TESTS: dict[str, Callable[..., FlagArray]] = {
    "gross_range": gross_range_test,
    "climatology": climatology_test,
    "spike": spike_test,
    "rate_of_change": rate_of_change_test,
    "flat_line": flat_line_test,
    "attenuated_signal": attenuated_signal_test,
    "neighbor": neighbor_test,
}
"""Every QARTOD test by its configuration name (the key in ``qc.qartod`` of the manifest)."""
