"""Fault-vs-event scoring on a seeded synthetic fleet: minimum precision and recall per fault kind, and the
share of anomalies labelled correctly as sensor fault or environmental event."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.labels import Label
from analytics.pipeline import evaluate_site
from pilotwatch.qc_config import QCConfig
from tests.analytics.synthetic import FAULT_KINDS, PARAMS, PER_DAY, make_site

SEEDS = (101, 102, 103, 104)

CONFIG = QCConfig.model_validate(
    {
        "parameters": {
            p: {
                "qartod": {
                    "gross_range": gross,
                    "spike": spike,
                    "rate_of_change": {"threshold": roc},
                    "flat_line": {"suspect_threshold": 4 * 3600, "fail_threshold": 8 * 3600, "tolerance": 1e-9},
                },
                "detectors": {"robust_z": {}, "seasonal": {}, "drift": {"step": 900}},
            }
            for p, gross, spike, roc in [
                (
                    "do",
                    {"fail_span": [0, 20], "suspect_span": [1, 15]},
                    {"suspect_threshold": 1.5, "fail_threshold": 5},
                    0.003,
                ),
                (
                    "ph",
                    {"fail_span": [0, 14], "suspect_span": [6, 9.5]},
                    {"suspect_threshold": 0.15, "fail_threshold": 0.6},
                    3e-4,
                ),
                (
                    "cond",
                    {"fail_span": [0, 5000], "suspect_span": [50, 1500]},
                    {"suspect_threshold": 20, "fail_threshold": 80},
                    0.05,
                ),
                (
                    "turb",
                    {"fail_span": [0, 1000], "suspect_span": [0, 200]},
                    {"suspect_threshold": 4, "fail_threshold": 20},
                    0.01,
                ),
            ]
        }
    }
)

# Minimum figures per fault kind, measured with the seeds above (recall = share of injected faults with at least
# one reading labelled fault or missing; precision = share of fault/missing labels that fall on a fault, its
# neighbouring sample, or the day after it).
MINIMUM = {
    "spike": (1.0, 0.70),
    "drift": (0.75, 0.90),
    "fouling": (0.80, 0.90),
    "flat_line": (1.0, 0.90),
    "dropout": (1.0, 0.90),
    "noise_burst": (1.0, 0.90),
}


def _score(kind: str) -> tuple[float, float, int, int, int, int]:
    hits: list[bool] = []
    tp = fp = 0
    event_ok = event_all = fault_ok = fault_all = 0
    for seed in SEEDS:
        site = make_site(seed, kind)
        res = evaluate_site(site.values, site.times, CONFIG)
        for iv in site.intervals:
            for p in PARAMS if iv.param is None else [iv.param]:
                lab = res.parameters[p].label[iv.start : iv.stop]
                flagged = lab[np.isin(lab, [Label.FAULT, Label.EVENT])]
                if iv.kind == "event":
                    event_all += flagged.size
                    event_ok += int((flagged == Label.EVENT).sum())
                else:
                    hits.append(bool(np.isin(lab, [Label.FAULT, Label.MISSING]).any()))
                    fault_all += flagged.size
                    fault_ok += int((flagged == Label.FAULT).sum())
        for p in PARAMS:
            near = np.zeros(site.times.shape[0], dtype=bool)
            for iv in site.intervals:
                if iv.kind == kind and iv.param == p:
                    near[max(iv.start - 1, 0) : iv.stop + PER_DAY] = True
            detected = np.isin(res.parameters[p].label, [Label.FAULT, Label.MISSING])
            tp += int((detected & near).sum())
            fp += int((detected & ~near).sum())
    return float(np.mean(hits)), tp / max(tp + fp, 1), event_ok, event_all, fault_ok, fault_all


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_kind_precision_recall_and_labels(kind: str) -> None:
    recall, precision, event_ok, event_all, fault_ok, fault_all = _score(kind)
    min_recall, min_precision = MINIMUM[kind]
    assert recall >= min_recall, f"{kind}: recall {recall:.2f} < {min_recall} (seeds {SEEDS})"
    assert precision >= min_precision, f"{kind}: precision {precision:.2f} < {min_precision} (seeds {SEEDS})"
    # Events move several probes together: nearly all their anomalous readings must be labelled event.
    assert event_all > 0
    assert event_ok / event_all >= 0.95, f"{kind}: only {event_ok}/{event_all} event readings labelled event"
    # Faults hit one probe: their anomalous readings must be labelled fault, not event.
    if fault_all:
        assert fault_ok / fault_all >= 0.9, f"{kind}: only {fault_ok}/{fault_all} fault readings labelled fault"
