"""Slow, obviously-correct pure-Python references for every Numba kernel (one loop, no cleverness)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

NS = 1_000_000_000


def finite(v: float) -> bool:
    return not (math.isnan(v) or math.isinf(v))


def gross_range(values, fail_span, suspect_span=None):
    out = []
    for v in values:
        if math.isnan(v):
            out.append(9)
        elif v < fail_span[0] or v > fail_span[1]:
            out.append(4)
        elif suspect_span is not None and (v < suspect_span[0] or v > suspect_span[1]):
            out.append(3)
        else:
            out.append(1)
    return out


def spike(values, suspect, fail, differential=False):
    n = len(values)
    out = []
    for i, v in enumerate(values):
        if not finite(v):
            out.append(9)
            continue
        if i in (0, n - 1) or not finite(values[i - 1]) or not finite(values[i + 1]):
            out.append(2)
            continue
        if differential:
            d1, d2 = v - values[i - 1], values[i + 1] - v
            diff = 0.0 if d1 * d2 >= 0 else min(abs(d1), abs(d2))
        else:
            diff = abs(v - (values[i - 1] + values[i + 1]) / 2)
        flag = 1
        if suspect and diff > suspect:
            flag = 3
        if fail and diff > fail:
            flag = 4
        out.append(flag)
    return out


def rate_of_change(values, times_ns, threshold, fail=None):
    out = []
    prev = None
    for v, t in zip(values, times_ns, strict=True):
        if not finite(v):
            out.append(9)
            continue
        flag = 1
        if prev is not None:
            dx = abs(v - prev[0])
            dt = (t - prev[1]) / NS
            rate = dx / dt if dt > 0 else (0.0 if dx == 0 else math.inf)
            if rate > threshold:
                flag = 3
            if fail is not None and rate > fail:
                flag = 4
        out.append(flag)
        prev = (v, t)
    return out


def _flat(values, times_ns, span_s, tol):
    span = round(span_s * NS)
    n = len(values)
    res = []
    for i in range(n):
        window = []
        for j in range(i, -1, -1):  # times are sorted: walk back until the window is left
            if times_ns[i] - times_ns[j] > span:
                break
            window.insert(0, j)
        vals = [values[j] for j in window if finite(values[j])]
        first_step = times_ns[1] - times_ns[0]
        covered = window[0] > 0 or (times_ns[i] - times_ns[0]) + first_step > span
        res.append(finite(values[i]) and covered and (max(vals) - min(vals)) < tol)
    return res


def flat_line(values, times_ns, suspect, fail, tol):
    if len(values) < 3:
        return [1 if finite(v) else 9 for v in values]
    s = _flat(values, times_ns, suspect, tol)
    f = _flat(values, times_ns, fail, tol)
    return [9 if not finite(v) else 4 if fi else 3 if si else 1 for v, si, fi in zip(values, s, f, strict=True)]


def attenuated(values, times_ns, suspect, fail, period=None, min_obs=1, check_type="std"):
    def spread(vals):
        if check_type == "range":
            return max(vals) - min(vals)
        m = sum(vals) / len(vals)
        return math.sqrt(sum((x - m) ** 2 for x in vals) / len(vals))

    checks = []
    for i in range(len(values)):
        if period is None:
            vals = [x for x in values if finite(x)]
        else:
            vals = []
            for j in range(i, -1, -1):  # times are sorted: walk back until the window is left
                if times_ns[j] <= times_ns[i] - period * NS:
                    break
                if finite(values[j]):
                    vals.append(values[j])
        checks.append(spread(vals) if vals and len(vals) >= max(min_obs, 1) else math.nan)
    out = []
    for v, c in zip(values, checks, strict=True):
        if not finite(v):
            out.append(9)
        elif math.isnan(c):
            out.append(2)
        elif c < fail - 1e-12:
            out.append(4)
        elif c < suspect - 1e-12:
            out.append(3)
        else:
            out.append(1)
    return out


def period_value(t_ns, period):
    ts = datetime.fromtimestamp(t_ns // NS, tz=UTC)
    if period == "year":
        return ts.year
    if period == "quarter":
        return (ts.month - 1) // 3 + 1
    if period == "month":
        return ts.month
    if period in ("week", "weekofyear"):
        return ts.isocalendar()[1]
    if period == "dayofyear":
        return ts.timetuple().tm_yday
    if period == "dayofweek":
        return ts.weekday()
    if period == "day":
        return ts.day
    if period == "hour":
        return ts.hour
    return ts.minute


def climatology(values, times_ns, members):
    out = []
    for v, t in zip(values, times_ns, strict=True):
        if math.isnan(v):
            out.append(9)
            continue
        flag = 2
        for m in members:
            lo, hi = sorted(m["tspan"])
            tv = period_value(t, m["period"])
            if not lo <= tv <= hi:
                continue
            f = m.get("fspan")
            if f is not None and not f[0] <= v <= f[1]:
                flag = 4
            elif not m["vspan"][0] <= v <= m["vspan"][1]:
                flag = 3
            else:
                flag = 1
        out.append(flag)
    return out


RANK = {9: 0, 2: 1, 1: 2, 3: 3, 4: 4}


def aggregate(arrays):
    out = []
    for column in zip(*arrays, strict=True):
        known = [f for f in column if f in RANK]
        out.append(max(known, key=RANK.__getitem__) if known else 9)
    return out


def fouling(
    values,
    times_ns,
    *,
    sign,
    departure,
    min_descent_h,
    max_step,
    release,
    alpha,
    grace,
    max_episode_h,
    min_per_hour,
    window_h=1,
    max_excursion_h=12,
    max_apart_h=48,
    slid_share=2 / 3,
):
    """The fouling signature as the docstring of analytics.fouling states it, with named variables and dicts.

    Hourly means are closed when a reading of a later hour arrives; a reading is scored with the episode state of
    the hours closed before it."""
    hour_ns = 3600 * NS
    profile, count = {}, {}  # hour of day -> clean mean, hours learned
    means = {}  # hour number -> mean of its readings (the last window_h closed hours matter)
    s = {
        "gain": math.nan,
        "prev": math.nan,
        "hours": 0,
        "slide": 0.0,
        "alarm": False,
        "alarm_h": 0,
        "last": -1,
        "apart": 0,
        "excursion": 0,
        "clean": False,
    }
    cur, total, n = None, 0.0, 0
    out = []

    def close(hour, mean):
        means[hour] = mean
        bins = [
            (h, h % 24) for h in range(hour - window_h + 1, hour + 1) if h in means and count.get(h % 24, 0) >= grace
        ]
        num = sum(means[h] for h, _ in bins)
        den = sum(profile[b] for _, b in bins)
        in_alarm = s["alarm"]
        if 2 * len(bins) >= window_h and den > 0 and num / den > 0:
            gain = num / den
            d, prev = sign * (gain - 1), s["prev"]
            if in_alarm:
                s["alarm_h"] += 1
                if d < release * departure or s["alarm_h"] >= max_episode_h:
                    if s["alarm_h"] >= max_episode_h:
                        count.clear()
                    s.update(alarm=False, alarm_h=0, hours=0, slide=0.0)
                    in_alarm = False
                s["prev"] = s["gain"] = gain
            elif not math.isnan(prev) and abs(gain - prev) > max_step * departure:
                s["excursion"] += 1
                if s["excursion"] > max_excursion_h:
                    s["excursion"] = 0
                    s["prev"] = s["gain"] = gain
            else:
                s["excursion"] = 0
                if d < departure / 3:
                    s.update(hours=0, slide=0.0, clean=True)
                elif s["clean"]:
                    s["hours"] += 1
                    if not math.isnan(prev):
                        s["slide"] += sign * (gain - prev)
                    if d >= departure and s["hours"] >= min_descent_h and s["slide"] >= slid_share * departure:
                        s.update(alarm=True, alarm_h=0)
                        in_alarm = True
                else:
                    s["clean"] = False
                s["prev"] = s["gain"] = gain
            s["last"] = hour
        if in_alarm:
            return
        b = hour % 24
        if count.get(b, 0) < grace or abs(mean / profile[b] - 1) < departure:
            s["apart"] = 0
            profile[b] = mean if count.get(b, 0) == 0 else profile[b] + alpha * (mean - profile[b])
            count[b] = count.get(b, 0) + 1
        else:
            s["apart"] += 1
            if s["apart"] >= max_apart_h:
                count.clear()
                s.update(apart=0, prev=math.nan, clean=False)

    for v, t in zip(values, times_ns, strict=True):
        if not finite(v):
            out.append(math.nan)
            continue
        out.append(max(1.0, sign * (s["gain"] - 1) / departure) if s["alarm"] else 0.0)
        hour = int(t) // hour_ns
        if hour != cur:
            if cur is not None and hour < cur:
                continue
            if cur is not None and n >= min_per_hour:
                close(cur, total / n)
            cur, total, n = hour, 0.0, 0
        total += v
        n += 1
    return out
