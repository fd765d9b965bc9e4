"""The live QC service against a real InfluxDB: windows evaluated run by run, late data re-evaluated, and the
final flags, scores and labels equal to a batch run over the same data."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.labels import LABEL_NAMES, Label
from analytics.pipeline import evaluate_site
from analytics.service import QCService, qc_line
from pilotwatch.influx import InfluxV1
from pilotwatch.qc_config import ParameterQC, QCConfig
from tests.analytics.synthetic import PARAMS, Site, clean_site, inject_event

STEP_MS = 900_000
HOUR_MS = 3_600_000

CFG = {
    "do": ParameterQC.model_validate(
        {
            "qartod": {
                "gross_range": {"fail_span": [0, 20], "suspect_span": [1, 15]},
                "spike": {"suspect_threshold": 1.5},
            },
            "detectors": {"robust_z": {}, "ewma": {"grace_period": 8}},
        }
    ),
    "cond": ParameterQC.model_validate(
        {
            "qartod": {
                "gross_range": {"fail_span": [0, 5000]},
                "flat_line": {"suspect_threshold": 7200, "fail_threshold": 14400, "tolerance": 1e-9},
            },
            "detectors": {"robust_z": {}, "ewma": {"grace_period": 8}},
        }
    ),
    "turb": ParameterQC.model_validate(
        {"qartod": {"spike": {"suspect_threshold": 4}}, "detectors": {"ewma": {"grace_period": 8}}}
    ),
}


def _site() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    times, values = clean_site(rng, 3)
    site = Site(times, values)
    inject_event(rng, site, 150)
    values["do"][60] += 9  # a spike
    values["cond"][230:250] = values["cond"][230]  # a flat line
    t_ms = times.astype("datetime64[ms]").astype(np.int64)
    return t_ms, {p: values[p] for p in PARAMS if p in CFG}


def _lines(t_ms: np.ndarray, values: dict[str, np.ndarray], idx: np.ndarray) -> list[str]:
    out = []
    for p, x in values.items():
        for i in idx:
            out.append(
                f"reading,city=demo,site=river,device=d1,sensor=s{p},param={p} value={float(x[i])!r},seq={i}i {t_ms[i]}"
            )
    return out


def test_qc_line_types() -> None:
    line = qc_line(("c", "s i", "d", "x", "p"), 5, {"flag": 1, "anomaly_score": 0.5, "anomaly": 0, "label": "good"})
    # Tags in InfluxDB's sorted order, as every line of pilotwatch.schema.line.
    assert line == 'qc,city=c,device=d,param=p,sensor=x,site=s\\ i flag=1i,anomaly_score=0.5,anomaly=0i,label="good" 5'


def test_bad_windows() -> None:
    with pytest.raises(ValueError, match="agreement_window"):
        QCService(object(), CFG, late_window=60)  # type: ignore[arg-type]


def test_service_matches_batch_with_late_data(influx: InfluxV1) -> None:
    t_ms, values = _site()
    n = t_ms.shape[0]
    late = np.arange(88, 96)  # two hours that an edge buffer delivers three hours late, in the next run
    on_time = np.setdiff1d(np.arange(n), late)
    service = QCService(influx, CFG, late_window=6 * 3600, context=12 * 3600)
    start = int(t_ms[0]) - 1
    written_until = start
    reports = []
    for until in range(start + 6 * HOUR_MS, int(t_ms[-1]) + 6 * HOUR_MS, 6 * HOUR_MS):
        idx = on_time[(t_ms[on_time] > written_until) & (t_ms[on_time] <= until)]
        due = late[(t_ms[late] + 3 * HOUR_MS > written_until) & (t_ms[late] + 3 * HOUR_MS <= until)]
        lines = _lines(t_ms, values, np.concatenate([idx, due]))
        if lines:
            assert influx.write_lines(lines).status_code == 204
        written_until = until
        reports.append(service.run_once(start, until))
        # a restart between runs: the service resumes from its checkpoint
        state = service.state_dict()
        service = QCService(influx, CFG, late_window=6 * 3600, context=12 * 3600)
        service.load_state(state)
    assert sum(r.late_points for r in reports) == len(late) * len(values)
    assert sum(r.too_late for r in reports) == 0

    batch = evaluate_site(values, t_ms.astype("datetime64[ms]"), QCConfig(parameters=CFG))
    rows = influx.query("SELECT * FROM qc GROUP BY param")
    assert len(rows) == n * len(values)
    got = {(r["param"], int(r["time"])): r for r in rows}
    for p, res in batch.parameters.items():
        for i in range(n):
            row = got[(p, int(t_ms[i]))]
            assert row["flag"] == res.flag[i], (p, i)
            for test, flags in res.tests.items():
                assert row[test] == flags[i], (p, i, test)
            assert row["anomaly"] == int(res.anomaly[i]), (p, i)
            assert row["anomaly_score"] == pytest.approx(res.score[i], rel=1e-12, abs=1e-12), (p, i)
            assert row["label"] == LABEL_NAMES[Label(int(res.label[i]))], (p, i)
    labels = {r["label"] for r in rows}
    assert {"event", "fault", "good"} <= labels
