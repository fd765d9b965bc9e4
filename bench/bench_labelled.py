"""Anomaly detection scored on real labelled data, three ways: strict point-wise, event-wise and PyHydroQC-counted.

Usage: .venv/bin/python bench/bench_labelled.py [--data ../shared/data] [--split 0.5] [--only lro|oddwater]

Data (read in place, never copied): Logan River Observatory (PyHydroQC's LRO_data; a reading is a labelled
anomaly when its ``*_qual`` qualifier is set or a raw/corrected value is -9999) and Leigh et al. (2019)'s Sandy
Creek and Pioneer River (``label_*`` = 1). A reading counts as detected when its aggregate QARTOD flag is
SUSPECT, FAIL or MISSING, or a detector raised an anomaly.

Two configurations per file:

- ``defaults``: what ``pilotwatch qc`` derives from the whole file by itself (no labels), scored on the whole
  file;
- ``tune`` (LRO only; other labelled sets stay aside for independent scoring): ``analytics.tune`` on the
  labels of the first ``--split`` of the file (there is one file per site,
  so training and scoring are different stretches of time), then the whole file is evaluated with the tuned
  configuration (detectors warm up on the training stretch, which is the past) and only the later stretch is
  scored.

Scoring rules (``analytics.scoring``): point-wise (P/R/F1), event-wise (eP/eR/eF1: runs of labelled readings
found; runs of detections touching a label) and PyHydroQC's counting (hP/hR/hF1; Jones, Jones & Horsburgh
2022, ``anomaly_utilities.py``). Pooled figures add the counts of every series; medians are over the series
with labels in the scored stretch. Multivariate evidence: the share of the defaults' anomalous readings that are
labelled, for episodes one parameter raised alone and for episodes several parameters confirmed
(``ParameterResult.support``).

Published: PUBLISHED holds the PyHydroQC paper's combined ARIMA+LSTM detection figures, read from the counts
in the pyhydroqc repository's ``Examples/Plotting/cm_table_plot.py`` (2014-2019 data, temp/cond/pH/DO at six
LRO sites; so only indicative for a single year here).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from analytics import scoring
from analytics.csvqc import derive_config
from analytics.pipeline import SiteResult, evaluate_site
from analytics.tune import OBJECTIVES, tune_site
from pilotwatch.qc_config import QCConfig

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
LRO_PARAMS = ("temp", "cond", "ph", "do", "turb", "stage")
ODD_PARAMS = ("Level", "Cond", "Tur")
PYHYDROQC_PARAMS = ("temp", "cond", "ph", "do")
TUNED = ("lro",)
"""Data sets ``tune`` runs on. The Sandy Creek / Pioneer River files are scored with the unsupervised defaults
only: other labelled sets stay aside for independent scoring, so nothing is tuned on them."""

PUBLISHED: dict[tuple[str, str], tuple[int, int, int]] = {
    # (site, param): (TP, FN, FP), PyHydroQC-counted, combined ARIMA + LSTM detection ("aggregate")
    ("FranklinBasin", "temp"): (849, 43, 377),
    ("FranklinBasin", "cond"): (6914, 71, 267),
    ("FranklinBasin", "ph"): (15620, 241, 1611),
    ("FranklinBasin", "do"): (645, 58, 3092),
    ("TonyGrove", "temp"): (34678, 1, 6048),
    ("TonyGrove", "cond"): (7484, 188, 102),
    ("TonyGrove", "ph"): (2779, 147, 225),
    ("TonyGrove", "do"): (2338, 865, 1428),
    ("WaterLab", "temp"): (1126, 13, 89),
    ("WaterLab", "cond"): (9627, 577, 177),
    ("WaterLab", "ph"): (10499, 399, 122),
    ("WaterLab", "do"): (12169, 1781, 130),
    ("MainStreet", "temp"): (329, 131, 222),
    ("MainStreet", "cond"): (3450, 203, 628),
    ("MainStreet", "ph"): (12892, 236, 136),
    ("MainStreet", "do"): (7818, 313, 90),
    ("Mendon", "temp"): (5536, 1, 220),
    ("Mendon", "cond"): (13376, 954, 159),
    ("Mendon", "ph"): (16686, 95, 43),
    ("Mendon", "do"): (6061, 72, 4061),
    ("BlackSmithFork", "temp"): (975, 760, 13),
    ("BlackSmithFork", "cond"): (2501, 24, 2858),
    ("BlackSmithFork", "ph"): (5731, 54, 75),
    ("BlackSmithFork", "do"): (2982, 96, 195),
}
"""The PyHydroQC paper's counts (Jones, Jones & Horsburgh 2022, doi:10.1016/j.envsoft.2022.105364), as listed
in the pyhydroqc repository's ``Examples/Plotting/cm_table_plot.py`` (``TP_aggregate``, ``FN_aggregate``,
``FP_aggregate``): 2014-2019 data of six LRO sites, so only indicative for the single years here. Pooled they
give P 0.891, R 0.962, F1 0.925; the per-series median F1 is 0.95. Its rules alone: recall about 0.71 at
precision about 0.88 (the issue's reading of the same file)."""


def published() -> list[str]:
    series = [scoring.Counts(tp, fp, fn) for tp, fn, fp in PUBLISHED.values()]
    pooled = sum(series, scoring.Counts())
    worst = sorted(PUBLISHED, key=lambda k: scoring.Counts(PUBLISHED[k][0], PUBLISHED[k][2], PUBLISHED[k][1]).f1)
    return [
        f"pooled P {pooled.precision:.3f} R {pooled.recall:.3f} F1 {pooled.f1:.3f}; "
        f"median F1 {statistics.median(c.f1 for c in series):.3f} over {len(series)} series",
        "hardest: "
        + ", ".join(
            f"{site} {p} {scoring.Counts(PUBLISHED[site, p][0], PUBLISHED[site, p][2], PUBLISHED[site, p][1]).f1:.2f}"
            for site, p in worst[:3]
        ),
    ]


Series = tuple[str, str, np.ndarray, np.ndarray, np.ndarray]  # site, param, values, times (ns), truth


def lro(root: Path) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]]:
    for path in sorted((root / "lro").glob("*.csv")):
        df = pd.read_csv(path, na_values=["NULL"])
        times = pd.to_datetime(df["datetime"]).to_numpy().astype("datetime64[ns]").view(np.int64)
        values, truth = {}, {}
        for p in LRO_PARAMS:
            if p not in df:
                continue
            raw = df[p].to_numpy(dtype=float)
            truth[p] = df[f"{p}_qual"].notna().to_numpy() | (raw == -9999) | (df[f"{p}_cor"].to_numpy() == -9999)
            values[p] = np.where(raw == -9999, np.nan, raw)
        yield path.stem, values, times, truth


def oddwater(root: Path) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]]:
    for path in sorted((root / "oddwater").glob("*.csv")):
        df = pd.read_csv(path)
        times = pd.to_datetime(df["timestamp"]).to_numpy().astype("datetime64[ns]").view(np.int64)
        values = {p: df[p].to_numpy(dtype=float) for p in ODD_PARAMS}
        truth = {p: df[f"label_{p}"].to_numpy() == 1 for p in ODD_PARAMS}
        yield path.stem.replace("data_", "").replace("_anom", ""), values, times, truth


def detected(values: dict[str, np.ndarray], times: np.ndarray, config: QCConfig) -> dict[str, np.ndarray]:
    return {p: np.isin(r.flag, (3, 4, 9)) | r.anomaly for p, r in evaluate(values, times, config).parameters.items()}


def evaluate(values: dict[str, np.ndarray], times: np.ndarray, config: QCConfig) -> SiteResult:
    return evaluate_site(values, times.view("datetime64[ns]"), config)


def add_support(result: SiteResult, truth: dict[str, np.ndarray], into: dict[str, list[int]]) -> None:
    """Per evidence level, [labelled readings, readings, episodes] of the anomalous readings whose episode one
    parameter raised alone (``alone``) or several confirmed (``confirmed``)."""
    for p, r in result.parameters.items():
        for level, mask in (("alone", r.support == 1), ("confirmed", r.support >= 2)):
            row = into.setdefault(level, [0, 0, 0])
            row[0] += int((mask & truth[p]).sum())
            row[1] += int(mask.sum())
            row[2] += len(scoring.runs(mask))


def score_all(truth: np.ndarray, pred: np.ndarray) -> dict[str, scoring.Counts]:
    return {name: rule(truth, pred) for name, rule in scoring.RULES.items()}


def fmt(c: dict[str, scoring.Counts]) -> str:
    return "".join(f"{c[r].precision:>6.2f}{c[r].recall:>6.2f}{c[r].f1:>6.2f}" for r in ("point", "event", "pyhydroqc"))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT)
    ap.add_argument("--split", type=float, default=0.5, help="share of each file used to tune (the earlier part)")
    ap.add_argument("--only", choices=("lro", "oddwater"), default=None)
    ap.add_argument("--rule", choices=OBJECTIVES, default="pyhydroqc", help="what tune maximises")
    args = ap.parse_args()
    sets = {"lro": lro, "oddwater": oddwater}
    head = f"{'site':<19}{'param':<6}{'config':<9}{'lab':>6}" + "".join(
        f"{h:>6}" for h in ("P", "R", "F1", "eP", "eR", "eF1", "hP", "hR", "hF1")
    )
    started = time.perf_counter()
    for set_name, reader in sets.items():
        if args.only not in (None, set_name):
            continue
        print(f"\n== {set_name} ==\n{head}\n{'-' * len(head)}")
        rows: dict[str, list[tuple[str, str, dict[str, scoring.Counts]]]] = {"defaults": [], "tune": []}
        support: dict[str, list[int]] = {}
        for site, values, times, truth in reader(args.data):
            n = times.shape[0]
            split = round(n * args.split)
            default_cfg, _ = derive_config(pd.DataFrame(values), times)
            default_res = evaluate(values, times, default_cfg)
            default_pred = {p: np.isin(r.flag, (3, 4, 9)) | r.anomaly for p, r in default_res.parameters.items()}
            add_support(default_res, truth, support)
            for p in values:
                d = score_all(truth[p], default_pred[p])
                rows["defaults"].append((site, p, d))
                print(f"{site:<19}{p:<6}{'defaults':<9}{int(truth[p].sum()):>6}{fmt(d)}")
            if set_name not in TUNED:
                continue
            train = {p: v[:split] for p, v in values.items()}
            tuned_cfg, _ = tune_site(train, times[:split], {p: t[:split] for p, t in truth.items()}, rule=args.rule)
            tuned_pred = detected(values, times, tuned_cfg)
            for p in values:
                t = score_all(truth[p][split:], tuned_pred[p][split:])
                rows["tune"].append((site, p, t))
                print(f"{site:<19}{p:<6}{'tune':<9}{int(truth[p][split:].sum()):>6}{fmt(t)}")
        for which, selection in (("all", None), ("t/c/ph/do", PYHYDROQC_PARAMS)):
            if set_name != "lro" and selection is not None:
                continue
            for config, series in rows.items():
                if not series:
                    continue
                chosen = [s for s in series if selection is None or s[1] in selection]
                pooled = {r: sum((s[2][r] for s in chosen), scoring.Counts()) for r in scoring.RULES}
                labelled = [s for s in chosen if s[2]["point"].tp + s[2]["point"].fn > 0]
                medians = {r: statistics.median(s[2][r].f1 for s in labelled) for r in scoring.RULES}
                print(f"pooled {which:<16}{config:<9}{'':>6}{fmt(pooled)}")
                med = "".join(f"{'':>12}{medians[r]:>6.2f}" for r in ("point", "event", "pyhydroqc"))
                print(f"median F1 {which:<13}{config:<9}{len(labelled):>6}{med}")
                h, pt = pooled["pyhydroqc"], pooled["point"]
                print(
                    f"  counts {which} {config}: PyHydroQC TP {h.tp} FP {h.fp} FN {h.fn} F1 {h.f1:.3f}; "
                    f"point-wise TP {pt.tp} FP {pt.fp} FN {pt.fn} P {pt.precision:.3f} F1 {pt.f1:.3f}"
                )
        for level, (n_labelled, readings, episodes) in support.items():
            print(
                f"defaults, episodes {level:<9}: {readings} anomalous readings in {episodes} episodes, "
                f"{n_labelled / max(readings, 1):.2f} of them labelled"
            )
    print("\npublished (PyHydroQC paper, combined ARIMA+LSTM, PyHydroQC-counted, 2014-2019, temp/cond/ph/do):")
    for line in published():
        print(f"  {line}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
