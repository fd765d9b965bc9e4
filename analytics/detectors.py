"""Streaming anomaly detectors for what QARTOD does not catch.

Contract (river-style): each detector is a small object with ``score_one(x, t=None) -> float`` (high =
anomalous, 1.0 = the detector's alarm level for :class:`RobustZScore`, :class:`EWMAZScore` and
:class:`SeasonalBaseline` once divided by their ``threshold``; CUSUM and drift scores are already in alarm units)
and ``learn_one(x, t=None) -> None``. Score first, then learn. Until ``grace_period`` values were learned the
score is 0. Missing values (NaN, ±inf) score NaN and are not learned.

``score_many(values, times=None)`` is the batch form: it scores then learns each value in turn and returns the
scores; it runs the same Numba kernel as the streaming verbs, so streaming and batch results are identical, and
any split of a series into chunks gives the same scores. State is explicit: ``state_dict()`` returns plain
lists and numbers (JSON-able), ``from_state(d)`` restores a detector that continues exactly where it stopped;
detectors also pickle.

``alarm_score(values, times)`` is ``score_many`` scaled so that 1.0 is the alarm level for every detector.

Each detector states its ``verdict``: an ``anomaly`` alarm says only that a reading is unusual (the labels then
decide, from the site's other parameters, whether it is the water or the sensor); a ``fault`` alarm is a
sick-sensor signature by itself (:class:`FoulingDetector`), so the pipeline records it as a per-reading flag
column beside the QARTOD tests and the reading is SUSPECT and labelled fault (:mod:`analytics.labels`).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from analytics import _kernels as k
from analytics import forecast as fc
from analytics import fouling as fl
from analytics.qartod import as_times, as_values

FloatArray = npt.NDArray[np.float64]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    v = float(value)
    if not (v >= 0 if allow_zero else v > 0) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def _count(name: str, value: int, minimum: int = 0) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _alpha(name: str, value: float) -> float:
    v = float(value)
    if not 0 < v <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


class Verdict(enum.StrEnum):
    """What a detector's alarm says about a reading."""

    ANOMALY = "anomaly"  # unusual; the labels decide between the water and the sensor
    FAULT = "fault"  # a sick-sensor signature by itself


class Direction(enum.StrEnum):
    """Which way a fouled probe's reading departs from the water's."""

    LOW = "low"  # the film consumes oxygen or blocks the cell: DO, conductivity read low
    HIGH = "high"  # the film scatters light: an optical turbidity window reads high


class Detector(ABC):
    """Base of every streaming detector: parameters, explicit state arrays, and the three verbs."""

    needs_times: ClassVar[bool] = False
    verdict: ClassVar[Verdict] = Verdict.ANOMALY
    scores_in_alarm_units: ClassVar[bool] = False
    name: ClassVar[str] = ""
    threshold: float = 1.0

    def __init__(self) -> None:
        self._state: dict[str, np.ndarray] = self._initial_state()

    # -- subclasses ---------------------------------------------------------------------------------------
    @abstractmethod
    def _initial_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None: ...

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor arguments, so ``type(d)(**d.params())`` builds a fresh twin."""

    # -- verbs --------------------------------------------------------------------------------------------
    def _times(self, times: Any, n: int) -> npt.NDArray[np.int64]:
        if times is None:
            if self.needs_times:
                raise ValueError(f"{type(self).__name__} needs times")
            return np.zeros(n, dtype=np.int64)
        return as_times(times, n)

    def _one(self, x: float, t: Any, mode: int) -> float:
        values = np.array([x], dtype=np.float64)
        times = self._times(None if t is None else [t] if not isinstance(t, np.ndarray) else t, 1)
        out = np.zeros(1)
        self._run(values, times, out, mode)
        return float(out[0])

    def score_one(self, x: float, t: Any = None) -> float:
        """Score ``x`` (at time ``t``) without learning it."""
        return self._one(x, t, k.SCORE_ONLY)

    def learn_one(self, x: float, t: Any = None) -> None:
        """Update the state with ``x`` (at time ``t``)."""
        self._one(x, t, k.LEARN_ONLY)

    def score_many(self, values: Any, times: Any = None) -> FloatArray:
        """Score then learn each value in order; identical to ``score_one`` + ``learn_one`` per value."""
        vals = as_values(values)
        ts = self._times(times, vals.shape[0])
        if not k.is_sorted(ts):
            raise ValueError("times must be sorted for a streaming detector")
        out = np.zeros(vals.shape[0])
        self._run(vals, ts, out, k.SCORE_AND_LEARN)
        return out

    def alarm_score(self, values: Any, times: Any = None) -> FloatArray:
        """``score_many`` in alarm units: >= 1 means anomalous."""
        scores = self.score_many(values, times)
        return scores if self.scores_in_alarm_units else scores / self.threshold

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": type(self).__name__,
            "params": self.params(),
            "state": {key: arr.tolist() for key, arr in self._state.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("detector") != cls.__name__:
            raise ValueError(f"state is for {state.get('detector')!r}, not {cls.__name__}")
        obj = cls(**state["params"])
        for key, arr in obj._state.items():
            arr[...] = np.asarray(state["state"][key], dtype=arr.dtype)
        return obj


class RobustZScore(Detector):
    """|x - rolling median| / (1.4826 · rolling MAD) over the last ``window`` values (outliers, noise bursts)."""

    name = "robust_z"

    def __init__(self, window: int = 96, grace_period: int = 32, threshold: float = 6.0, min_scale: float = 0.0):
        self.window = _count("window", window, 3)
        self.grace_period = _count("grace_period", grace_period)
        self.threshold = _positive("threshold", threshold)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "grace_period": self.grace_period,
            "threshold": self.threshold,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {"buf": np.zeros(self.window), "sorted": np.zeros(self.window), "counters": np.zeros(3, dtype=np.int64)}

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        s = self._state
        k._robust_z_run(
            self.window, self.grace_period, self.min_scale, s["buf"], s["sorted"], s["counters"], values, out, mode
        )


class EWMAZScore(Detector):
    """|x - EWMA mean| / EWMA standard deviation (fast changes against a smoothly adapting level)."""

    name = "ewma"

    def __init__(self, alpha: float = 0.05, grace_period: int = 32, threshold: float = 6.0, min_scale: float = 0.0):
        self.alpha = _alpha("alpha", alpha)
        self.grace_period = _count("grace_period", grace_period)
        self.threshold = _positive("threshold", threshold)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "grace_period": self.grace_period,
            "threshold": self.threshold,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {"stats": np.zeros(3)}

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        k._ewma_run(self.alpha, self.grace_period, self.min_scale, self._state["stats"], values, out, mode)


class CUSUM(Detector):
    """Two-sided CUSUM change detector on z-scores against a slow EWMA baseline (level shifts).

    ``k`` is the allowance (in standard deviations) and ``h`` the decision interval; the score is
    max(S+, S-) / h, so 1.0 is the alarm; sums reset after an alarm.
    """

    name = "cusum"
    scores_in_alarm_units = True

    def __init__(
        self, alpha: float = 0.01, k: float = 0.5, h: float = 10.0, grace_period: int = 96, min_scale: float = 0.0
    ) -> None:
        self.alpha = _alpha("alpha", alpha)
        self.k = _positive("k", k, allow_zero=True)
        self.h = _positive("h", h)
        self.grace_period = _count("grace_period", grace_period)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "k": self.k,
            "h": self.h,
            "grace_period": self.grace_period,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {"stats": np.zeros(5)}

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        k._cusum_run(
            self.alpha, self.k, self.h, self.grace_period, self.min_scale, self._state["stats"], values, out, mode
        )


class SeasonalBaseline(Detector):
    """Time-of-day baseline: per bin of the day (UTC), an EWMA mean and variance; z-score against the bin.

    Catches a value that is normal for the day but not for the hour (e.g. night-time oxygen at noon levels).
    ``grace_period`` counts values learned in the point's own bin.
    """

    name = "seasonal"
    needs_times = True

    def __init__(
        self, bins: int = 24, alpha: float = 0.1, grace_period: int = 28, threshold: float = 6.0, min_scale: float = 0.0
    ) -> None:
        self.bins = _count("bins", bins, 1)
        if k.NS_PER_DAY % self.bins:
            raise ValueError(f"bins must divide a day into whole nanoseconds, got {bins!r}")
        self.alpha = _alpha("alpha", alpha)
        self.grace_period = _count("grace_period", grace_period)
        self.threshold = _positive("threshold", threshold)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "alpha": self.alpha,
            "grace_period": self.grace_period,
            "threshold": self.threshold,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {
            "counts": np.zeros(self.bins, dtype=np.int64),
            "means": np.zeros(self.bins),
            "variances": np.zeros(self.bins),
        }

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        s = self._state
        k._seasonal_run(
            self.bins,
            self.alpha,
            self.grace_period,
            self.min_scale,
            s["counts"],
            s["means"],
            s["variances"],
            values,
            times,
            out,
            mode,
        )


class DriftDetector(Detector):
    """Drift and fouling: a level that slowly walks away from its long-run reference, or a daily cycle that
    collapses (a fouled oxygen or pH probe stops following the day).

    ``fast_period`` and ``slow_period`` (seconds) set the two level EWMAs with the series' ``step`` (seconds);
    ``threshold`` is the divergence, in long-run mean absolute deviations, that raises the alarm; ``collapse``
    the fractional loss of daily amplitude that does. Scores are in alarm units (1.0 = alarm).
    """

    name = "drift"
    needs_times = True
    scores_in_alarm_units = True

    def __init__(
        self,
        *,
        step: float = 900.0,
        fast_period: float = 86_400.0,
        slow_period: float = 14 * 86_400.0,
        threshold: float = 8.0,
        collapse: float = 0.75,
        grace_period: int = 3,
        min_scale: float = 0.0,
    ) -> None:
        self.step = _positive("step", step)
        self.fast_period = _positive("fast_period", fast_period)
        self.slow_period = _positive("slow_period", slow_period)
        if self.slow_period <= self.fast_period:
            raise ValueError(f"slow_period must exceed fast_period, got {slow_period!r} <= {fast_period!r}")
        self.threshold = _positive("threshold", threshold)
        self.collapse = _alpha("collapse", collapse)
        self.grace_period = _count("grace_period", grace_period)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "fast_period": self.fast_period,
            "slow_period": self.slow_period,
            "threshold": self.threshold,
            "collapse": self.collapse,
            "grace_period": self.grace_period,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {"stats": np.zeros(11)}

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        fast = min(1.0, self.step / self.fast_period)
        slow = min(1.0, self.step / self.slow_period)
        amp_fast = 0.5
        amp_slow = min(1.0, 86_400.0 / self.slow_period)
        k._drift_run(
            fast,
            slow,
            amp_fast,
            amp_slow,
            self.collapse,
            self.threshold,
            self.grace_period,
            self.min_scale,
            min(1.0, self.step / 3600.0),
            self._state["stats"],
            values,
            times,
            out,
            mode,
        )


class SeasonalARDetector(Detector):
    """Model-based: forecast each reading from its recent past and its daily cycle; alarm on residuals beyond a
    dynamic threshold and mark the whole episode (:mod:`analytics.forecast` has the model).

    ``step`` is the nominal sampling interval and ``period`` the seasonal cycle (seconds; 0: no seasonal term);
    ``order`` AR terms on the changes; ``memory`` the effective number of readings the fit remembers;
    ``scale_memory`` the same for the residual scale; ``threshold`` the alarm in residual scales; ``release``
    the fraction of the alarm distance under which an episode closes; ``max_episode`` (seconds) how long before
    a new level is accepted; ``max_gap`` (seconds) how long missing readings are imputed. Scores are in alarm
    units (1.0 = alarm).
    """

    name = "forecast"
    needs_times = True
    scores_in_alarm_units = True

    def __init__(
        self,
        *,
        step: float = 900.0,
        period: float = 86_400.0,
        order: int = 3,
        memory: float = 2_000.0,
        scale_memory: float = 500.0,
        threshold: float = 6.0,
        release: float = 0.5,
        max_episode: float = 2 * 86_400.0,
        max_gap: float = 3_600.0,
        grace_period: int = 192,
        min_scale: float = 0.0,
    ) -> None:
        self.step = _positive("step", step)
        self.period = _positive("period", period, allow_zero=True)
        self.order = _count("order", order, 1)
        self.memory = _positive("memory", memory)
        if self.memory < 1:
            raise ValueError(f"memory must be at least 1 reading, got {memory!r}")
        self.scale_memory = _positive("scale_memory", scale_memory)
        if self.scale_memory < 1:
            raise ValueError(f"scale_memory must be at least 1 reading, got {scale_memory!r}")
        self.threshold = _positive("threshold", threshold)
        self.release = _positive("release", release)
        if self.release > 1:
            raise ValueError(f"release must be in (0, 1], got {release!r}")
        self.max_episode = _positive("max_episode", max_episode)
        self.max_gap = _positive("max_gap", max_gap, allow_zero=True)
        self.grace_period = _count("grace_period", grace_period)
        self.min_scale = _positive("min_scale", min_scale, allow_zero=True)
        super().__init__()

    @property
    def _lag(self) -> int:
        return round(self.period / self.step) if self.period else 0

    def params(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "period": self.period,
            "order": self.order,
            "memory": self.memory,
            "scale_memory": self.scale_memory,
            "threshold": self.threshold,
            "release": self.release,
            "max_episode": self.max_episode,
            "max_gap": self.max_gap,
            "grace_period": self.grace_period,
            "min_scale": self.min_scale,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return fc.initial_state(self.order, self._lag)

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        s = self._state
        fc.forecast_run(
            round(self.step * 1e9),
            self.order,
            self._lag,
            1.0 - 1.0 / self.memory,
            1.0 / self.scale_memory,
            self.threshold,
            self.release,
            max(1, round(self.max_episode / self.step)),
            round(self.max_gap / self.step),
            self.grace_period,
            self.min_scale,
            s["hist"],
            s["ist"],
            s["fst"],
            s["theta"],
            s["cov"],
            values,
            times,
            out,
            mode,
        )


class FoulingDetector(Detector):
    """Fouling: the probe's gain against its own clean daily profile slides away over hours to days, without a
    jump, and comes back at the cleaning (:mod:`analytics.fouling` has the physics and the signature).

    ``direction`` is where a fouled probe departs (``low``: DO, conductivity; ``high``: optical turbidity);
    ``departure`` the share of the clean level that opens an episode; ``window`` (seconds, whole hours) the span
    the gain is taken over; ``min_descent`` (seconds) how long the departure must have built up; ``max_step``
    the largest hourly move, as a share of ``departure``, that is part of a slide (a larger one is an excursion:
    an event or a weather step); ``release`` the share of ``departure`` under which the episode closes;
    ``memory_days`` the profile's memory; ``grace_period`` the days each hour of the profile must have learned;
    ``max_episode`` (seconds) after which a held level is accepted. Its verdict is ``fault``: scores in alarm
    units (1.0 = fouled).
    """

    name = "fouling"
    needs_times = True
    scores_in_alarm_units = True
    verdict = Verdict.FAULT

    def __init__(
        self,
        *,
        step: float = 900.0,
        direction: Direction | str = Direction.LOW,
        departure: float = 0.1,
        window: float = 3_600.0,
        min_descent: float = 6 * 3_600.0,
        max_step: float = 0.5,
        release: float = 0.5,
        memory_days: float = 7.0,
        grace_period: int = 2,
        max_episode: float = 21 * 86_400.0,
    ) -> None:
        self.step = _positive("step", step)
        try:
            self.direction = Direction(direction)
        except ValueError:
            raise ValueError(f"direction must be one of {[d.value for d in Direction]}, got {direction!r}") from None
        self.departure = _alpha("departure", departure)
        self.window = _positive("window", window)
        if self.window % 3_600.0:
            raise ValueError(f"window must be a whole number of hours in seconds, got {window!r}")
        self.min_descent = _positive("min_descent", min_descent, allow_zero=True)
        self.max_step = _positive("max_step", max_step)
        self.release = _alpha("release", release)
        self.memory_days = _positive("memory_days", memory_days)
        if self.memory_days < 1:
            raise ValueError(f"memory_days must be at least 1, got {memory_days!r}")
        self.grace_period = _count("grace_period", grace_period, 1)
        self.max_episode = _positive("max_episode", max_episode)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "direction": self.direction.value,
            "departure": self.departure,
            "window": self.window,
            "min_descent": self.min_descent,
            "max_step": self.max_step,
            "release": self.release,
            "memory_days": self.memory_days,
            "grace_period": self.grace_period,
            "max_episode": self.max_episode,
        }

    def _initial_state(self) -> dict[str, np.ndarray]:
        return fl.initial_state(round(self.window / 3_600.0))

    def _run(self, values: FloatArray, times: npt.NDArray[np.int64], out: FloatArray, mode: int) -> None:
        s = self._state
        fl.fouling_run(
            -1.0 if self.direction is Direction.LOW else 1.0,
            self.departure,
            round(self.min_descent / 3_600.0),
            self.max_step,
            self.release,
            1.0 / self.memory_days,
            self.grace_period,
            max(1, round(self.max_episode / 3_600.0)),
            max(1, int(0.5 * 3_600.0 / self.step)),
            s["fst"],
            s["ring"],
            s["ring_hour"],
            s["profile"],
            s["pcount"],
            values,
            times,
            out,
            mode,
        )


DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (RobustZScore, EWMAZScore, CUSUM, SeasonalBaseline, DriftDetector, SeasonalARDetector, FoulingDetector)
}
"""Every detector by its configuration name (the key in ``qc.detectors`` of the manifest)."""


def detector_from_state(state: dict[str, Any]) -> Detector:
    """Restore any detector from its ``state_dict()``."""
    for cls in DETECTORS.values():
        if cls.__name__ == state.get("detector"):
            return cls.from_state(state)
    raise ValueError(
        f"unknown detector {state.get('detector')!r}; expected one of {[c.__name__ for c in DETECTORS.values()]}"
    )
