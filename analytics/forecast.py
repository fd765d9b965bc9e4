# ruff: noqa: PLR0917  # Numba kernels take their arrays and scalars positionally; the detector names them.
"""The model-based detector's kernel: a seasonal autoregressive forecast with a dynamic residual threshold.

Model. Each reading is forecast from its recent past and its daily cycle: the change from the previous reading
is predicted from the last ``order`` changes and the change at the same time one ``period`` earlier (a seasonal
ARIMA(order, 1, 0) × (1, 0, 0) without a constant). The coefficients are fitted by recursive least squares with
a forgetting factor ``forget`` (an effective memory of 1 / (1 - forget) readings), so the model is refitted at
every normal reading and follows a series that drifts; no batch training window is needed and streaming
equals batch by construction.

Threshold. The residual scale is an exponentially weighted root mean square of the residuals of normal readings
(rate ``scale_alpha``), never below ``min_scale`` (the instrument's resolution): the threshold moves with the
series' own noise. The score is |residual| / (``threshold`` × scale): 1 is the alarm level.

Episodes. A reading that alarms opens an episode. While it lasts the model does not learn, its history holds
the forecast instead of the reading, and the forecast follows the daily cycle (the changes one period earlier)
from the last normal level, so every reading that stays away from the water's expected path is marked (score
at least 1), not only the first. The episode closes when a reading
comes back within ``release`` × the alarm distance; after ``max_episode`` readings the new level is accepted
(the history restarts from it). Missing readings are imputed by the forecast for up to ``max_gap`` readings;
a longer gap restarts the history. With ``step_ns`` > 0 a gap in the timestamps counts as that many missing
readings, so the seasonal lag stays aligned with the clock.

State (all arrays, so it checkpoints as lists and pickles): ``hist`` ring buffer of the cleaned history,
``ist`` = [pos, filled, learned, episode, gap_run, last_t, has_last], ``fst`` = [scale², n_scale], ``theta``
the coefficients, ``cov`` the RLS inverse-covariance matrix (flattened).
"""

from __future__ import annotations

import numpy as np

from analytics._numba import kernel

SCORE_AND_LEARN = 0
SCORE_ONLY = 1
LEARN_ONLY = 2
TINY = 1e-12
COV_INIT = 1.0
COV_MAX = 1e4  # bound on the RLS covariance trace per coefficient: no wind-up on a series that stays flat


@kernel
def _back(hist: np.ndarray, pos: int, j: int) -> float:
    """The value ``j`` readings back (j >= 1) in the ring buffer whose next write position is ``pos``."""
    size = hist.shape[0]
    return float(hist[(pos - j) % size])


@kernel
def _regressors(hist: np.ndarray, pos: int, filled: int, order: int, lag: int, phi: np.ndarray) -> bool:
    """Fill ``phi``; True when every regressor is available (else the missing ones are 0)."""
    complete = True
    for i in range(order):
        if filled >= i + 2:
            phi[i] = _back(hist, pos, i + 1) - _back(hist, pos, i + 2)
        else:
            phi[i] = 0.0
            complete = False
    if lag > 0:
        if filled >= lag + 1:
            phi[order] = _back(hist, pos, lag) - _back(hist, pos, lag + 1)
        else:
            phi[order] = 0.0
            complete = False
    return complete


@kernel
def _push(hist: np.ndarray, ist: np.ndarray, x: float) -> None:
    hist[ist[0]] = x
    ist[0] = (ist[0] + 1) % hist.shape[0]
    ist[1] = min(ist[1] + 1, hist.shape[0])


@kernel
def _rls_update(theta: np.ndarray, cov: np.ndarray, phi: np.ndarray, y: float, forget: float) -> None:
    d = theta.shape[0]
    pphi = np.zeros(d)
    for a in range(d):
        acc = 0.0
        for b in range(d):
            acc += cov[a * d + b] * phi[b]
        pphi[a] = acc
    denom = forget
    err = y
    for a in range(d):
        denom += phi[a] * pphi[a]
        err -= theta[a] * phi[a]
    if denom <= TINY:
        return
    trace = 0.0
    for a in range(d):
        theta[a] += pphi[a] / denom * err
        for b in range(d):
            cov[a * d + b] = (cov[a * d + b] - pphi[a] * pphi[b] / denom) / forget
        trace += cov[a * d + a]
    if trace > COV_MAX * d:
        shrink = COV_MAX * d / trace
        for a in range(d * d):
            cov[a] *= shrink


@kernel
def _step(
    x: float,
    t: int,
    step_ns: int,
    order: int,
    lag: int,
    forget: float,
    scale_alpha: float,
    threshold: float,
    release: float,
    max_episode: int,
    max_gap: int,
    grace: int,
    min_scale: float,
    hist: np.ndarray,
    ist: np.ndarray,
    fst: np.ndarray,
    theta: np.ndarray,
    cov: np.ndarray,
    phi: np.ndarray,
) -> float:
    """Score one reading and update the state with it (the caller works on copies to score only)."""
    d = theta.shape[0]
    finite = np.isfinite(x)
    if step_ns > 0 and finite:
        if ist[6] == 1:
            skipped = round((t - ist[5]) / step_ns) - 1
            if skipped > max_gap:
                ist[1] = 0
                ist[3] = 0
            else:
                for _ in range(max(skipped, 0)):
                    if ist[1] >= 1:
                        _regressors(hist, ist[0], ist[1], order, lag, phi)
                        guess = _back(hist, ist[0], 1)
                        for a in range(d):
                            guess += theta[a] * phi[a]
                        _push(hist, ist, guess)
        ist[5] = t
        ist[6] = 1
    if not finite:
        if ist[1] >= 1 and ist[4] < max_gap:
            _regressors(hist, ist[0], ist[1], order, lag, phi)
            guess = _back(hist, ist[0], 1)
            for a in range(d):
                guess += theta[a] * phi[a]
            _push(hist, ist, guess)
            ist[4] += 1
        else:
            ist[1] = 0
            ist[3] = 0
        if step_ns > 0:
            ist[5] = t
            ist[6] = 1
        return np.nan
    ist[4] = 0
    if ist[1] == 0:
        _push(hist, ist, x)
        return 0.0
    complete = _regressors(hist, ist[0], ist[1], order, lag, phi)
    last = _back(hist, ist[0], 1)
    change = 0.0
    if ist[3] > 0:
        # inside an episode the forecast runs on its own output: short-term AR terms would extrapolate the
        # slope at the episode's start, so the path follows yesterday's changes from the last normal level
        if lag > 0 and ist[1] >= lag + 1:
            change = phi[order]
    else:
        for a in range(d):
            change += theta[a] * phi[a]
    resid = x - (last + change)
    scale = max(float(np.sqrt(fst[0])), min_scale, TINY)
    score = float(abs(resid) / (threshold * scale))
    if ist[2] < grace:
        score = 0.0
    elif ist[3] > 0:
        if score >= release:
            if ist[3] >= max_episode:
                ist[3] = 0
                ist[1] = 0
                _push(hist, ist, x)
            else:
                ist[3] += 1
                _push(hist, ist, last + change)
            return max(score, 1.0)
        ist[3] = 0
    elif score >= 1.0:
        ist[3] = 1
        _push(hist, ist, last + change)
        return score
    # a normal reading: refit and rescale on it
    if complete:
        _rls_update(theta, cov, phi, x - last, forget)
    rate = max(scale_alpha, 1.0 / (fst[1] + 1.0))
    fst[0] += rate * (resid * resid - fst[0])
    fst[1] += 1.0
    ist[2] += 1
    _push(hist, ist, x)
    return score


@kernel
def forecast_run(
    step_ns: int,
    order: int,
    lag: int,
    forget: float,
    scale_alpha: float,
    threshold: float,
    release: float,
    max_episode: int,
    max_gap: int,
    grace: int,
    min_scale: float,
    hist: np.ndarray,
    ist: np.ndarray,
    fst: np.ndarray,
    theta: np.ndarray,
    cov: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    out: np.ndarray,
    mode: int,
) -> None:
    """Run the detector over ``values`` (see the module docstring); ``out`` gets scores in alarm units."""
    phi = np.zeros(theta.shape[0])
    for i in range(values.shape[0]):
        if mode == SCORE_ONLY:
            s = _step(
                values[i],
                times[i],
                step_ns,
                order,
                lag,
                forget,
                scale_alpha,
                threshold,
                release,
                max_episode,
                max_gap,
                grace,
                min_scale,
                hist.copy(),
                ist.copy(),
                fst.copy(),
                theta.copy(),
                cov.copy(),
                phi,
            )
        else:
            s = _step(
                values[i],
                times[i],
                step_ns,
                order,
                lag,
                forget,
                scale_alpha,
                threshold,
                release,
                max_episode,
                max_gap,
                grace,
                min_scale,
                hist,
                ist,
                fst,
                theta,
                cov,
                phi,
            )
        if mode != LEARN_ONLY:
            out[i] = s


def initial_state(order: int, lag: int) -> dict[str, np.ndarray]:
    """Fresh state arrays for ``order`` AR terms and a seasonal lag of ``lag`` readings (0: none)."""
    d = order + (1 if lag > 0 else 0)
    size = max(order + 2, lag + 2)
    cov = np.zeros(d * d)
    cov[:: d + 1] = COV_INIT
    return {
        "hist": np.zeros(size),
        "ist": np.zeros(7, dtype=np.int64),
        "fst": np.zeros(2),
        "theta": np.zeros(d),
        "cov": cov,
    }
