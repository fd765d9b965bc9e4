"""Fault or event: a label for every reading of every parameter of one site.

In: per parameter, the per-test QARTOD flags, the aggregate flag and the anomaly mask; the sample times
(sorted); optionally a device-health mask. Out: per parameter an ``int8`` array of :class:`Label`.

Rules, in order:

1. a missing value is ``MISSING``;
2. an unhealthy device (``device_ok`` False), a gross-range FAIL (impossible value), a flat line, an attenuated
   signal, or a neighbour FAIL is a ``FAULT`` — these are what a sick sensor looks like;
3. a reading that is otherwise anomalous (detector alarm, or a QARTOD SUSPECT/FAIL from spike, rate of change,
   climatology) is an ``EVENT`` when at least ``min_agree`` parameters of the site (itself included) are
   anomalous within ``agreement_window`` seconds of it — a dye discharge moves colour, conductivity and pH
   together; a real pollution event shows in several probes — and a ``FAULT`` when it is alone: a fouled or
   drifting probe drifts alone;
4. everything else is ``GOOD``.

Parameters that are themselves in a hard fault (rule 2) do not count towards another parameter's agreement.
Pollution alerts use only ``EVENT`` readings; device alerts use ``FAULT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from analytics.qartod import QartodFlags


class Label(IntEnum):
    GOOD = 0
    FAULT = 1
    EVENT = 2
    MISSING = 3


LABEL_NAMES = {Label.GOOD: "good", Label.FAULT: "fault", Label.EVENT: "event", Label.MISSING: "missing"}

HARD_FAULTS: dict[str, tuple[int, ...]] = {
    "gross_range": (QartodFlags.FAIL,),
    "flat_line": (QartodFlags.SUSPECT, QartodFlags.FAIL),
    "attenuated_signal": (QartodFlags.SUSPECT, QartodFlags.FAIL),
    "neighbor": (QartodFlags.FAIL,),
}
"""Per QARTOD test, the flags that mean the sensor itself is at fault."""


def near_in_time(mask: npt.NDArray[np.bool_], times: npt.NDArray[np.int64], window_ns: int) -> npt.NDArray[np.bool_]:
    """True where some ``mask`` point lies within ``window_ns`` either side (times sorted)."""
    counts = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    lo = np.searchsorted(times, times - window_ns, side="left")
    hi = np.searchsorted(times, times + window_ns, side="right")
    return np.asarray(counts[hi] - counts[lo] > 0)


def label_site(
    tests: Mapping[str, Mapping[str, npt.NDArray[np.uint8]]],
    aggregate: Mapping[str, npt.NDArray[np.uint8]],
    anomaly: Mapping[str, npt.NDArray[np.bool_]],
    times: npt.NDArray[np.int64],
    *,
    agreement_window: float = 3 * 3600.0,
    min_agree: int = 2,
    device_ok: npt.NDArray[np.bool_] | Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> dict[str, npt.NDArray[np.int8]]:
    """Label every reading of every parameter of one site (see the module docstring for the rules).

    ``device_ok`` is one mask for the whole site, or one per parameter (a site with several devices).
    """
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
        suspicious = anomaly[param] | (agg == QartodFlags.SUSPECT) | (agg == QartodFlags.FAIL)
        soft[param] = suspicious & ~h & (agg != QartodFlags.MISSING)
    near = {p: near_in_time(s, times, window_ns) for p, s in soft.items()}
    out: dict[str, npt.NDArray[np.int8]] = {}
    for param, agg in aggregate.items():
        agree = np.ones(n, dtype=np.int64)
        for other, nm in near.items():
            if other != param:
                agree += nm
        label = np.full(n, Label.GOOD, dtype=np.int8)
        label[soft[param] & (agree < min_agree)] = Label.FAULT
        label[soft[param] & (agree >= min_agree)] = Label.EVENT
        label[hard[param]] = Label.FAULT
        label[agg == QartodFlags.MISSING] = Label.MISSING
        out[param] = label
    return out
