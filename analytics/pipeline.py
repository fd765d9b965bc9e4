"""Run everything configured for a site — QARTOD tests, detectors, labels — over many parameters at once.

In: a table of readings (one column per parameter, aligned on one time axis; NaN where a parameter has no
reading) and a :class:`pilotwatch.qc_config.QCConfig`. Out: a :class:`SiteResult` holding, per parameter, every
test's flags, the aggregate flag, the anomaly score (alarm units: >= 1 is anomalous) and flag, and the label.

Detectors learn only from readings that did not FAIL QARTOD, so a stuck or impossible value never becomes the
baseline. A detector whose verdict is ``fault`` (the fouling signature) adds its alarm as a flag column beside
the QARTOD tests (SUSPECT where it alarms), so it enters the aggregate flag and the labels treat it as a
sick-sensor signature. Rows are evaluated in time order and returned in the caller's order. The streaming service calls
:func:`evaluate_parameter` per series with carried detector state; the results equal a batch run over the
same data because both run the same kernels in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analytics import detectors as det
from analytics import qartod
from analytics.labels import LABEL_NAMES, SIGNATURES, Label, episode_support, label_site
from pilotwatch.qc_config import ParameterQC, QCConfig
from pilotwatch.schema import QartodFlag

U8 = npt.NDArray[np.uint8]
F8 = npt.NDArray[np.float64]


@dataclass
class ParameterResult:
    tests: dict[str, U8]
    flag: U8
    score: F8
    anomaly: npt.NDArray[np.bool_]
    label: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    support: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per reading: how many parameters of the site (this one included) confirm its anomalous episode
    (:func:`analytics.labels.episode_support`); 0 where the reading is not anomalous. One alone leans to a
    sensor fault; several, to an event in the water."""

    def label_names(self) -> list[str]:
        return [LABEL_NAMES[Label(v)] for v in self.label]


@dataclass
class SiteResult:
    times: npt.NDArray[np.int64]
    parameters: dict[str, ParameterResult]


def build_detectors(cfg: ParameterQC) -> dict[str, det.Detector]:
    """Fresh detectors for one parameter, from its configuration."""
    return {name: det.DETECTORS[name](**params.model_dump()) for name, params in cfg.detectors.configured().items()}


def run_qartod(
    values: F8, times: npt.NDArray[np.int64], cfg: ParameterQC, columns: Mapping[str, F8] | None = None
) -> dict[str, U8]:
    """Every configured QARTOD test of one parameter; ``columns`` supplies a neighbour's values."""
    out: dict[str, U8] = {}
    for name, params in cfg.qartod.configured().items():
        kwargs: dict[str, Any] = params.model_dump()
        if name == "neighbor":
            ref = kwargs.pop("reference")
            if columns is None or ref not in columns:
                raise ValueError(f"neighbor test refers to parameter {ref!r}, which is not in the data")
            kwargs["reference"] = columns[ref]
        out[name] = qartod.TESTS[name](values, times, **kwargs)
    return out


def fault_flags(score: F8, values: F8) -> U8:
    """A fault-verdict detector's alarm as a flag column: SUSPECT at or above the alarm, GOOD below, MISSING
    where there is no value (the reading's fault is named by the column, and labelled by
    :data:`analytics.labels.HARD_FAULTS`)."""
    out = np.where(score >= 1.0, QartodFlag.SUSPECT, QartodFlag.GOOD).astype(np.uint8)
    out[~np.isfinite(values)] = QartodFlag.MISSING
    return out


@dataclass(frozen=True)
class StreamWindow:
    """Which readings of a re-read window a live pass may score and learn from.

    ``fresh``: readings after the series' committed horizon (scored, from a copy of the committed detectors, so a
    late reading that arrives later is scored again in order). ``commit``: the fresh readings old enough (before
    the late window closes) that the committed detectors learn them for good.
    """

    fresh: npt.NDArray[np.bool_]
    commit: npt.NDArray[np.bool_]


def evaluate_parameter(
    values: F8,
    times: npt.NDArray[np.int64],
    cfg: ParameterQC,
    detectors: MutableMapping[str, det.Detector] | None = None,
    columns: Mapping[str, F8] | None = None,
    *,
    window: StreamWindow | None = None,
) -> ParameterResult:
    """QARTOD + detectors for one parameter (times sorted). ``detectors`` carry state and are updated.

    Batch (``window`` None): every reading is scored and learnt. Live: the same tests and the same detectors,
    scoring ``window.fresh`` and learning ``window.commit``; a reading outside ``fresh`` scores 0 (it was scored
    by the pass that made it old). Both paths are this one function, so streaming equals batch by construction.
    """
    times = times.view("datetime64[ns]") if times.dtype == np.int64 else times
    tests = run_qartod(values, times, cfg, columns)
    flag = qartod.aggregate(tests) if tests else np.where(np.isfinite(values), 2, 9).astype(np.uint8)
    detectors = build_detectors(cfg) if detectors is None else detectors
    learnable = np.where(flag == QartodFlag.FAIL, np.nan, values)
    score = np.zeros(values.shape[0])
    for name, committed in detectors.items():
        mine = np.zeros(values.shape[0])
        if window is None:
            mine = np.nan_to_num(committed.alarm_score(learnable, times), nan=0.0)
        else:
            trial = det.detector_from_state(committed.state_dict())
            s = trial.alarm_score(learnable[window.fresh], times[window.fresh])
            mine[window.fresh] = np.nan_to_num(s, nan=0.0)
            committed.score_many(learnable[window.commit], times[window.commit])
            detectors[name] = committed
        score = np.fmax(score, mine)
        if committed.verdict is det.Verdict.FAULT:
            tests[name] = fault_flags(mine, values)
    if any(d.verdict is det.Verdict.FAULT for d in detectors.values()):
        flag = qartod.aggregate(tests)
    score[~np.isfinite(values)] = np.nan
    anomaly = (np.nan_to_num(score) >= 1.0) | (flag == QartodFlag.SUSPECT) | (flag == QartodFlag.FAIL)
    return ParameterResult(tests=tests, flag=flag, score=score, anomaly=anomaly)


def evaluate_site(
    columns: Mapping[str, Any],
    times: Any,
    config: QCConfig,
    device_ok: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    kinds: Mapping[str, str] | None = None,
    site_kind: str | None = None,
) -> SiteResult:
    """Evaluate every configured parameter of one site and label the anomalies (rows in the caller's order).

    ``progress(name, done, total)`` is called before each parameter and once at the end. With ``site_kind``
    (``water``, ``effluent``, ``bin``) and ``kinds`` (column → canonical parameter name) anomalies are labelled
    event only when they match a known event of the site kind (:data:`analytics.labels.SIGNATURES`).
    """
    missing = [p for p in config.parameters if p not in columns]
    if missing:
        raise ValueError(f"configured parameter(s) {missing} not in the data; columns are {sorted(columns)}")
    first = next(iter(config.parameters), None)
    n = 0 if first is None else qartod.as_values(columns[first], first).shape[0]
    ts = qartod.as_times(times, n)
    order = np.argsort(ts, kind="stable")
    ts_sorted = np.ascontiguousarray(ts[order])
    needed = set(config.parameters) | {
        c.qartod.neighbor.reference for c in config.parameters.values() if c.qartod.neighbor is not None
    }
    cols = {p: np.ascontiguousarray(qartod.as_values(columns[p], p)[order]) for p in columns if p in needed}
    for p, c in cols.items():
        if c.shape[0] != n:
            raise ValueError(f"column {p!r} has {c.shape[0]} rows, expected {n}")
    ok = None if device_ok is None else np.asarray(device_ok, dtype=bool)[order]
    results: dict[str, ParameterResult] = {}
    total = len(config.parameters)
    for i, (p, cfg) in enumerate(config.parameters.items()):
        if progress is not None:
            progress(p, i, total)
        results[p] = evaluate_parameter(cols[p], ts_sorted, cfg, columns=cols)
    if progress is not None:
        progress("labels", total, total)
    labels = label_site(
        {p: r.tests for p, r in results.items()},
        {p: r.flag for p, r in results.items()},
        {p: r.anomaly for p, r in results.items()},
        ts_sorted,
        agreement_window=config.labels.agreement_window,
        min_agree=config.labels.min_agree,
        device_ok=ok,
        values={p: cols[p] for p in results},
        kinds=kinds,
        signatures=SIGNATURES.get(site_kind) if site_kind is not None else None,
        evidence=config.labels.evidence,
    )
    anomalous = {p: r.anomaly & (r.flag != QartodFlag.MISSING) for p, r in results.items()}
    support = episode_support(anomalous, ts_sorted, config.labels.agreement_window)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    unsorted: dict[str, ParameterResult] = {}
    for p, r in results.items():
        unsorted[p] = ParameterResult(
            tests={name: f[inverse] for name, f in r.tests.items()},
            flag=r.flag[inverse],
            score=r.score[inverse],
            anomaly=r.anomaly[inverse],
            label=labels[p][inverse],
            support=support[p][inverse],
        )
    return SiteResult(times=ts, parameters=unsorted)
