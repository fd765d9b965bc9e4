"""Anomaly detection scored on real labelled data, three ways: strict point-wise, event-wise and PyHydroQC-counted.

Usage: .venv/bin/python bench/bench_labelled.py [--data ../shared/data] [--split 0.5] [--only lro|oddwater]

Data (read in place, never copied): Logan River Observatory (PyHydroQC's LRO_data; a reading is a labelled
anomaly when its ``*_qual`` qualifier is set or a raw/corrected value is -9999) and Leigh et al. (2019)'s Sandy
Creek and Pioneer River (``label_*`` = 1). A reading counts as detected when its aggregate QARTOD flag is
SUSPECT, FAIL or MISSING, or a detector raised an anomaly.

Two configurations per file:

- ``defaults``: what ``pilotwatch qc`` derives from the whole file by itself (no labels), scored on the whole
  file;
- ``tune``: ``analytics.tune`` on the labels of the first ``--split`` of the file (there is one file per site,
  so training and scoring are different stretches of time), then the whole file is evaluated with the tuned
  configuration (detectors warm up on the training stretch, which is the past) and only the later stretch is
  scored.

Scoring rules (``analytics.scoring``): point-wise (P/R/F1), event-wise (eP/eR/eF1: runs of labelled readings
found; runs of detections touching a label) and PyHydroQC's counting (hP/hR/hF1; Jones, Jones & Horsburgh
2022, ``anomaly_utilities.py``). Pooled figures add the counts of every series; medians are over the series
with labels in the scored stretch.

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
from analytics.config import QCConfig
from analytics.csvqc import derive_config
from analytics.pipeline import evaluate_site
from analytics.tune import tune_site

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
LRO_PARAMS = ("temp", "cond", "ph", "do", "turb", "stage")
ODD_PARAMS = ("Level", "Cond", "Tur")
PYHYDROQC_PARAMS = ("temp", "cond", "ph", "do")

PUBLISHED: dict[str, tuple[float, float, float]] = {
    "combined ARIMA+LSTM, pooled": (0.891, 0.962, 0.925),
    "ARIMA alone, pooled F1": (float("nan"), float("nan"), 0.927),
    "rules alone (approx.)": (0.88, 0.71, 0.786),
    "FranklinBasin do": (float("nan"), float("nan"), 0.29),
    "Mendon do": (float("nan"), float("nan"), 0.75),
    "BlackSmithFork temp": (float("nan"), float("nan"), 0.72),
}
"""PyHydroQC paper (Jones, Jones & Horsburgh 2022, doi:10.1016/j.envsoft.2022.105364), PyHydroQC-counted."""

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
    res = evaluate_site(values, times.view("datetime64[ns]"), config)
    return {p: np.isin(r.flag, (3, 4, 9)) | r.anomaly for p, r in res.parameters.items()}


def score_all(truth: np.ndarray, pred: np.ndarray) -> dict[str, scoring.Counts]:
    return {name: rule(truth, pred) for name, rule in scoring.RULES.items()}


def fmt(c: dict[str, scoring.Counts]) -> str:
    return "".join(
        f"{c[r].precision:>6.2f}{c[r].recall:>6.2f}{c[r].f1:>6.2f}" for r in ("point", "event", "pyhydroqc")
    )


def main() -> None:  # noqa: PLR0914  # one report, many figures
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT)
    ap.add_argument("--split", type=float, default=0.5, help="share of each file used to tune (the earlier part)")
    ap.add_argument("--only", choices=("lro", "oddwater"), default=None)
    ap.add_argument("--rule", choices=sorted(scoring.RULES), default="pyhydroqc", help="what tune maximises")
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
        for site, values, times, truth in reader(args.data):
            n = times.shape[0]
            split = round(n * args.split)
            default_cfg, _ = derive_config(pd.DataFrame(values), times)
            default_pred = detected(values, times, default_cfg)
            train = {p: v[:split] for p, v in values.items()}
            tuned_cfg, _ = tune_site(train, times[:split], {p: t[:split] for p, t in truth.items()}, rule=args.rule)
            tuned_pred = detected(values, times, tuned_cfg)
            for p in values:
                d = score_all(truth[p], default_pred[p])
                t = score_all(truth[p][split:], tuned_pred[p][split:])
                rows["defaults"].append((site, p, d))
                rows["tune"].append((site, p, t))
                print(f"{site:<19}{p:<6}{'defaults':<9}{int(truth[p].sum()):>6}{fmt(d)}")
                print(f"{'':<19}{'':<6}{'tune':<9}{int(truth[p][split:].sum()):>6}{fmt(t)}")
        for which, selection in (("all", None), ("temp/cond/ph/do", PYHYDROQC_PARAMS)):
            if set_name != "lro" and selection is not None:
                continue
            for config, series in rows.items():
                chosen = [s for s in series if selection is None or s[1] in selection]
                pooled = {r: sum((s[2][r] for s in chosen), scoring.Counts()) for r in scoring.RULES}
                labelled = [s for s in chosen if s[2]["point"].tp + s[2]["point"].fn > 0]
                medians = {r: statistics.median(s[2][r].f1 for s in labelled) for r in scoring.RULES}
                print(f"pooled {which:<16}{config:<9}{'':>6}{fmt(pooled)}")
                print(
                    f"median F1 {which:<13}{config:<9}{len(labelled):>6}"
                    f"{'':>12}{medians['point']:>6.2f}{'':>12}{medians['event']:>6.2f}{'':>12}{medians['pyhydroqc']:>6.2f}"
                )
    print("\npublished (PyHydroQC paper, PyHydroQC-counted, 2014-2019, temp/cond/ph/do):")
    for name, (p, r, f1) in PUBLISHED.items():
        print(f"  {name:<32} P {p:.3f} R {r:.3f} F1 {f1:.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
