"""Learn a QC configuration from technicians' labels (``pilotwatch qc tune``).

In: one site's table (one column per parameter, a time column) and, per parameter, a boolean mask of the
readings a technician labelled anomalous. Out: a :class:`pilotwatch.qc_config.QCConfig` — per parameter the QARTOD
tests, thresholds and detector settings that maximise F1 on the labels — and a report of how well the choice
did on data it was not chosen on.

How. For each parameter a menu of *components* is built from the unlabelled (normal) readings of the period:
gross ranges just outside what normal water did, spike and rate-of-change thresholds at quantiles of normal
changes, flat-line windows, and detector settings (robust z, time-of-day baseline, drift and the seasonal AR
forecast at several thresholds). Each component is run once over the whole period; a reading is detected by a
configuration when any of its components flags it (QARTOD SUSPECT/FAIL, a detector alarm) or it is missing.
Components are then chosen greedily — the one that raises F1 most, at most one setting per test or detector,
until nothing raises it — under a scoring rule of :mod:`analytics.scoring` (``pyhydroqc`` by default).
Precision first: a component whose new detections over the folds are mostly unlabelled is never offered
(:data:`PRECISION_FLOOR`), a range fitted to the labelled period gives way in a tie to a test that carries to
the next season, and a lone such range is backed by one (:func:`greedy`).

Cross-validation in time, never on the future. The period is cut into ``folds`` consecutive blocks; the first
only warms up. Block k is scored with every component sized from the readings before it (ranges, quantiles)
and run causally up to its end (a reading's flag depends on its past and at most the next reading), so each
block is judged as the next stretch of a live deployment would be. Components are chosen to maximise the pooled
F1 over blocks 2..K. The reported cross-validated figure is nested forward-chaining: the choice made on blocks
2..k is scored on block k + 1, for every k, and the counts pooled. The configuration written is the choice made
on all blocks, sized from the whole period. A parameter without labels in the period gets only a fail span (the
period's range widened by twice its spread), so it raises as few alarms as possible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from analytics import scoring
from analytics.csvqc import derive_parameter, read_table
from analytics.pipeline import evaluate_parameter
from pilotwatch.qc_config import ParameterQC, QCConfig

Mask = npt.NDArray[np.bool_]
F8 = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

MIN_GAIN = 0.005
"""A component is added only when it raises F1 by at least this much: a test that barely helps on the labelled
period mostly adds false alarms on the next one."""


@dataclass(frozen=True)
class Component:
    """One setting of one test or detector: ``section`` (``qartod``/``detectors``), its ``name`` and params."""

    section: str
    name: str
    params: Mapping[str, Any]
    fragile: bool = False
    """Whether it claims the water stays near what the labelled period saw (see :func:`greedy`)."""

    @property
    def knob(self) -> str:
        return f"{self.section}.{self.name}"


@dataclass
class ParameterTuning:
    """The outcome for one parameter: the configuration, what was chosen, and the counts cross-validated in
    time (``cv``) and on the whole period (``fit``) under the tuning rule (PyHydroQC's for ``balanced``), and
    strict point-wise (``cv_point``, ``fit_point``)."""

    config: ParameterQC
    chosen: list[Component]
    cv: scoring.Counts
    fit: scoring.Counts
    labelled: int
    cv_point: scoring.Counts
    fit_point: scoring.Counts
    notes: list[str] = field(default_factory=list)


def _quantile(x: F8, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else 0.0


def candidates(  # noqa: PLR0917  # the fold loop passes the same six things every time
    values: F8, times: npt.NDArray[np.int64], truth: Mask, res: float, step: float, upto: int
) -> list[Component | None]:
    """The menu of components for one parameter, sized from its unlabelled readings before index ``upto``.

    The list has the same length and order for every ``upto`` (None where the data before it cannot size a
    component), so a component is the same recipe in every fold.
    """
    normal = np.where(truth[:upto], np.nan, values[:upto])
    ts = times[:upto]
    finite = normal[np.isfinite(normal)]
    enough = finite.size >= 10
    out: list[Component | None] = []
    lo, hi = (float(finite.min()), float(finite.max())) if enough else (0.0, 0.0)
    spread = max(hi - lo, res, 1e-9)
    for margin in (0.05, 0.1, 0.25, 0.5):
        s_lo, s_hi = lo - margin * spread, hi + margin * spread
        f_lo, f_hi = lo - (margin + 1.0) * spread, hi + (margin + 1.0) * spread
        # one-sided spans too: a season the period did not cover moves one bound, and many sensors fail one way
        # and the fail span alone: it catches only the impossible (sentinels, a probe out of water)
        for suspect in ([s_lo, s_hi], [f_lo, s_hi], [s_lo, f_hi], [f_lo, f_hi]):
            span = {"fail_span": [f_lo, f_hi], "suspect_span": suspect}
            narrow = suspect != [f_lo, f_hi]
            out.append(Component("qartod", "gross_range", span, fragile=narrow) if enough else None)
    dt = np.diff(ts) / 1e9
    diffs = np.abs(np.diff(normal))
    ok = np.isfinite(diffs) & (dt > 0)
    rates = diffs[ok] / dt[ok] if ok.any() else np.zeros(0)
    mid = np.abs(normal[1:-1] - (normal[:-2] + normal[2:]) / 2)
    for q in (0.99, 0.999, 0.9999):
        for mult in (1.0, 2.0, 4.0):
            thr = max(_quantile(rates, q) * mult, res / step)
            out.append(Component("qartod", "rate_of_change", {"threshold": thr}) if rates.size >= 10 else None)
            sp = max(_quantile(mid, q) * mult, res)
            spike = {"suspect_threshold": sp, "fail_threshold": 3 * sp}
            out.append(Component("qartod", "spike", spike) if enough else None)
    for hours in (6.0, 12.0, 24.0):
        # the fail window stays within a day: the live service re-reads one day of context (check_streamable)
        fail = min(2 * hours, 24.0) * 3600
        flat = {"suspect_threshold": hours * 3600, "fail_threshold": fail, "tolerance": res / 2}
        out.append(Component("qartod", "flat_line", flat))
    for thr in (6.0, 10.0, 16.0):
        out.append(Component("detectors", "robust_z", {"min_scale": res, "threshold": thr}))
    for thr in (8.0, 16.0):
        out.append(Component("detectors", "drift", {"step": step, "min_scale": res, "threshold": thr}))
    for thr in (3.0, 4.0, 5.0, 6.0, 8.0, 12.0):
        for release in (0.5, 0.9):
            for episode in (6 * 3600.0, 86_400.0):
                params = {"step": step, "min_scale": res, "threshold": thr, "release": release, "max_episode": episode}
                out.append(Component("detectors", "forecast", params))
    return out


def component_mask(comp: Component, values: F8, times: npt.NDArray[np.int64]) -> Mask:
    """What one component alone flags (SUSPECT/FAIL or alarm) over the series."""
    cfg = ParameterQC.model_validate({comp.section: {comp.name: dict(comp.params)}})
    r = evaluate_parameter(values, times, cfg)
    return np.asarray(r.anomaly, dtype=bool)


def blocks(n: int, folds: int) -> list[tuple[int, int]]:
    """``folds`` consecutive index ranges covering ``0..n``."""
    edges = np.linspace(0, n, folds + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


@dataclass
class Fold:
    """One cross-validation block: its labels, what is flagged anyway (missing readings), and per menu entry
    what that component flags in it (None where the readings before the block cannot size it)."""

    truth: Mask
    base: Mask
    masks: list[Mask | None]


def _score(rule: str, folds: list[Fold], chosen: list[int], extra: int = -1) -> scoring.Counts:
    score = scoring.RULES[rule]
    total = scoring.Counts()
    for f in folds:
        pred = f.base.copy()
        for i in [*chosen, extra] if extra >= 0 else chosen:
            m = f.masks[i]
            if m is not None:
                pred |= m
        total = total + score(f.truth, pred)
    return total


OBJECTIVES = ("pyhydroqc", "point", "event", "balanced")
"""What ``tune`` maximises: a scoring rule's pooled F1, or ``balanced``, the mean of the PyHydroQC-counted and the
strict point-wise F1 (a detection that overlaps a label only by its edge earns the first, not the second)."""


def _objective(rule: str, folds: list[Fold], chosen: list[int], extra: int = -1) -> float:
    if rule == "balanced":
        return (_score("pyhydroqc", folds, chosen, extra).f1 + _score("point", folds, chosen, extra).f1) / 2
    return _score(rule, folds, chosen, extra).f1


TIE = 1e-9
"""Objective values this close are a tie: the folds cannot tell the settings apart (PyHydroQC's rule credits a
whole labelled stretch for one detection in it, so many settings score exactly alike)."""


FRAGILE_COST = 0.2
"""Strict point-wise F1 a fragile component must gain over a robust one to win a tie (see :func:`greedy`)."""


PRECISION_FLOOR = 0.2
"""Precision first: a component is offered only when at least this share of the readings it adds to the
choice so far are labelled, over the folds (counted strictly, reading by reading, with one labelled and one
unlabelled reading added as a prior so that a handful of readings decides nothing). PyHydroQC's rule alone
would take a detector whose alarms are nearly all unlabelled when a few of them touch long labelled
stretches."""


def _marginal_precision(folds: list[Fold], chosen: list[int], i: int) -> float:
    tp = n = 0
    for f in folds:
        m = f.masks[i]
        if m is None:
            continue
        pred = f.base.copy()
        for j in chosen:
            c = f.masks[j]
            if c is not None:
                pred |= c
        new = m & ~pred
        tp += int((new & f.truth).sum())
        n += int(new.sum())
    return (tp + 1) / (n + 2)


def greedy(folds: list[Fold], knobs: list[str], rule: str, weak: list[bool] | None = None) -> list[int]:
    """Indices of the components chosen greedily to maximise the objective over ``folds`` (one per knob).

    Ties (within :data:`TIE`) go to the earlier in the menu, except that a fragile component (``weak``) gives
    way to a robust one whose strict point-wise F1 over the folds is at most :data:`FRAGILE_COST` lower. A
    fragile component is a gross range whose suspect span lies within one spread of the period's normal
    readings: it claims the water stays where the labelled period saw it, and sized on part of a year that
    claim breaks with the next season (a stage range learnt in spring fires all through the autumn low flow),
    which the folds cannot see when the period holds no such season. Tests of local change judge a reading
    against its neighbours, detectors adapt, and a span wider than the normal spread catches only the
    impossible, so those carry over. PyHydroQC's rule credits a whole labelled stretch for one detection in
    it, so exact ties are common."""
    chosen: list[int] = []
    best = _objective(rule, folds, chosen)
    flags = weak if weak is not None else [False] * len(knobs)
    while True:
        used = {knobs[i] for i in chosen}
        scored: list[tuple[float, int]] = []
        for i in range(len(knobs)):
            if not knobs[i] or knobs[i] in used or all(f.masks[i] is None for f in folds):
                continue
            if _marginal_precision(folds, chosen, i) < PRECISION_FLOOR:
                continue
            scored.append((_objective(rule, folds, chosen, i), i))
        top = max((f1 for f1, _ in scored), default=best)
        if top <= best + MIN_GAIN:
            if chosen and all(flags[i] for i in chosen):
                # only fragile ranges so far: add the best robust component that costs at most MIN_GAIN on
                # the folds, so what the range will not carry to the next season is still watched for
                spare = [(f1, i) for f1, i in scored if not flags[i] and f1 >= best - MIN_GAIN]
                if spare:
                    chosen.append(max(spare, key=lambda s: (s[0], -s[1]))[1])
            return chosen
        ties = [i for f1, i in scored if f1 >= top - TIE]
        pick = ties[0]
        if flags[pick]:
            floor = _score("point", folds, chosen, pick).f1 - FRAGILE_COST
            robust = [i for i in ties if not flags[i] and _score("point", folds, chosen, i).f1 >= floor]
            pick = robust[0] if robust else pick
        chosen.append(pick)
        best = max(best, next(f1 for f1, i in scored if i == pick))


def tune_parameter(
    name: str, values: F8, times: npt.NDArray[np.int64], truth: Mask, *, folds: int = 5, rule: str = "pyhydroqc"
) -> ParameterTuning:
    """Choose one parameter's configuration on its labels (times sorted; see the module docstring)."""
    if rule not in OBJECTIVES:
        raise ValueError(f"rule must be one of {list(OBJECTIVES)}, got {rule!r}")
    shown = "pyhydroqc" if rule == "balanced" else rule
    if folds < 3:
        raise ValueError(f"folds must be at least 3 (one warm-up block and two to cross-validate), got {folds!r}")
    n = values.shape[0]
    base_cfg, _ = derive_parameter(name, values, times)
    derived = base_cfg["detectors"].get("forecast", {})
    res = float(derived.get("min_scale", 0.0))  # the instrument's resolution, as the data shows it
    step = float(derived.get("step", 900.0))  # the median sampling interval
    missing = ~np.isfinite(values)
    labelled = int(truth.sum())
    quiet: dict[str, Any] = {"qartod": {}, "detectors": {}}
    finite = values[np.isfinite(values)]
    if finite.size:
        # what the period saw, widened by twice its spread: only the impossible fails (no clamping at 0: water
        # temperature goes below it, and a period may not have seen the season that does)
        lo, hi = float(finite.min()), float(finite.max())
        spread = max(hi - lo, 1e-9)
        quiet["qartod"]["gross_range"] = {"fail_span": [lo - 2 * spread, hi + 2 * spread]}
    final = candidates(values, times, truth, res, step, n)
    if labelled == 0 or all(c is None for c in final):
        cfg = ParameterQC.model_validate(quiet)
        pred = missing | evaluate_parameter(values, times, cfg).anomaly
        counts = scoring.RULES[shown](truth, pred)
        point = scoring.pointwise(truth, pred)
        note = f"{name}: no labels in the period; only fail span"
        return ParameterTuning(cfg, [], counts, counts, labelled, point, point, [note])
    # a component the whole period cannot size is never offered (its knob is empty)
    knobs = [c.knob if c is not None else "" for c in final]
    weak = [c is not None and c.fragile for c in final]
    cache: dict[str, Mask] = {}

    def whole(c: Component) -> Mask:
        key = repr(c)
        if key not in cache:
            cache[key] = component_mask(c, values, times)
        return cache[key]

    fold_data: list[Fold] = []
    for a, b in blocks(n, folds)[1:]:
        comps = candidates(values, times, truth, res, step, a)
        masks: list[Mask | None] = []
        for c, f in zip(comps, final, strict=True):
            if c is None:
                masks.append(None)
            elif c.section == "detectors" and c == f:
                masks.append(whole(c)[a:b])  # causal and sized from nothing in the data: one run serves all folds
            else:
                masks.append(component_mask(c, values[:b], times[:b])[a:b])
        fold_data.append(Fold(truth[a:b], missing[a:b], masks))
    cv = cv_point = scoring.Counts()
    for k in range(1, len(fold_data)):
        picked = greedy(fold_data[:k], knobs, rule, weak)
        cv = cv + _score(shown, fold_data[k : k + 1], picked)
        cv_point = cv_point + _score("point", fold_data[k : k + 1], picked)
    picked = greedy(fold_data, knobs, rule, weak)
    cfg_dict: dict[str, Any] = {"qartod": {}, "detectors": {}}
    chosen = [c for c in (final[i] for i in picked) if c is not None]
    for c in chosen:
        cfg_dict[c.section][c.name] = dict(c.params)
    if "gross_range" not in cfg_dict["qartod"] and "gross_range" in quiet["qartod"]:
        cfg_dict["qartod"]["gross_range"] = quiet["qartod"]["gross_range"]
    cfg = ParameterQC.model_validate(cfg_dict)
    fit = _score(shown, fold_data, picked)
    fit_point = _score("point", fold_data, picked)
    note = f"{name}: chose {', '.join(c.name for c in chosen) or 'nothing beyond the fail span'}"
    return ParameterTuning(cfg, chosen, cv, fit, labelled, cv_point, fit_point, [note])


def label_mask(column: Any) -> Mask:
    """A labels column as a mask: labelled when non-empty and not 0 / false."""
    arr = np.asarray(column, dtype=object)
    out = np.zeros(arr.shape[0], dtype=bool)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        text = str(v).strip().lower()
        out[i] = text not in ("", "0", "0.0", "false", "nan", "null", "none")
    return out


def summary(results: Mapping[str, ParameterTuning], rule: str) -> list[str]:
    """One line per parameter: labels, what was chosen, cross-validated and in-period scores."""
    lines = []
    for p, r in results.items():
        chosen = ", ".join(c.name for c in r.chosen) or "fail span only"
        shown = "pyhydroqc" if rule == "balanced" else rule
        lines.append(
            f"{p}: {r.labelled} labelled; {chosen}; cross-validated in time: {shown} P {r.cv.precision:.2f} "
            f"R {r.cv.recall:.2f} F1 {r.cv.f1:.2f}, point-wise P {r.cv_point.precision:.2f} "
            f"R {r.cv_point.recall:.2f} F1 {r.cv_point.f1:.2f}; on the whole period {shown} F1 {r.fit.f1:.2f}"
        )
    return lines


def tune_site(
    columns: Mapping[str, F8],
    times: npt.NDArray[np.int64],
    truth: Mapping[str, Mask],
    *,
    folds: int = 5,
    rule: str = "pyhydroqc",
    progress: Progress | None = None,
) -> tuple[QCConfig, dict[str, ParameterTuning]]:
    """Tune every parameter with labels; ``times`` sorted epoch ns."""
    results: dict[str, ParameterTuning] = {}
    names = [p for p in truth if p in columns]
    for i, p in enumerate(names):
        if progress is not None:
            progress(p, i, len(names))
        results[p] = tune_parameter(p, columns[p], times, truth[p], folds=folds, rule=rule)
    if progress is not None:
        progress("done", len(names), len(names))
    config = QCConfig(parameters={p: r.config for p, r in results.items()})
    return config, results


def tune_csv(
    path: Path, time_column: str, labels: str, *, folds: int = 5, rule: str = "pyhydroqc"
) -> tuple[QCConfig, list[str]]:
    """Tune on a labelled CSV: parameters are the columns whose label column ``labels.format(param=...)`` exists."""
    if "{param}" not in labels:
        raise ValueError(f"--labels must contain '{{param}}', e.g. '{{param}}_qual'; got {labels!r}")
    frame, times, notes = read_table(path, time_column)
    header = pd.read_csv(path, nrows=0).columns
    params = [p for p in frame.columns if labels.format(param=p) in header]
    if not params:
        raise ValueError(f"no column of {path} has a label column named by {labels!r}; columns are {list(header)}")
    label_cols = [labels.format(param=p) for p in params]
    raw = pd.read_csv(path, usecols=label_cols, dtype=str, keep_default_na=False)
    truth = {p: label_mask(raw[labels.format(param=p)].to_numpy()) for p in params}
    order = np.argsort(times, kind="stable")
    ts = np.ascontiguousarray(times[order])
    columns = {p: np.ascontiguousarray(frame[p].to_numpy(dtype=float)[order]) for p in params}
    config, results = tune_site(columns, ts, {p: t[order] for p, t in truth.items()}, folds=folds, rule=rule)
    return config, [*notes, *summary(results, rule)]
