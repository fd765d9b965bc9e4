"""Fault or event: a label for every reading of every parameter of one site.

In: per parameter, the per-test QARTOD flags, the aggregate flag and the anomaly mask; the sample times
(sorted); optionally a device-health mask. Out: per parameter an ``int8`` array of :class:`Label`.

Rules, in order:

1. a missing value is ``MISSING``;
2. an unhealthy device (``device_ok`` False), a gross-range FAIL (impossible value), a flat line, an attenuated
   signal, a fouling signature (:class:`analytics.detectors.FoulingDetector`), a neighbour FAIL, or a spike FAIL
   (one reading away from both neighbours and straight back: at 5-15 minute sampling no water does that) is a
   ``FAULT`` — these are what a sick sensor looks like;
3. a reading that is otherwise anomalous (detector alarm, or a QARTOD SUSPECT/FAIL from spike, rate of change,
   climatology, gross range) is an ``EVENT`` when it is part of a physically coherent pattern, else a ``FAULT``:

   - without ``signatures`` (a CSV file of unknown parameters): at least ``min_agree`` parameters of the site
     (itself included) are anomalous within ``agreement_window`` seconds of it;
   - with ``signatures`` (the site kind's known events, :data:`SIGNATURES`): some signature lists this
     parameter with the direction it departs in (the sign of the value minus its trailing
     ``baseline_window`` median), and at least that signature's ``min_params`` parameters depart in *its*
     directions within ``agreement_window``. A sewage discharge lowers oxygen and ORP while conductivity,
     turbidity and ammonia rise; a fouled conductivity probe reads low while nothing else moves, and a probe
     that drifts up alone matches nothing;
4. everything else is ``GOOD``.

Parameters that are themselves in a hard fault (rule 2) do not count towards another parameter's agreement.
Pollution alerts use only ``EVENT`` readings; device alerts use ``FAULT``.

Multivariate evidence by episode (``evidence="episode"``, direction-blind labelling only): an *episode* is a run
of a parameter's anomalous readings (gaps of up to ``agreement_window`` bridged); its *support*
(:func:`episode_support`) is the number of parameters, itself included, anomalous anywhere from
``agreement_window`` before its first reading to ``agreement_window`` after its last. Every reading of an
episode with support >= ``min_agree`` is an ``EVENT`` — also its first readings, before a second parameter
moved — and an episode alone is a ``FAULT``. The default, ``evidence="point"``, keeps the reading-by-reading
agreement above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt
import pandas as pd

from pilotwatch.schema import QartodFlag


class Label(IntEnum):
    GOOD = 0
    FAULT = 1
    EVENT = 2
    MISSING = 3


LABEL_NAMES = {Label.GOOD: "good", Label.FAULT: "fault", Label.EVENT: "event", Label.MISSING: "missing"}

HARD_FAULTS: dict[str, tuple[int, ...]] = {
    "gross_range": (QartodFlag.FAIL,),
    "flat_line": (QartodFlag.SUSPECT, QartodFlag.FAIL),
    "attenuated_signal": (QartodFlag.SUSPECT, QartodFlag.FAIL),
    "neighbor": (QartodFlag.FAIL,),
    "spike": (QartodFlag.FAIL,),
    "fouling": (QartodFlag.SUSPECT, QartodFlag.FAIL),
}
"""Per QARTOD test (and fault-verdict detector: ``fouling``), the flags that mean the sensor itself is at fault."""

BASELINE_WINDOW_S = 12 * 3600.0
"""Trailing window of the median a departure's direction is measured against: longer than any event of the
pilots (6 h and its tail), so the median is the water before the event."""


@dataclass(frozen=True, slots=True)
class Signature:
    """An environmental event: the direction each parameter it moves departs in (+1 up, -1 down)."""

    name: str
    directions: Mapping[str, int]
    min_params: int = 2


SIGNATURES: dict[str, tuple[Signature, ...]] = {
    "water": (
        Signature(
            "sewage_discharge",
            {"do": -1, "orp": -1, "ph": -1, "conductivity": 1, "turbidity": 1, "ammonia": 1, "cod": 1},
        ),
        Signature("rain", {"turbidity": 1, "conductivity": -1, "temperature": -1, "ph": -1, "water_level": 1}),
    ),
    "effluent": (
        Signature(
            "dye_bath",
            {"colour": 1, "uv254": 1, "cod": 1, "conductivity": 1, "ph": 1, "temperature": 1, "flow": 1},
        ),
    ),
    # A fire in a bin moves only its temperature; nothing else in a bin can agree.
    "bin": (Signature("fire", {"temperature": 1}, min_params=1),),
}
"""Known events per site kind (``pilotwatch.manifest.SiteKind`` values), by canonical parameter name."""


def departure_sign(
    values: npt.NDArray[np.float64], times: npt.NDArray[np.int64], window_s: float = BASELINE_WINDOW_S
) -> npt.NDArray[np.int8]:
    """+1 / -1 / 0: each value against the median of the values in the trailing ``window_s`` (times sorted)."""
    if values.shape[0] == 0:
        return np.zeros(0, dtype=np.int8)
    index = pd.DatetimeIndex(np.asarray(times, dtype=np.int64).view("datetime64[ns]"))
    median = pd.Series(values, index=index).rolling(pd.Timedelta(seconds=window_s), min_periods=1).median()
    base: npt.NDArray[np.float64] = median.to_numpy(dtype=np.float64)
    return np.sign(np.nan_to_num(values - base, nan=0.0)).astype(np.int8)


def near_in_time(mask: npt.NDArray[np.bool_], times: npt.NDArray[np.int64], window_ns: int) -> npt.NDArray[np.bool_]:
    """True where some ``mask`` point lies within ``window_ns`` either side (times sorted)."""
    counts = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    lo = np.searchsorted(times, times - window_ns, side="left")
    hi = np.searchsorted(times, times + window_ns, side="right")
    return np.asarray(counts[hi] - counts[lo] > 0)


def episodes(mask: npt.NDArray[np.bool_], times: npt.NDArray[np.int64], bridge_ns: int) -> list[tuple[int, int]]:
    """Half-open index ranges of the runs of ``mask``, joining runs less than ``bridge_ns`` apart (times sorted)."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(times[idx]) > bridge_ns)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    stops = np.concatenate((idx[breaks], [idx[-1]])) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def episode_support(
    anomalous: Mapping[str, npt.NDArray[np.bool_]], times: npt.NDArray[np.int64], window_s: float
) -> dict[str, npt.NDArray[np.int64]]:
    """Per parameter and reading: the support of the episode the reading belongs to (0 outside episodes).

    Support = the number of parameters (the episode's own included) with an anomalous reading from
    ``window_s`` before the episode's first reading to ``window_s`` after its last.
    """
    window_ns = round(window_s * 1e9)
    counts = {p: np.concatenate(([0], np.cumsum(m, dtype=np.int64))) for p, m in anomalous.items()}
    out: dict[str, npt.NDArray[np.int64]] = {}
    for p, m in anomalous.items():
        support = np.zeros(times.shape[0], dtype=np.int64)
        for a, b in episodes(m, times, window_ns):
            lo = int(np.searchsorted(times, times[a] - window_ns, side="left"))
            hi = int(np.searchsorted(times, times[b - 1] + window_ns, side="right"))
            support[a:b] = sum(int(c[hi] - c[lo] > 0) for c in counts.values())
        out[p] = support
    return out


def label_site(
    tests: Mapping[str, Mapping[str, npt.NDArray[np.uint8]]],
    aggregate: Mapping[str, npt.NDArray[np.uint8]],
    anomaly: Mapping[str, npt.NDArray[np.bool_]],
    times: npt.NDArray[np.int64],
    *,
    agreement_window: float = 3 * 3600.0,
    min_agree: int = 2,
    device_ok: npt.NDArray[np.bool_] | Mapping[str, npt.NDArray[np.bool_]] | None = None,
    values: Mapping[str, npt.NDArray[np.float64]] | None = None,
    kinds: Mapping[str, str] | None = None,
    signatures: Sequence[Signature] | None = None,
    baseline_window: float = BASELINE_WINDOW_S,
    evidence: str = "point",
) -> dict[str, npt.NDArray[np.int8]]:
    """Label every reading of every parameter of one site (see the module docstring for the rules).

    ``device_ok`` is one mask for the whole site, or one per parameter (a site with several devices).
    ``signatures`` (with ``values`` and ``kinds``: each parameter's canonical name, e.g. ``conductivity``)
    replace direction-blind agreement by the site's known events; a parameter without a kind agrees with every
    signature in either direction.
    """
    if evidence not in ("point", "episode"):
        raise ValueError(f"evidence must be 'point' or 'episode', got {evidence!r}")
    if min_agree < 1:
        raise ValueError(f"min_agree must be >= 1, got {min_agree!r}")
    if agreement_window < 0:
        raise ValueError(f"agreement_window must be >= 0 seconds, got {agreement_window!r}")
    n = times.shape[0]
    if n > 1 and not bool(np.all(times[1:] >= times[:-1])):
        raise ValueError("times must be sorted")
    ok_of: dict[str, npt.NDArray[np.bool_]] = {}
    if device_ok is not None:
        masks = device_ok if isinstance(device_ok, Mapping) else dict.fromkeys(aggregate, device_ok)
        for param, mask in masks.items():
            if mask.shape != (n,):
                raise ValueError(f"device_ok of {param!r} must have {n} entries, got shape {mask.shape}")
            ok_of[param] = mask
    window_ns = round(agreement_window * 1e9)
    hard: dict[str, npt.NDArray[np.bool_]] = {}
    soft: dict[str, npt.NDArray[np.bool_]] = {}
    for param, agg in aggregate.items():
        h = np.zeros(n, dtype=bool)
        for test, bad in HARD_FAULTS.items():
            if test in tests.get(param, {}):
                h |= np.isin(tests[param][test], bad)
        if param in ok_of:
            h |= ~ok_of[param]
        hard[param] = h
        suspicious = anomaly[param] | (agg == QartodFlag.SUSPECT) | (agg == QartodFlag.FAIL)
        soft[param] = suspicious & ~h & (agg != QartodFlag.MISSING)
    support: dict[str, npt.NDArray[np.int64]] = {}
    if signatures is None and evidence == "episode":
        support = episode_support(soft, times, agreement_window)
        near = {}
    elif signatures is None:
        near = {p: near_in_time(s, times, window_ns) for p, s in soft.items()}
    else:
        if values is None or kinds is None:
            raise ValueError("signatures need the values and the kind of every parameter")
        direction = {p: departure_sign(values[p], times, baseline_window) for p in aggregate}
        coherent = {p: np.zeros(n, dtype=bool) for p in aggregate}
        for sig in signatures:
            match = {}
            for p in aggregate:
                kind = kinds.get(p)
                if kind is None:
                    match[p] = soft[p]
                elif kind in sig.directions:
                    match[p] = soft[p] & (direction[p] == sig.directions[kind])
            count = np.zeros(n, dtype=np.int64)
            for m in match.values():
                count += near_in_time(m, times, window_ns)
            for p, m in match.items():
                coherent[p] |= m & (count >= sig.min_params)
    out: dict[str, npt.NDArray[np.int8]] = {}
    for param, agg in aggregate.items():
        if signatures is None and evidence == "episode":
            is_event = support[param] >= min_agree
        elif signatures is None:
            agree = np.ones(n, dtype=np.int64)
            for other, nm in near.items():
                if other != param:
                    agree += nm
            is_event = agree >= min_agree
        else:
            is_event = coherent[param]
        label = np.full(n, Label.GOOD, dtype=np.int8)
        label[soft[param] & ~is_event] = Label.FAULT
        label[soft[param] & is_event] = Label.EVENT
        label[hard[param]] = Label.FAULT
        label[agg == QartodFlag.MISSING] = Label.MISSING
        out[param] = label
    return out
