# ruff: noqa: PLR0917  # Numba kernels take their arrays and scalars positionally; wrappers name them.
"""Private Numba kernels. Not an API: call the validating wrappers in :mod:`analytics.qartod` and
:mod:`analytics.detectors` instead.

Conventions every kernel relies on (the wrappers guarantee them):

- ``values`` is a contiguous 1-D ``float64`` array; ``times`` a contiguous 1-D ``int64`` array of epoch
  nanoseconds, sorted non-decreasing, of the same length;
- outputs are preallocated by the caller (``uint8`` flags, ``float64`` scores, ``bool`` masks);
- memory is O(points): rolling windows use monotonic deques and running sums, never a points × window copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analytics._numba import kernel, parallel_kernel, prange
from pilotwatch.schema import QartodFlag

# np.uint8 copies of the schema's flags: Numba folds module-level scalars into the kernels as constants.
GOOD = np.uint8(QartodFlag.GOOD)
UNKNOWN = np.uint8(QartodFlag.UNKNOWN)
SUSPECT = np.uint8(QartodFlag.SUSPECT)
FAIL = np.uint8(QartodFlag.FAIL)
MISSING = np.uint8(QartodFlag.MISSING)
UNSURE = np.uint8(0x80)  # added to a flag by a fast kernel that leaves the exact decision to a slower one

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S

# Calendar periods understood by the climatology test (same names as pandas Timestamp attributes).
PERIOD_CODES = {
    None: 0,
    "year": 1,
    "quarter": 2,
    "month": 3,
    "week": 4,
    "weekofyear": 4,
    "dayofyear": 5,
    "dayofweek": 6,
    "day": 7,
    "hour": 8,
    "minute": 9,
}


NAT = np.iinfo(np.int64).min


# Whole-array checks run in blocks without an early exit inside a block, so LLVM vectorises the block; an exit
# per element kept the loop scalar (3.4 ns a point against 0.6 here). Long arrays are checked on every core: the
# thread start costs a few microseconds, which only pays from about a million points.
CHECK_BLOCK = 4096
PARALLEL_CHECK_MIN = 1 << 20


@kernel
def _has_nat(times: np.ndarray) -> bool:
    n = times.shape[0]
    for lo in range(0, n, CHECK_BLOCK):
        found = 0
        for i in range(lo, min(lo + CHECK_BLOCK, n)):
            found += times[i] == NAT
        if found:
            return True
    return False


@parallel_kernel
def _has_nat_parallel(times: np.ndarray) -> bool:
    n = times.shape[0]
    found = 0
    for b in prange((n + CHECK_BLOCK - 1) // CHECK_BLOCK):
        hits = 0
        for i in range(b * CHECK_BLOCK, min((b + 1) * CHECK_BLOCK, n)):
            hits += times[i] == NAT
        found += hits
    return found > 0


@kernel
def _is_sorted(times: np.ndarray) -> bool:
    n = times.shape[0]
    for lo in range(1, n, CHECK_BLOCK):
        descents = 0
        for i in range(lo, min(lo + CHECK_BLOCK, n)):
            descents += times[i] < times[i - 1]
        if descents:
            return False
    return True


@parallel_kernel
def _is_sorted_parallel(times: np.ndarray) -> bool:
    n = times.shape[0]
    descents = 0
    for b in prange((n + CHECK_BLOCK - 1) // CHECK_BLOCK):
        found = 0
        for i in range(max(b * CHECK_BLOCK, 1), min((b + 1) * CHECK_BLOCK, n)):
            found += times[i] < times[i - 1]
        descents += found
    return descents == 0


def has_nat(times: np.ndarray) -> bool:
    return bool((_has_nat_parallel if times.shape[0] >= PARALLEL_CHECK_MIN else _has_nat)(times))


def is_sorted(times: np.ndarray) -> bool:
    return bool((_is_sorted_parallel if times.shape[0] >= PARALLEL_CHECK_MIN else _is_sorted)(times))


# --------------------------------------------------------------------------------------------- gross range
@parallel_kernel
def _gross_range(
    values: np.ndarray,
    fail_lo: float,
    fail_hi: float,
    sus_lo: float,
    sus_hi: float,
    has_suspect: bool,
    out: np.ndarray,
) -> None:
    for i in prange(values.shape[0]):
        v = values[i]
        if np.isnan(v):
            out[i] = MISSING
        elif v < fail_lo or v > fail_hi:
            out[i] = FAIL
        elif has_suspect and (v < sus_lo or v > sus_hi):
            out[i] = SUSPECT
        else:
            out[i] = GOOD


# --------------------------------------------------------------------------------------------- calendar
@kernel
def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01 (proleptic Gregorian, H. Hinnant's algorithm)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y, m, d


@kernel
def _days_from_civil(y: int, m: int, d: int) -> int:
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mm = m - 3 if m > 2 else m + 9
    doy = (153 * mm + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@kernel
def _period_value(t_ns: int, code: int) -> float:  # noqa: PLR0911  # one return per calendar period
    """The pandas ``Timestamp.<period>`` attribute of ``t_ns`` for a period code of :data:`PERIOD_CODES`."""
    if code == 8:
        return float((t_ns // (3600 * NS_PER_S)) % 24)
    if code == 9:
        return float((t_ns // (60 * NS_PER_S)) % 60)
    days = t_ns // NS_PER_DAY
    if code == 6:
        return float((days + 3) % 7)
    if code == 4:
        wd = (days + 3) % 7
        thursday = days - wd + 3
        ty, _, _ = _civil_from_days(thursday)
        return float((thursday - _days_from_civil(ty, 1, 1)) // 7 + 1)
    y, m, d = _civil_from_days(days)
    if code == 1:
        return float(y)
    if code == 2:
        return float((m - 1) // 3 + 1)
    if code == 3:
        return float(m)
    if code == 5:
        return float(days - _days_from_civil(y, 1, 1) + 1)
    return float(d)


@kernel
def _period_values(times: np.ndarray, code: int, out: np.ndarray) -> None:
    for i in range(times.shape[0]):
        out[i] = _period_value(times[i], code)


# --------------------------------------------------------------------------------------------- climatology
@parallel_kernel
def _climatology(
    values: np.ndarray,
    times: np.ndarray,
    depths: np.ndarray,
    codes: np.ndarray,
    t_lo: np.ndarray,
    t_hi: np.ndarray,
    abs_lo: np.ndarray,
    abs_hi: np.ndarray,
    v_lo: np.ndarray,
    v_hi: np.ndarray,
    f_lo: np.ndarray,
    f_hi: np.ndarray,
    has_f: np.ndarray,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    has_z: np.ndarray,
    out: np.ndarray,
) -> None:
    n_members = codes.shape[0]
    any_depth = False
    for i in range(depths.shape[0]):
        if not np.isnan(depths[i]):
            any_depth = True
            break
    for i in prange(values.shape[0]):
        v = values[i]
        if np.isnan(v):
            out[i] = MISSING
            continue
        flag = UNKNOWN
        t = times[i]
        for k in range(n_members):
            if has_z[k]:
                if not any_depth:
                    continue
                z = depths[i] if depths.shape[0] > i else np.nan
                if np.isnan(z) or z < z_lo[k] or z > z_hi[k]:
                    continue
            if codes[k] == 0:
                if t < abs_lo[k] or t > abs_hi[k]:
                    continue
            else:
                tv = _period_value(t, codes[k])
                if tv < t_lo[k] or tv > t_hi[k]:
                    continue
            if has_f[k] and (v < f_lo[k] or v > f_hi[k]):
                flag = FAIL
            elif v < v_lo[k] or v > v_hi[k]:
                flag = SUSPECT
            else:
                flag = GOOD
        out[i] = flag


# --------------------------------------------------------------------------------------------- spike
@kernel
def _spike(
    values: np.ndarray,
    suspect: float,
    fail: float,
    has_suspect: bool,
    has_fail: bool,
    differential: bool,
    out: np.ndarray,
) -> None:
    n = values.shape[0]
    for i in range(n):
        v = values[i]
        if not np.isfinite(v):
            out[i] = MISSING
            continue
        if i == 0 or i == n - 1:
            out[i] = UNKNOWN
            continue
        a = values[i - 1]
        b = values[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            out[i] = UNKNOWN
            continue
        if differential:
            d1 = v - a
            d2 = b - v
            diff = 0.0 if d1 * d2 >= 0 else min(abs(d1), abs(d2))
        else:
            ref = (a + b) / 2
            if not np.isfinite(ref):
                out[i] = UNKNOWN
                continue
            diff = abs(v - ref)
        flag = GOOD
        if has_suspect and diff > suspect:
            flag = SUSPECT
        if has_fail and diff > fail:
            flag = FAIL
        out[i] = flag


# --------------------------------------------------------------------------------------------- rate of change
@parallel_kernel
def _rate_of_change(
    values: np.ndarray,
    times: np.ndarray,
    threshold: float,
    fail: float,
    has_fail: bool,
    out: np.ndarray,
) -> None:
    # Each point needs only its last finite predecessor, found by a short backward scan (the scans over a run of
    # missing values add up to the run's length once), so every point is independent and the pass is parallel.
    for i in prange(values.shape[0]):
        v = values[i]
        if not np.isfinite(v):
            out[i] = MISSING
            continue
        prev = i - 1
        while prev >= 0 and not np.isfinite(values[prev]):
            prev -= 1
        flag = GOOD
        if prev >= 0:
            dx = abs(v - values[prev])
            dt = (times[i] - times[prev]) / NS_PER_S
            if dt > 0:
                rate = dx / dt
            elif dx == 0:
                rate = 0.0
            else:
                rate = np.inf
            if rate > threshold:
                flag = SUSPECT
            if has_fail and rate > fail:
                flag = FAIL
        out[i] = flag


# --------------------------------------------------------------------------------------------- flat line
@kernel
def _flat_window(values: np.ndarray, times: np.ndarray, span_ns: int, tolerance: float, out: np.ndarray) -> None:
    """out[i] = the finite values in the time window [t_i - span, t_i] all lie within ``tolerance``.

    At the start of the record a window counts only once the data cover it: the first sample is taken to stand
    for one sampling interval (t_1 - t_0) before it, which is exactly ioos_qc's rule on regular data.
    """
    n = values.shape[0]
    maxq = np.empty(n, dtype=np.int64)
    minq = np.empty(n, dtype=np.int64)
    maxh = 0
    maxt = 0
    minh = 0
    mint = 0
    j = 0
    first_step = times[1] - times[0] if n > 1 else 0
    for i in range(n):
        v = values[i]
        finite = np.isfinite(v)
        if finite:
            while maxt > maxh and values[maxq[maxt - 1]] <= v:
                maxt -= 1
            maxq[maxt] = i
            maxt += 1
            while mint > minh and values[minq[mint - 1]] >= v:
                mint -= 1
            minq[mint] = i
            mint += 1
        while times[i] - times[j] > span_ns:
            j += 1
        while maxh < maxt and maxq[maxh] < j:
            maxh += 1
        while minh < mint and minq[minh] < j:
            minh += 1
        out[i] = False
        if not finite or maxh == maxt:
            continue
        covered = j > 0 or (times[i] - times[0]) + first_step > span_ns
        if covered:
            out[i] = abs(values[maxq[maxh]] - values[minq[minh]]) < tolerance


@kernel
def _flat_line_flags(values: np.ndarray, suspect: np.ndarray, fail: np.ndarray, out: np.ndarray) -> None:
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            out[i] = MISSING
        elif fail[i]:
            out[i] = FAIL
        elif suspect[i]:
            out[i] = SUSPECT
        else:
            out[i] = GOOD


# --------------------------------------------------------------------------------------------- attenuated signal
INV_COND_TOL = np.finfo(np.float64).eps * 1e3


@kernel
def _welford_add(v: float, st: np.ndarray) -> None:
    """Add ``v`` to the running (nobs, mean, ssqdm, compensation, unstable) in ``st`` — pandas' ``add_var``."""
    prev_m2 = st[2]
    st[0] += 1.0
    prev_mean = st[1] - st[3]
    y = v - st[3]
    t = y - st[1]
    st[3] = t + st[1] - y
    st[1] = st[1] + t / st[0]
    st[2] = st[2] + (v - prev_mean) * (v - st[1])
    if prev_m2 * INV_COND_TOL > st[2]:
        st[4] = 1.0


@kernel
def _welford_remove(v: float, st: np.ndarray) -> None:
    """Remove ``v`` — pandas' ``remove_var`` (slot 5 holds the removal compensation)."""
    prev_m2 = st[2]
    st[0] -= 1.0
    if st[0] > 0:
        prev_mean = st[1] - st[5]
        y = v - st[5]
        t = y - st[1]
        st[5] = t + st[1] - y
        st[1] = st[1] - t / st[0]
        st[2] = st[2] - (v - prev_mean) * (v - st[1])
        if prev_m2 * INV_COND_TOL > st[2]:
            st[4] = 1.0
    else:
        st[1] = 0.0
        st[2] = 0.0
        st[4] = 0.0


@kernel
def _rolling_spread(
    values: np.ndarray,
    times: np.ndarray,
    period_ns: int,
    min_periods: int,
    use_range: bool,
    out: np.ndarray,
) -> None:
    """Standard deviation (ddof=0) or range of the finite values in the window (t_i - period, t_i].

    NaN where the window holds fewer than ``min_periods`` finite values. The std follows pandas' rolling
    variance step for step (Welford with Kahan compensation, removals before additions, a recompute of the
    window when cancellation is detected), so thresholds compare identically; the range uses monotonic deques.
    """
    n = values.shape[0]
    st = np.zeros(6)
    maxq = np.empty(n if use_range else 0, dtype=np.int64)
    minq = np.empty(n if use_range else 0, dtype=np.int64)
    maxh = 0
    maxt = 0
    minh = 0
    mint = 0
    nobs = 0
    j = 0
    minp = max(min_periods, 1)
    for i in range(n):
        prev_start = j
        while times[j] <= times[i] - period_ns:
            j += 1
        v = values[i]
        finite = np.isfinite(v)
        if use_range:
            if finite:
                nobs += 1
                while maxt > maxh and values[maxq[maxt - 1]] <= v:
                    maxt -= 1
                maxq[maxt] = i
                maxt += 1
                while mint > minh and values[minq[mint - 1]] >= v:
                    mint -= 1
                minq[mint] = i
                mint += 1
            for r in range(prev_start, j):
                if np.isfinite(values[r]):
                    nobs -= 1
            while maxh < maxt and maxq[maxh] < j:
                maxh += 1
            while minh < mint and minq[minh] < j:
                minh += 1
            out[i] = values[maxq[maxh]] - values[minq[minh]] if nobs >= minp else np.nan
            continue
        recompute = i == 0 or j >= i
        if not recompute:
            for r in range(prev_start, j):
                if np.isfinite(values[r]):
                    _welford_remove(values[r], st)
            if finite:
                _welford_add(v, st)
        if recompute or st[4] != 0.0:
            st[:] = 0.0
            for r in range(j, i + 1):
                if np.isfinite(values[r]):
                    _welford_add(values[r], st)
            st[4] = 0.0
        if st[0] >= minp:
            var = st[2] / st[0]
            out[i] = np.sqrt(var) if var > 0 else 0.0
        else:
            out[i] = np.nan


@parallel_kernel
def _rolling_std_flags(
    values: np.ndarray,
    times: np.ndarray,
    period_ns: int,
    min_periods: int,
    suspect_sq: float,
    fail_sq: float,
    rel_band: float,
    starts: np.ndarray,
    out: np.ndarray,
) -> int:
    """Attenuated-signal flags from the population variance of the finite values in (t_i - period, t_i], each
    chunk ``starts[c]:starts[c + 1]`` on its own core. Returns how many points were marked unsure (``UNSURE``
    added to their flag): those whose variance lies within ``rel_band`` times the largest squared deviation seen
    in the chunk, over the window's count, of a squared threshold: there the last bits of pandas' own sequence
    could decide the flag.

    The variance comes from running sums of values shifted by a recent window mean, recomputed from scratch
    whenever the window empties and every few windows, so its rounding stays near the data's own spread. The
    largest squared deviation bounds what one step of either this or pandas' sequence can round away.
    Indices are unsigned so the hot loop carries no negative-index wraparound (35 against 41 ns per 10 points).
    """
    nchunks = starts.shape[0] - 1
    unsure = np.zeros(nchunks, dtype=np.int64)
    one = np.uint64(1)
    refresh_min = np.uint64(1024)
    for c in prange(nchunks):
        i = np.uint64(starts[c])
        stop = np.uint64(starts[c + 1])
        j = np.uint64(np.searchsorted(times, times[i] - period_ns, side="right"))
        shift = 0.0
        s1 = 0.0
        s2 = 0.0
        cnt = 0
        refresh_at = i
        marked = 0
        widest = 0.0
        while i < stop:
            t_lo = times[i] - period_ns
            if i == refresh_at:
                while times[j] <= t_lo:
                    j += one
                total = 0.0
                cnt = 0
                for r in range(j, i + one):
                    if np.isfinite(values[r]):
                        total += values[r]
                        cnt += 1
                shift = total / cnt if cnt > 0 else 0.0
                s1 = 0.0
                s2 = 0.0
                for r in range(j, i + one):
                    if np.isfinite(values[r]):
                        d = values[r] - shift
                        s1 += d
                        s2 += d * d
                        widest = max(widest, abs(d))
                refresh_at = i + max(refresh_min, np.uint64(4) * (i - j + one))
            else:
                x = values[i]
                if np.isfinite(x):
                    d = x - shift
                    s1 += d
                    s2 += d * d
                    cnt += 1
                    widest = max(widest, abs(d))
                while times[j] <= t_lo:
                    y = values[j]
                    if np.isfinite(y):
                        e = y - shift
                        s1 -= e
                        s2 -= e * e
                        cnt -= 1
                    j += one
                if cnt == 0:
                    s1 = 0.0
                    s2 = 0.0
            if not np.isfinite(values[i]):
                out[i] = MISSING
            elif cnt < min_periods:
                out[i] = UNKNOWN
            else:
                inv = 1.0 / cnt
                var = (s2 - s1 * s1 * inv) * inv if cnt > 1 else 0.0
                band = rel_band * widest * widest * inv
                if var > suspect_sq + band:
                    out[i] = GOOD
                else:
                    flag = FAIL if var < fail_sq else (SUSPECT if var < suspect_sq else GOOD)
                    if abs(var - fail_sq) <= band or suspect_sq - band <= var:
                        flag |= UNSURE
                        marked += 1
                    out[i] = flag
            i += one
        unsure[c] = marked
    return int(unsure.sum())


@kernel
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> float:
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return float(res)


@kernel
def _pairwise_sum(a: np.ndarray) -> float:
    """NumPy's pairwise summation (blocks of 128, halves rounded to multiples of 8), reproduced so that a
    whole-series std equals ``np.ma.std`` to the bit. Iterative: Numba's cache does not support recursion."""
    los = np.empty(128, dtype=np.int64)
    ns = np.empty(128, dtype=np.int64)
    stage = np.zeros(128, dtype=np.int64)
    vals = np.empty(128)
    top = 0
    nv = 0
    los[0] = 0
    ns[0] = a.shape[0]
    stage[0] = 0
    while top >= 0:
        lo = los[top]
        n = ns[top]
        if n <= 128:
            vals[nv] = _pairwise_block(a, lo, n)
            nv += 1
            top -= 1
            continue
        n2 = n // 2
        n2 -= n2 % 8
        if stage[top] == 0:
            stage[top] = 1
            top += 1
            los[top] = lo
            ns[top] = n2
            stage[top] = 0
        elif stage[top] == 1:
            stage[top] = 2
            top += 1
            los[top] = lo + n2
            ns[top] = n - n2
            stage[top] = 0
        else:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            top -= 1
    return float(vals[0])


@kernel
def _whole_spread(values: np.ndarray, use_range: bool) -> float:
    n = values.shape[0]
    filled = np.zeros(n)
    count = 0
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        v = values[i]
        if np.isfinite(v):
            count += 1
            filled[i] = v
            lo = min(lo, v)
            hi = max(hi, v)
    if count == 0:
        return np.nan
    if use_range:
        return float(hi - lo)
    mean = _pairwise_sum(filled) / count
    for i in range(n):
        if np.isfinite(values[i]):
            d = values[i] - mean
            filled[i] = d * d
    return float(np.sqrt(_pairwise_sum(filled) / count))


@kernel
def _attenuated_flags(values: np.ndarray, check: np.ndarray, suspect: float, fail: float, out: np.ndarray) -> None:
    for i in range(values.shape[0]):
        c = check[i]
        if not np.isfinite(values[i]):
            out[i] = MISSING
        elif np.isnan(c):
            out[i] = UNKNOWN
        elif c < fail:
            out[i] = FAIL
        elif c < suspect:
            out[i] = SUSPECT
        else:
            out[i] = GOOD


# --------------------------------------------------------------------------------------------- neighbour
@parallel_kernel
def _neighbor(
    values: np.ndarray,
    reference: np.ndarray,
    suspect: float,
    fail: float,
    has_fail: bool,
    out: np.ndarray,
) -> None:
    for i in prange(values.shape[0]):
        v = values[i]
        r = reference[i]
        if not np.isfinite(v):
            out[i] = MISSING
        elif not np.isfinite(r):
            out[i] = UNKNOWN
        else:
            d = abs(v - r)
            if has_fail and d > fail:
                out[i] = FAIL
            elif d > suspect:
                out[i] = SUSPECT
            else:
                out[i] = GOOD


# --------------------------------------------------------------------------------------------- aggregate
RANKS = np.full(256, -1, dtype=np.int8)
RANKS[9], RANKS[2], RANKS[1], RANKS[3], RANKS[4] = 0, 1, 2, 3, 4
"""QARTOD precedence by flag value, lowest first: MISSING < UNKNOWN < GOOD < SUSPECT < FAIL; -1 unknown."""


@parallel_kernel
def _aggregate(flags: Any, ranks: np.ndarray, out: np.ndarray) -> None:
    # One fused pass over the tests' flag arrays (a tuple: no stacked copy), the precedence from a table.
    n = out.shape[0]
    k = len(flags)
    for i in prange(n):
        best = -1
        flag = MISSING
        for j in range(k):
            f = flags[j][i]
            r = ranks[f]
            if r > best:
                best = r
                flag = f
        out[i] = flag if best >= 0 else MISSING


# ============================================================================================= detectors
# Every detector kernel walks ``values`` in order with ``mode``: 0 = score then learn (batch), 1 = score only,
# 2 = learn only. Missing values (non-finite) get a NaN score and are not learned. State lives in the arrays
# passed in and is updated in place, so any split of a series into chunks gives the same scores.
SCORE_AND_LEARN = 0
SCORE_ONLY = 1
LEARN_ONLY = 2
MAD_TO_SIGMA = 1.4826
TINY = 1e-12


@kernel
def _sorted_remove(srt: np.ndarray, m: int, x: float) -> None:
    k = np.searchsorted(srt[:m], x)
    for r in range(k, m - 1):
        srt[r] = srt[r + 1]


@kernel
def _sorted_insert(srt: np.ndarray, m: int, x: float) -> None:
    k = np.searchsorted(srt[:m], x)
    for r in range(m, k, -1):
        srt[r] = srt[r - 1]
    srt[k] = x


@kernel
def _kth_deviation(srt: np.ndarray, m: int, med: float, k: int) -> float:
    """k-th smallest (0-based) of |srt[:m] - med| by merging the two sides of the median."""
    right = np.searchsorted(srt[:m], med)
    left = right - 1
    d = 0.0
    for _ in range(k + 1):
        if left < 0:
            d = srt[right] - med
            right += 1
        elif right >= m or med - srt[left] <= srt[right] - med:
            d = med - srt[left]
            left -= 1
        else:
            d = srt[right] - med
            right += 1
    return d


@kernel
def _median_mad(srt: np.ndarray, m: int) -> tuple[float, float]:
    half = m // 2
    med = srt[half] if m % 2 == 1 else 0.5 * (srt[half - 1] + srt[half])
    if m % 2 == 1:
        mad = _kth_deviation(srt, m, med, half)
    else:
        mad = 0.5 * (_kth_deviation(srt, m, med, half - 1) + _kth_deviation(srt, m, med, half))
    return med, mad


@kernel
def _robust_z_run(
    window: int,
    grace: int,
    min_scale: float,
    buf: np.ndarray,
    srt: np.ndarray,
    ist: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Rolling median/MAD z-score over the last ``window`` finite values. ist = [filled, ring pos, learned]."""
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        m = ist[0]
        if mode != LEARN_ONLY:
            if ist[2] < grace or m == 0:
                out[i] = 0.0
            else:
                med, mad = _median_mad(srt, m)
                scale = max(MAD_TO_SIGMA * mad, min_scale, TINY)
                out[i] = abs(x - med) / scale
        if mode != SCORE_ONLY:
            pos = ist[1]
            if m == window:
                _sorted_remove(srt, m, buf[pos])
                m -= 1
            buf[pos] = x
            _sorted_insert(srt, m, x)
            ist[0] = m + 1
            ist[1] = (pos + 1) % window
            ist[2] += 1


@kernel
def _ewma_run(
    alpha: float, grace: int, min_scale: float, st: np.ndarray, values: np.ndarray, out: np.ndarray, mode: int
) -> None:
    """Exponentially weighted mean/variance z-score. st = [n, mean, var]."""
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        if mode != LEARN_ONLY:
            if st[0] < grace or st[0] == 0:
                out[i] = 0.0
            else:
                out[i] = abs(x - st[1]) / max(np.sqrt(st[2]), min_scale, TINY)
        if mode != SCORE_ONLY:
            if st[0] == 0:
                st[1] = x
                st[2] = 0.0
            else:
                diff = x - st[1]
                incr = alpha * diff
                st[1] += incr
                st[2] = (1.0 - alpha) * (st[2] + diff * incr)
            st[0] += 1


@kernel
def _cusum_run(
    alpha: float,
    drift_k: float,
    h: float,
    grace: int,
    min_scale: float,
    st: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Two-sided CUSUM of z-scores against a slow EWMA baseline; score = max(S+, S-) / h, reset after an alarm.

    st = [n, mean, var, s_pos, s_neg]. The baseline learns only from points that raise no alarm.
    """
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        warm = st[0] >= grace and st[0] > 0
        z = 0.0
        if warm:
            z = (x - st[1]) / max(np.sqrt(st[2]), min_scale, TINY)
        sp = max(0.0, st[3] + z - drift_k) if warm else 0.0
        sn = max(0.0, st[4] - z - drift_k) if warm else 0.0
        if mode != LEARN_ONLY:
            out[i] = max(sp, sn) / h
        if mode != SCORE_ONLY:
            alarm = max(sp, sn) > h
            st[3] = 0.0 if alarm else sp
            st[4] = 0.0 if alarm else sn
            if st[0] == 0:
                st[1] = x
                st[2] = 0.0
            elif not alarm:
                diff = x - st[1]
                incr = alpha * diff
                st[1] += incr
                st[2] = (1.0 - alpha) * (st[2] + diff * incr)
            st[0] += 1


@kernel
def _seasonal_run(
    n_bins: int,
    alpha: float,
    grace: int,
    min_scale: float,
    counts: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Time-of-day baseline: an EWMA mean/variance per bin of the day; z-score against the point's bin."""
    bin_ns = NS_PER_DAY // n_bins
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        b = (times[i] % NS_PER_DAY) // bin_ns
        if mode != LEARN_ONLY:
            if counts[b] < grace or counts[b] == 0:
                out[i] = 0.0
            else:
                out[i] = abs(x - means[b]) / max(np.sqrt(variances[b]), min_scale, TINY)
        if mode != SCORE_ONLY:
            if counts[b] == 0:
                means[b] = x
                variances[b] = 0.0
            else:
                diff = x - means[b]
                incr = alpha * diff
                means[b] += incr
                variances[b] = (1.0 - alpha) * (variances[b] + diff * incr)
            counts[b] += 1


@kernel
def _drift_run(
    fast_alpha: float,
    slow_alpha: float,
    amp_fast: float,
    amp_slow: float,
    collapse: float,
    threshold: float,
    grace_days: int,
    min_scale: float,
    smooth_alpha: float,
    st: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Drift and fouling: slow divergence of the level, or a collapsing daily cycle.

    Per-point EWMAs: ``fast`` and ``slow`` levels and the slow mean absolute deviation (MAD-like scale). Per
    day: the amplitude (max - min) feeds a fast and a slow EWMA. Score = max(|fast - slow| / (threshold *
    scale), (1 - amp_fast / amp_slow) / collapse); 1 is the alarm level. Scores are 0 until ``grace_days`` full
    days have been seen. The daily range is taken on a lightly smoothed value (``smooth_alpha``) so sensor noise
    does not pose as a daily cycle. st = [n, fast, slow, scale, day, day_min, day_max, days_seen, amp_fast,
    amp_slow, smoothed].
    """
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        day = float(times[i] // NS_PER_DAY)
        if mode != LEARN_ONLY:
            score = 0.0
            if st[7] >= grace_days:
                fast = st[1] + fast_alpha * (x - st[1])
                level = abs(fast - st[2]) / (threshold * max(st[3], min_scale, TINY))
                cycle = 0.0
                if st[9] > TINY:
                    cycle = (1.0 - st[8] / st[9]) / collapse
                score = max(level, cycle)
            out[i] = score
        if mode != SCORE_ONLY:
            if st[0] == 0:
                st[1] = x
                st[2] = x
                st[3] = 0.0
                st[4] = day
                st[5] = x
                st[6] = x
                st[10] = x
            else:
                st[10] += smooth_alpha * (x - st[10])
                if day != st[4]:
                    amp = st[6] - st[5]
                    if st[7] == 0:
                        st[8] = amp
                        st[9] = amp
                    else:
                        st[8] += amp_fast * (amp - st[8])
                        st[9] += amp_slow * (amp - st[9])
                    st[7] += 1
                    st[4] = day
                    st[5] = st[10]
                    st[6] = st[10]
                st[5] = min(st[5], st[10])
                st[6] = max(st[6], st[10])
                st[1] += fast_alpha * (x - st[1])
                st[3] += slow_alpha * (abs(x - st[2]) - st[3])
                st[2] += slow_alpha * (x - st[2])
            st[0] += 1
