"""``pilotwatch qc`` on good and bad CSV input, configuration errors, and the labelling rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from analytics import cli
from analytics.labels import Label, label_site
from pilotwatch.qc_config import ParameterQC, QCConfig


def _csv(tmp_path: Path, n: int = 400) -> Path:
    rng = np.random.default_rng(3)
    t = pd.date_range("2024-01-01", periods=n, freq="15min")
    df = pd.DataFrame({"when": t, "do": 8 + np.sin(np.arange(n) / 15) + rng.normal(0, 0.05, n), "note": "x"})
    df.loc[200, "do"] = 40.0
    df.loc[10, "do"] = np.nan
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    return path


def test_qc_without_config_derives_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.csv"
    saved = tmp_path / "used.yaml"
    rc = cli.main(["qc", str(_csv(tmp_path)), "--time-column", "when", "--out", str(out), "--save-config", str(saved)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "derived from the data" in err
    assert "column 'note' skipped" in err
    res = pd.read_csv(out)
    assert list(res.columns) == ["when", "do", "do_flag", "do_anomaly", "do_anomaly_score", "do_label"]
    assert res.loc[10, "do_flag"] == 9
    assert res.loc[10, "do_label"] == "missing"
    assert res.loc[200, "do_flag"] in (3, 4)
    assert res.loc[200, "do_label"] == "fault"
    # the saved configuration reproduces the run
    out2 = tmp_path / "out2.csv"
    assert (
        cli.main(
            ["qc", str(_csv(tmp_path)), "--time-column", "when", "--out", str(out2), "--config", str(saved), "--quiet"]
        )
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(out2), res)


def test_qc_with_config(tmp_path: Path) -> None:
    cfg = tmp_path / "qc.yaml"
    cfg.write_text("parameters:\n  do:\n    qartod:\n      gross_range: {fail_span: [0, 20]}\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert (
        cli.main(
            ["qc", str(_csv(tmp_path)), "--time-column", "when", "--out", str(out), "--config", str(cfg), "--quiet"]
        )
        == 0
    )
    res = pd.read_csv(out)
    assert res.loc[200, "do_flag"] == 4
    assert set(res["do_flag"]) == {1, 4, 9}


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("when,do\n2024-01-01,1\n", ["--time-column", "time"], "time column 'time' not in"),
        ("when,do\nnot a time,1\n", ["--time-column", "when"], "not times"),
        ("when,note\n2024-01-01,a\n", ["--time-column", "when"], "no numeric parameter columns"),
        ("when,do\n", ["--time-column", "when"], "no rows"),
    ],
)
def test_qc_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, args: list[str], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    assert cli.main(["qc", str(path), *args, "--out", str(tmp_path / "o.csv")]) == 2
    assert message in capsys.readouterr().err


def test_qc_missing_file_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["qc", str(tmp_path / "nope.csv"), "--time-column", "t", "--out", str(tmp_path / "o.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cfg = tmp_path / "qc.yaml"
    cfg.write_text("parameters:\n  do:\n    qartod:\n      spikes: {}\n", encoding="utf-8")
    rc = cli.main(
        ["qc", str(_csv(tmp_path)), "--time-column", "when", "--out", str(tmp_path / "o.csv"), "--config", str(cfg)]
    )
    assert rc == 2
    assert "parameters.do.qartod.spikes: Extra inputs are not permitted" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"qartod": {"spikee": {}}}, ("qartod", "spikee")),
        ({"qartod": {"spike": {"suspect_treshold": 1}}}, ("qartod", "spike", "suspect_treshold")),
        ({"detectors": {"lstm": {}}}, ("detectors", "lstm")),
        ({"qartod": {"gross_range": {"fail_span": [0, 1], "suspect_span": [0, 2]}}}, ("qartod", "gross_range")),
        (
            {"qartod": {"climatology": {"members": [{"tspan": [0, 1], "vspan": [0, 1], "period": "fortnight"}]}}},
            ("qartod", "climatology", "members", 0, "period"),
        ),
    ],
)
def test_config_errors_name_the_culprit(raw: dict[str, object], loc: tuple[object, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        ParameterQC.model_validate(raw)
    assert info.value.errors()[0]["loc"][: len(loc)] == loc


def test_config_round_trip() -> None:
    cfg = QCConfig.model_validate(
        {"parameters": {"do": {"qartod": {"spike": {"suspect_threshold": 1}}, "detectors": {"ewma": {}}}}}
    )
    assert QCConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_labels_rules() -> None:
    t = (np.arange(10) * 900 * 10**9).astype(np.int64)
    good = np.ones(10, dtype=np.uint8)
    agg = {"do": good.copy(), "cond": good.copy(), "ph": good.copy()}
    tests = {"do": {"gross_range": good.copy()}, "cond": {"gross_range": good.copy()}, "ph": {"flat_line": good.copy()}}
    anomaly = {p: np.zeros(10, dtype=bool) for p in agg}
    anomaly["do"][2] = True  # alone: fault
    anomaly["do"][6] = anomaly["cond"][7] = True  # together within the window: event
    tests["ph"]["flat_line"][7] = 4  # a flat-lined probe is a fault and does not vote
    agg["ph"][7] = 4
    anomaly["ph"][7] = True
    agg["cond"][9] = 9
    labels = label_site(tests, agg, anomaly, t, agreement_window=1800, min_agree=2)
    assert labels["do"][2] == Label.FAULT
    assert labels["do"][6] == Label.EVENT
    assert labels["cond"][7] == Label.EVENT
    assert labels["ph"][7] == Label.FAULT
    assert labels["cond"][9] == Label.MISSING
    assert labels["do"][0] == Label.GOOD
    unhealthy = label_site(tests, agg, anomaly, t, device_ok=np.arange(10) != 6)
    assert unhealthy["do"][6] == Label.FAULT
