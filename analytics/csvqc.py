"""QC of a table on disk: a logger download or an export, one column per parameter and one time column.

In: a CSV path, the name of its time column, optionally a :class:`pilotwatch.qc_config.QCConfig` (YAML or JSON).
Out: a CSV with the time column and, per parameter, the value, the aggregate QARTOD flag (``<p>_flag``), the
anomaly flag and score (``<p>_anomaly``, ``<p>_anomaly_score``) and the label (``<p>_label``: good, fault,
event, missing). Without a configuration, :func:`derive_config` derives ranges and thresholds from the data and
returns a note for each choice, so the user sees which values were used and can save them as a config file.
Bad input raises :class:`ValueError` with a message that says what is wrong and where.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from pydantic import ValidationError

from analytics.detectors import SeasonalARDetector
from analytics.labels import LABEL_NAMES, Label
from analytics.pipeline import evaluate_site
from pilotwatch.qc_config import QCConfig

Progress = Callable[[str, int, int], None]


def read_table(path: Path, time_column: str) -> tuple[pd.DataFrame, npt.NDArray[np.int64], list[str]]:
    """The table, its times (epoch ns) and notes about columns that were skipped."""
    if not path.is_file():
        raise ValueError(f"input file {path} does not exist")
    try:
        frame = pd.read_csv(path, na_values=["NULL", "null", "NA", "NaN", "nan", ""], low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from exc
    if time_column not in frame.columns:
        raise ValueError(f"time column {time_column!r} not in {path}; columns are {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{path} has a header but no rows")
    try:
        times = pd.to_datetime(frame[time_column], utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"time column {time_column!r} has values that are not times: {exc}") from exc
    bad = times.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise ValueError(
            f"time column {time_column!r} is empty or unreadable on {int(bad.sum())} row(s), first at line {row}"
        )
    notes: list[str] = []
    data = {}
    for col in frame.columns:
        if col == time_column:
            continue
        numeric = pd.to_numeric(frame[col], errors="coerce")
        if numeric.notna().sum() == 0:
            notes.append(f"column {col!r} skipped: no numeric values")
            continue
        lost = int((numeric.isna() & frame[col].notna()).sum())
        if lost:
            notes.append(f"column {col!r}: {lost} non-numeric value(s) read as missing")
        data[col] = numeric.astype(float).replace(-9999.0, np.nan)
    if not data:
        raise ValueError(f"{path} has no numeric parameter columns besides {time_column!r}")
    ns = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
    return pd.DataFrame(data), np.ascontiguousarray(ns), notes


def load_config(path: Path) -> QCConfig:
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    try:
        return QCConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError(f"config file {path} is invalid:\n  " + "\n  ".join(lines)) from exc


def _resolution(x: npt.NDArray[np.float64]) -> float:
    steps = np.abs(np.diff(np.unique(x[np.isfinite(x)])))
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else 0.0


TARGET_EPISODES_PER_WEEK = 1.0
"""The unsupervised defaults' false-alarm budget: the forecast detector's threshold is the lowest that raises at
most this many anomalous episodes a week on the series itself (so on data with no anomalies, at most this)."""

DEFAULT_MAX_EPISODE_S = 6 * 3600.0
"""The defaults' forecast episodes accept a new level after 6 h: a longer open episode mostly marks readings
after a lasting change (a recalibration, a new season) that nobody would call anomalous."""

FORECAST_THRESHOLDS = (4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 48.0)
"""The thresholds (residual scales) the calibration tries, lowest first; the last is used if none meets it."""


def calibrate_forecast(
    x: npt.NDArray[np.float64], times: npt.NDArray[np.int64], step: float, res: float
) -> tuple[float, int, float]:
    """The forecast detector's threshold for the false-alarm budget: (threshold, episodes, weeks of data)."""
    weeks = max(float(times[-1] - times[0]) / 1e9 / (7 * 86_400.0), 1 / 7) if times.size > 1 else 1 / 7
    budget = max(1, int(TARGET_EPISODES_PER_WEEK * weeks))
    ns = np.ascontiguousarray(times).view("datetime64[ns]")
    counts = []
    for threshold in FORECAST_THRESHOLDS:
        d = SeasonalARDetector(step=step, min_scale=res, threshold=threshold, max_episode=DEFAULT_MAX_EPISODE_S)
        alarm = np.nan_to_num(d.score_many(x, ns)) >= 1.0
        counts.append(int(np.count_nonzero(alarm[1:] & ~alarm[:-1]) + int(alarm[:1].sum())))
    for i, threshold in enumerate(FORECAST_THRESHOLDS):
        # within budget; or a few episodes that a higher threshold no longer reduces: departures that large are
        # the water's (or the sensor's) real events, not the noise the budget is about
        steady = i + 1 < len(counts) and counts[i + 1] == counts[i] and counts[i] <= 4 * budget
        if counts[i] <= budget or steady:
            return threshold, counts[i], weeks
    return FORECAST_THRESHOLDS[-1], counts[-1], weeks


def derive_parameter(
    name: str, x: npt.NDArray[np.float64], times: npt.NDArray[np.int64]
) -> tuple[dict[str, Any], list[str]]:
    """Ranges and thresholds for one parameter from its own data, with a note for each choice."""
    finite = x[np.isfinite(x)]
    if finite.size < 10:
        return {"qartod": {}, "detectors": {}}, [f"{name}: fewer than 10 values, not evaluated"]
    lo, hi = np.percentile(finite, [0.5, 99.5])
    spread = max(hi - lo, 1e-9)
    res = _resolution(finite)
    suspect = [lo - 0.25 * spread, hi + 0.25 * spread]
    fail = [lo - spread, hi + spread]
    if finite.min() >= 0:
        suspect[0] = max(suspect[0], 0.0)
        fail[0] = max(fail[0], 0.0)
    order = np.argsort(times, kind="stable")
    xs, ts = x[order], times[order]
    step = float(np.median(np.diff(ts))) / 1e9 if ts.size > 1 else 1.0
    step = step if step > 0 else 1.0
    mid = np.abs(xs[1:-1] - (xs[:-2] + xs[2:]) / 2)
    mid = mid[np.isfinite(mid)]
    typical = float(np.percentile(mid, 99)) if mid.size else 0.0
    spike_s = max(3 * typical, 5 * res, 1e-9)
    same = np.concatenate(([False], xs[1:] == xs[:-1]))
    run_ids = np.cumsum(~same)
    # a quantised series that is simply steady repeats a value for hours: the window starts at three times the
    # longest run the series shows 999 times in 1000, and never below half a day
    longest_typical = float(np.percentile(np.bincount(run_ids), 99.9)) if run_ids.size else 1.0
    flat_suspect = max(43_200.0 / step, 3 * longest_typical) * step
    threshold, episodes, weeks = calibrate_forecast(xs, ts, step, res)
    cfg = {
        "qartod": {
            "gross_range": {"fail_span": [float(f) for f in fail], "suspect_span": [float(s) for s in suspect]},
            "spike": {"suspect_threshold": spike_s, "fail_threshold": 3 * spike_s},
            "flat_line": {"suspect_threshold": flat_suspect, "fail_threshold": 3 * flat_suspect, "tolerance": res / 2},
        },
        "detectors": {
            "forecast": {
                "step": step,
                "min_scale": res,
                "threshold": threshold,
                "max_episode": DEFAULT_MAX_EPISODE_S,
            },
        },
    }
    notes = [
        f"{name}: gross_range suspect {suspect[0]:.4g}..{suspect[1]:.4g}, fail {fail[0]:.4g}..{fail[1]:.4g} "
        "(0.5–99.5 percentiles widened by 25 % / 100 % of their spread)",
        f"{name}: spike suspect {spike_s:.4g}, fail {3 * spike_s:.4g} "
        "(3× the 99th percentile of the deviation from neighbours)",
        f"{name}: flat_line suspect {flat_suspect:.0f} s, fail {3 * flat_suspect:.0f} s, tolerance {res / 2:.3g} "
        f"(resolution {res:.3g}, step {step:.0f} s)",
        f"{name}: forecast detector threshold {threshold:g} residual scales: {episodes} anomalous episode(s) in "
        f"{weeks:.1f} week(s) of this data (target: at most {TARGET_EPISODES_PER_WEEK:g} a week)",
    ]
    return cfg, notes


def derive_config(frame: pd.DataFrame, times: npt.NDArray[np.int64]) -> tuple[QCConfig, list[str]]:
    """A configuration for every column from the data itself, and a note for each derived value."""
    params: dict[str, Any] = {}
    notes: list[str] = []
    for col in frame.columns:
        cfg, col_notes = derive_parameter(col, frame[col].to_numpy(dtype=float), times)
        params[col] = cfg
        notes.extend(col_notes)
    return QCConfig.model_validate({"parameters": params}), notes


def run_csv(
    input_path: Path,
    time_column: str,
    output_path: Path,
    config_path: Path | None = None,
    progress: Progress | None = None,
) -> tuple[QCConfig, list[str], pd.DataFrame]:
    """Read, evaluate and write; returns the configuration used, notes, and the output table."""
    frame, times, notes = read_table(input_path, time_column)
    if config_path is not None:
        config = load_config(config_path)
    else:
        config, derived = derive_config(frame, times)
        notes = [*notes, "no --config given: ranges derived from the data", *derived]
    out = pd.DataFrame({time_column: pd.to_datetime(times, utc=True)})
    columns = {n: frame[n].to_numpy(dtype=float) for n in frame.columns}
    site = evaluate_site(columns, times.view("datetime64[ns]"), config, progress=progress)
    names = np.array([LABEL_NAMES[lab] for lab in Label], dtype=object)
    for name, r in site.parameters.items():
        out[name] = frame[name].to_numpy()
        out[f"{name}_flag"] = r.flag
        out[f"{name}_anomaly"] = r.anomaly.astype(np.uint8)
        out[f"{name}_anomaly_score"] = np.round(r.score, 4)
        out[f"{name}_label"] = names[r.label]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output_path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    return config, notes, out
