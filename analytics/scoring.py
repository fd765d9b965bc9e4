"""Three ways to score detected anomalies against technicians' labels, always reported side by side.

In: two boolean arrays of one series in time order, ``truth`` (labelled anomalous) and ``pred`` (detected).
Out: :class:`Counts` (true/false positives and false negatives) with precision, recall and F1.

- :func:`pointwise` — strict: each reading is its own case (TP = labelled and detected).
- :func:`eventwise` — each run of consecutive labelled readings is one event, found when any reading in it is
  detected; precision is the share of runs of detected readings that touch a labelled run.
- :func:`pyhydroqc` — the counting rule of PyHydroQC (Jones, Jones & Horsburgh 2022), so figures compare with
  its published ones: labelled and detected readings are each widened by ``wf`` readings either side into
  numbered events (the first and last ``wf`` readings of a series never belong to one); the readings where
  either is set form groups, a group ending where both are clear or where the labelled and the detected event
  number change at the same reading; a group holding both a labelled and a detected event counts all its
  readings as true positives, one with only detected events as false positives, one with only labelled
  events as false negatives — except ``wf`` readings at each edge of every group, which count as nothing.

Pooled figures add the counts of several series before dividing (:meth:`Counts.__add__`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analytics._numba import kernel

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _check(truth: Mask, pred: Mask) -> tuple[Mask, Mask]:
    t = np.ascontiguousarray(np.asarray(truth, dtype=bool))
    p = np.ascontiguousarray(np.asarray(pred, dtype=bool))
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"truth and pred must be 1-D and of equal length, got shapes {t.shape} and {p.shape}")
    return t, p


def runs(mask: Mask) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` index ranges of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], np.asarray(mask, dtype=np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def pointwise(truth: Mask, pred: Mask) -> Counts:
    """Strict point-wise counts."""
    t, p = _check(truth, pred)
    return Counts(int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()))


def eventwise(truth: Mask, pred: Mask) -> Counts:
    """Event-wise counts: TP = labelled runs found, FN = labelled runs missed, FP = detected runs touching none."""
    t, p = _check(truth, pred)
    found = sum(bool(p[a:b].any()) for a, b in runs(t))
    labelled = runs(t)
    false = sum(not t[a:b].any() for a, b in runs(p))
    return Counts(found, false, len(labelled) - found)


@kernel
def _widened_events(mask: np.ndarray, wf: int) -> np.ndarray:
    """Event numbers (0 = none) of ``mask`` widened by ``wf`` readings each side; edges excluded."""
    n = mask.shape[0]
    out = np.zeros(n, dtype=np.int64)
    count = 0
    # running count of True in the window [i - wf, i + wf]
    inside = 0
    for j in range(min(n, 2 * wf + 1)):
        inside += mask[j]
    for i in range(wf, n - wf):
        if i > wf:
            inside += mask[i + wf] - mask[i - wf - 1]
        if inside > 0:
            if out[i - 1] == 0:
                count += 1
            out[i] = count
    return out


@kernel
def _pyhydroqc_counts(lab: np.ndarray, det: np.ndarray, wf: int) -> tuple[int, int, int]:
    n = lab.shape[0]
    tp = fp = fn = 0
    start = 0
    any_l = False
    any_d = False
    in_group = False
    for i in range(n + 1):
        la = lab[i] if i < n else 0
        da = det[i] if i < n else 0
        new_group = False
        if i == n:
            new_group = True
        elif i > 0 and (lab[i - 1] != la or det[i - 1] != da):
            prev_clear = lab[i - 1] == 0 and det[i - 1] == 0
            now_clear = la == 0 and da == 0
            flip = lab[i - 1] != la and det[i - 1] != da
            new_group = prev_clear or now_clear or flip
        if new_group and in_group:
            inner = max(0, (i - start) - 2 * wf)
            if any_l and any_d:
                tp += inner
            elif any_d:
                fp += inner
            elif any_l:
                fn += inner
        if i == n:
            break
        if new_group or i == 0:
            start = i
            any_l = False
            any_d = False
            in_group = True
        any_l = any_l or la != 0
        any_d = any_d or da != 0
    return tp, fp, fn


def pyhydroqc(truth: Mask, pred: Mask, wf: int = 1) -> Counts:
    """PyHydroQC's counts (see the module docstring); ``wf`` is its widening factor."""
    if wf < 0 or int(wf) != wf:
        raise ValueError(f"wf must be a whole number >= 0, got {wf!r}")
    t, p = _check(truth, pred)
    lab = _widened_events(t.astype(np.int64), int(wf))
    det = _widened_events(p.astype(np.int64), int(wf))
    tp, fp, fn = _pyhydroqc_counts(lab, det, int(wf))
    return Counts(int(tp), int(fp), int(fn))


RULES = {"point": pointwise, "event": eventwise, "pyhydroqc": pyhydroqc}
"""Every scoring rule by the name the bench and ``tune`` use."""
