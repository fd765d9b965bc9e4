# ruff: noqa: PLR0917  # Numba kernels take their arrays and scalars positionally; the detector names them.
"""The fouling signature's kernel: a probe whose gain against its own clean daily profile slides away slowly.

Physics. Biofilm on a dissolved-oxygen membrane or optical window, or on a conductivity cell, grows over days
(an estuary can cover a probe within a week; a fouled conductivity cell gives an artificial drop:
../shared/reference): an optical DO probe and a conductivity cell read *low* — the film consumes oxygen and
blocks the cell, so the level and the daily swing shrink together (a gain below 1) — and an optical turbidity
window reads *high*. The error grows smoothly with the film and vanishes at once when the probe is cleaned.
Water does other things: a discharge or a storm moves a parameter within minutes to an hour, and day-to-day
weather moves the level in steps, not in a slide lasting many hours.

Signature. The readings of each clock hour are averaged; a clean **profile** holds, per hour of the day, an
exponentially weighted mean of those hourly means (memory ``alpha`` per day). The **gain** is the sum of the
last ``window`` hourly means over the sum of the profile at the same hours; the **departure** is ``1 - gain``
(reads low) or ``gain - 1`` (reads high). Hour by hour:

- an hour whose gain moves more than ``max_step`` × ``departure`` from the last quiet hour's is an
  **excursion** (an event, a weather step): it is skipped; if the new level holds longer than
  ``MAX_EXCURSION_H`` it becomes the reference for the next hours, but its jump is no part of a slide;
- a quiet hour within a third of ``departure`` is clean: the build-up restarts;
- a quiet hour further away adds to the **build-up**: its duration and its **slide**, the part of the
  departure that came hour by hour (the sum of the quiet hourly moves towards the fault).

A fouling episode opens when the departure reaches ``departure``, the build-up has lasted ``min_descent`` hours
since a clean hour (with a new profile, only from a clean hour again; across a gap in the data the hour after it
is compared with the hour before, so a jump in the gap is an excursion), and at least ``SLID_SHARE`` of
``departure`` was slid. A discharge, a storm or a day of different weather arrives as a jump and is excluded; a
film that grows while the weather changes or a discharge passes still accumulates its slide. The episode closes
when the departure falls back under ``release`` × ``departure`` (the cleaning step) or after ``max_episode``
hours (the new level is then accepted: the profile restarts). The profile learns every complete hour outside an
episode that lies within ``departure`` of it (an excursion is not the clean water) and is frozen during one, so
a fouled stretch never becomes the reference; a level that stays away from it for ``MAX_APART_H`` hours outside
an episode (the pilot's effect starting, a season) is learned afresh.

Scores. A reading scores 0 outside an episode and max(1, departure / ``departure``) inside one; the state is
that of the hours completed before the reading's own hour (an episode opens at most an hour after its
signature, and closes on the first reading an hour after the cleaning). Missing readings score NaN and are not
learned. Times are epoch nanoseconds; hours are UTC clock hours, the profile's 24 bins UTC hours of the day.
Scoring and learning are the same loop for one reading or many, so streaming equals batch and any chunking
equals one run.

State (arrays, so it checkpoints as lists and pickles): ``fst`` = [cur_hour, cur_sum, cur_n, gain, g_prev,
build-up hours, slide, episode, episode hours, last gain hour, hours apart, excursion hours, from clean],
``ring`` / ``ring_hour`` the last ``window`` hourly means and their hour numbers, ``profile`` / ``pcount`` the
clean profile and how many hours each bin learned.
"""

from __future__ import annotations

import numpy as np

from analytics._numba import kernel

SCORE_AND_LEARN = 0
SCORE_ONLY = 1
LEARN_ONLY = 2
NS_PER_HOUR = 3_600_000_000_000
HOURS_PER_DAY = 24

# fst indices
CUR_HOUR, CUR_SUM, CUR_N, GAIN, G_PREV, DESCENT_H, SLIDE, ALARM, ALARM_H, LAST_GAIN_HOUR, APART_H = range(11)
EXCURSION_H = 11
FROM_CLEAN = 12
FST_SIZE = 13
MAX_APART_H = 48  # hours a level stays away from the profile before it is learned afresh (a new normal)
SLID_SHARE = 2.0 / 3.0  # at least this share of the departure must have come hour by hour, not in jumps
MAX_EXCURSION_H = 12  # longer than any event of the pilots (6 h and its tail): a jump held longer is a new level


def initial_state(window_hours: int) -> dict[str, np.ndarray]:
    """Fresh state for a gain over ``window_hours`` hourly means."""
    fst = np.zeros(FST_SIZE)
    fst[CUR_HOUR] = -1.0
    fst[GAIN] = np.nan
    fst[G_PREV] = np.nan
    fst[LAST_GAIN_HOUR] = -1.0
    return {
        "fst": fst,
        "ring": np.full(window_hours, np.nan),
        "ring_hour": np.full(window_hours, -1, dtype=np.int64),
        "profile": np.zeros(HOURS_PER_DAY),
        "pcount": np.zeros(HOURS_PER_DAY, dtype=np.int64),
    }


@kernel
def _close_hour(
    sign: float,
    departure: float,
    min_descent_h: int,
    max_step: float,
    release: float,
    alpha: float,
    grace: int,
    max_episode_h: int,
    min_per_hour: int,
    fst: np.ndarray,
    ring: np.ndarray,
    ring_hour: np.ndarray,
    profile: np.ndarray,
    pcount: np.ndarray,
) -> None:
    """Fold the finished hour ``fst[CUR_HOUR]`` into the ring, the gain, the episode and the profile."""
    hour = int(fst[CUR_HOUR])
    if hour < 0 or fst[CUR_N] < min_per_hour:
        return
    mean = fst[CUR_SUM] / fst[CUR_N]
    w = ring.shape[0]
    ring[hour % w] = mean
    ring_hour[hour % w] = hour
    # the gain over the last w hours, on the hours whose profile bin has learned enough
    num = 0.0
    den = 0.0
    used = 0
    for k in range(w):
        h = hour - k
        if h < 0:
            break
        slot = h % w
        if ring_hour[slot] != h:
            continue
        b = h % HOURS_PER_DAY
        if pcount[b] < grace:
            continue
        num += ring[slot]
        den += profile[b]
        used += 1
    in_alarm = fst[ALARM] > 0.0
    if used * 2 >= w and den > 0.0 and num / den > 0.0:
        gain = num / den
        d = sign * (gain - 1.0)
        prev = fst[G_PREV]
        if in_alarm:
            fst[ALARM_H] += 1.0
            if d < release * departure or fst[ALARM_H] >= max_episode_h:
                if fst[ALARM_H] >= max_episode_h:
                    # a level held this long is the water's or the probe's new normal: learn it afresh
                    pcount[:] = 0
                fst[ALARM] = 0.0
                fst[ALARM_H] = 0.0
                fst[DESCENT_H] = 0.0
                fst[SLIDE] = 0.0
                in_alarm = False
            fst[G_PREV] = gain
            fst[GAIN] = gain
        elif np.isfinite(prev) and abs(gain - prev) > max_step * departure:
            # an hour that jumps away from the last quiet one: an event or a weather step, not a film. Skipped;
            # a new level that holds becomes the reference for the next hours, but its jump is no part of a slide
            fst[EXCURSION_H] += 1.0
            if fst[EXCURSION_H] > MAX_EXCURSION_H:
                fst[EXCURSION_H] = 0.0
                fst[G_PREV] = gain
                fst[GAIN] = gain
        else:
            fst[EXCURSION_H] = 0.0
            if d < departure / 3.0:
                fst[DESCENT_H] = 0.0
                fst[SLIDE] = 0.0
                fst[FROM_CLEAN] = 1.0
            elif fst[FROM_CLEAN] > 0.0:
                # the build-up: hours away from the clean level, and how much of the way was slid hour by hour
                fst[DESCENT_H] += 1.0
                if np.isfinite(prev):
                    fst[SLIDE] += sign * (gain - prev)
                if d >= departure and fst[DESCENT_H] >= min_descent_h and fst[SLIDE] >= SLID_SHARE * departure:
                    fst[ALARM] = 1.0
                    fst[ALARM_H] = 0.0
                    in_alarm = True
            fst[G_PREV] = gain
            fst[GAIN] = gain
        fst[LAST_GAIN_HOUR] = hour
    if in_alarm:
        return
    b = hour % HOURS_PER_DAY
    if pcount[b] < grace or abs(mean / profile[b] - 1.0) < departure:
        # an excursion (an event, another fault) is not the clean profile; a level held for MAX_APART_H
        # hours all the same is the water's new normal (the pilot's effect, a season): learn it afresh
        fst[APART_H] = 0.0
        if pcount[b] == 0:
            profile[b] = mean
        else:
            profile[b] += alpha * (mean - profile[b])
        pcount[b] += 1
    else:
        fst[APART_H] += 1.0
        if fst[APART_H] >= MAX_APART_H:
            pcount[:] = 0
            fst[APART_H] = 0.0
            fst[G_PREV] = np.nan
            fst[FROM_CLEAN] = 0.0


@kernel
def fouling_run(
    sign: float,
    departure: float,
    min_descent_h: int,
    max_step: float,
    release: float,
    alpha: float,
    grace: int,
    max_episode_h: int,
    min_per_hour: int,
    fst: np.ndarray,
    ring: np.ndarray,
    ring_hour: np.ndarray,
    profile: np.ndarray,
    pcount: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Score (the episode state of the hours completed so far) and/or learn each reading in order."""
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x):
            if mode != LEARN_ONLY:
                out[i] = np.nan
            continue
        if mode != LEARN_ONLY:
            if fst[ALARM] > 0.0:
                out[i] = max(1.0, sign * (fst[GAIN] - 1.0) / departure)
            else:
                out[i] = 0.0
        if mode != SCORE_ONLY:
            hour = times[i] // NS_PER_HOUR
            if hour != fst[CUR_HOUR]:
                if hour > fst[CUR_HOUR]:
                    _close_hour(
                        sign,
                        departure,
                        min_descent_h,
                        max_step,
                        release,
                        alpha,
                        grace,
                        max_episode_h,
                        min_per_hour,
                        fst,
                        ring,
                        ring_hour,
                        profile,
                        pcount,
                    )
                    fst[CUR_HOUR] = float(hour)
                    fst[CUR_SUM] = 0.0
                    fst[CUR_N] = 0.0
                else:
                    continue  # an hour already closed: the detector's hours only move forward
            fst[CUR_SUM] += x
            fst[CUR_N] += 1.0
