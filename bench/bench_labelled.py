"""Anomaly detection scored on real labelled data: point-wise and event-wise precision, recall and F1.

Usage: .venv/bin/python bench/bench_labelled.py [--data ../shared/data] [--max-rows N]

Data (read in place, never copied): Logan River Observatory (PyHydroQC's LRO_data; a reading is a labelled
anomaly when its ``*_qual`` qualifier is set or a raw/corrected value is -9999) and Leigh et al. (2019)'s Sandy
Creek and Pioneer River (``label_*`` = 1). pilotwatch runs with the configuration it derives from each file by
itself (the same as ``pilotwatch qc`` without ``--config``): no tuning on the labels. A reading counts as
detected when its aggregate QARTOD flag is SUSPECT, FAIL or MISSING, or a detector raised an anomaly.
Event-wise: each run of consecutive labelled readings is one event, found when any reading in it is detected;
event precision is the share of runs of detected readings that touch a labelled event.

Published figures for the same data: the PyHydroQC paper (Jones, Jones & Horsburgh 2022, Environmental
Modelling & Software, doi:10.1016/j.envsoft.2022.105364) and Leigh et al. (2019, Science of the Total
Environment 664:885-898) report per-site/per-variable scores. Searched for them: the pyhydroqc repository
(README, file list), its HydroShare resources (10.4211/hs.a6ea89ae20354e39b3c9f1228997e27a and the single-site
example), and the Leigh et al. abstract pages (arXiv:1810.13076, Monash and RMIT repositories, a preprint
mirror); only abstracts and descriptions were readable, no results table. So the ``published`` column says
"not read" rather than quote a number that was not read. PUBLISHED below holds (site, param) -> (P, R, F1,
source) for figures actually read; it is empty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.csvqc import derive_parameter
from analytics.pipeline import evaluate_site
from pilotwatch.qc_config import QCConfig

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
LRO_PARAMS = ("temp", "cond", "ph", "do", "turb", "stage")
ODD_PARAMS = ("Level", "Cond", "Tur")


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = int((truth & pred).sum())
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    events = runs(truth)
    found = sum(bool(pred[a:b].any()) for a, b in events)
    pruns = runs(pred)
    good = sum(bool(truth[a:b].any()) for a, b in pruns)
    ep = good / max(len(pruns), 1)
    er = found / max(len(events), 1)
    return {
        "P": p,
        "R": r,
        "F1": 2 * p * r / (p + r) if p + r else 0.0,
        "eP": ep,
        "eR": er,
        "eF1": 2 * ep * er / (ep + er) if ep + er else 0.0,
        "events": float(len(events)),
        "labelled": float(truth.sum()),
    }


def evaluate(values: dict[str, np.ndarray], times: np.ndarray) -> dict[str, np.ndarray]:
    ns = times.astype("datetime64[ns]").view(np.int64)
    params = {}
    for p, x in values.items():
        cfg, _ = derive_parameter(p, x, ns)
        params[p] = cfg
    res = evaluate_site(values, times, QCConfig.model_validate({"parameters": params}))
    return {p: np.isin(r.flag, (3, 4, 9)) | r.anomaly for p, r in res.parameters.items()}


def lro(root: Path, max_rows: int | None) -> list[tuple[str, str, dict[str, float]]]:
    out: list[tuple[str, str, dict[str, float]]] = []
    for path in sorted((root / "lro").glob("*.csv")):
        df = pd.read_csv(path, na_values=["NULL"], nrows=max_rows)
        times = pd.to_datetime(df["datetime"]).to_numpy()
        values, truth = {}, {}
        for p in LRO_PARAMS:
            if p not in df:
                continue
            raw = df[p].to_numpy(dtype=float)
            truth[p] = df[f"{p}_qual"].notna().to_numpy() | (raw == -9999) | (df[f"{p}_cor"].to_numpy() == -9999)
            values[p] = np.where(raw == -9999, np.nan, raw)
        pred = evaluate(values, times)
        out.extend((path.stem, p, scores(truth[p], pred[p])) for p in values)
    return out


def oddwater(root: Path, max_rows: int | None) -> list[tuple[str, str, dict[str, float]]]:
    out = []
    for path in sorted((root / "oddwater").glob("*.csv")):
        df = pd.read_csv(path, nrows=max_rows)
        times = pd.to_datetime(df["timestamp"]).to_numpy()
        values = {p: df[p].to_numpy(dtype=float) for p in ODD_PARAMS}
        pred = evaluate(values, times)
        for p in ODD_PARAMS:
            out.append(
                (
                    path.stem.replace("data_", "").replace("_anom", ""),
                    p,
                    scores(df[f"label_{p}"].to_numpy() == 1, pred[p]),
                )
            )
    return out


PUBLISHED: dict[tuple[str, str], tuple[float, float, float, str]] = {}


def published(site: str, param: str) -> str:
    hit = PUBLISHED.get((site, param))
    return "not read" if hit is None else f"P {hit[0]:.2f} R {hit[1]:.2f} F1 {hit[2]:.2f} ({hit[3]})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT)
    ap.add_argument("--max-rows", type=int, default=None, help="read only the first N rows of each file")
    args = ap.parse_args()
    rows = lro(args.data, args.max_rows) + oddwater(args.data, args.max_rows)
    head = (
        f"{'site':<20}{'param':<7}{'labelled':>9}{'events':>7}"
        f"{'P':>6}{'R':>6}{'F1':>6}{'eP':>6}{'eR':>6}{'eF1':>6}  published"
    )
    print(head)
    print("-" * len(head))
    for site, p, s in rows:
        print(
            f"{site:<20}{p:<7}{int(s['labelled']):>9}{int(s['events']):>7}{s['P']:>6.2f}{s['R']:>6.2f}{s['F1']:>6.2f}"
            f"{s['eP']:>6.2f}{s['eR']:>6.2f}{s['eF1']:>6.2f}  {published(site, p)}"
        )


if __name__ == "__main__":
    main()
