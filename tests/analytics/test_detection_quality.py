"""Detection that holds up: the three scoring rules, the seasonal AR forecast detector, ``qc tune``, the
unsupervised defaults on a quantised steady series, and multivariate evidence by episode."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import cli, scoring
from analytics.csvqc import derive_config, load_config
from analytics.detectors import SeasonalARDetector, detector_from_state
from analytics.labels import Label, episode_support, label_site
from analytics.pipeline import evaluate_site
from analytics.service import check_streamable
from analytics.tune import Fold, greedy, label_mask, tune_parameter
from pilotwatch.qc_config import ParameterQC, QCConfig
from pilotwatch.schema import QartodFlag

from .test_detectors import series


# ------------------------------------------------------------------------------------------------ scoring
def reference_pyhydroqc(truth: list[bool], pred: list[bool], wf: int = 1) -> tuple[int, int, int]:
    """PyHydroQC's rule written out the slow way, straight from its description (an independent oracle)."""
    n = len(truth)

    def widen(mask: list[bool]) -> list[int]:
        out, count = [0] * n, 0
        for i in range(wf, n - wf):
            if any(mask[i - wf : i + wf + 1]):
                if out[i - 1] == 0:
                    count += 1
                out[i] = count
        return out

    lab, det = widen(truth), widen(pred)
    groups: list[list[int]] = []
    for i in range(n):
        if i == 0:
            groups.append([i])
            continue
        changed = lab[i] != lab[i - 1] or det[i] != det[i - 1]
        was_clear = lab[i - 1] == 0 and det[i - 1] == 0
        now_clear = lab[i] == 0 and det[i] == 0
        flip = lab[i] != lab[i - 1] and det[i] != det[i - 1]
        if changed and (was_clear or now_clear or flip):
            groups.append([i])
        else:
            groups[-1].append(i)
    tp = fp = fn = 0
    for g in groups:
        inner = max(0, len(g) - 2 * wf)
        has_l, has_d = any(lab[i] for i in g), any(det[i] for i in g)
        if has_l and has_d:
            tp += inner
        elif has_d:
            fp += inner
        elif has_l:
            fn += inner
    return tp, fp, fn


def test_pyhydroqc_rule_by_hand() -> None:
    truth = np.zeros(20, dtype=bool)
    truth[5:8] = True  # widened to 4..8: found by the detection at 7, so 5 readings minus the two edges
    pred = np.zeros(20, dtype=bool)
    pred[[7, 15]] = True  # 15 widened to 14..16: a false group of 3, minus its edges
    assert scoring.pyhydroqc(truth, pred) == scoring.Counts(tp=3, fp=1, fn=0)
    assert scoring.pointwise(truth, pred) == scoring.Counts(tp=1, fp=1, fn=2)
    assert scoring.eventwise(truth, pred) == scoring.Counts(tp=1, fp=1, fn=0)
    missed = np.zeros(20, dtype=bool)
    assert scoring.pyhydroqc(truth, missed) == scoring.Counts(tp=0, fp=0, fn=3)


@pytest.mark.parametrize("seed", range(6))
def test_pyhydroqc_rule_matches_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    truth = np.convolve(rng.random(n) < 0.03, np.ones(1 + seed % 4), "same") > 0
    pred = np.convolve(rng.random(n) < 0.04, np.ones(1 + seed % 3), "same") > 0
    for wf in (1, 2):
        got = scoring.pyhydroqc(truth, pred, wf=wf)
        assert (got.tp, got.fp, got.fn) == reference_pyhydroqc(truth.tolist(), pred.tolist(), wf)


def test_pooled_counts_and_bad_input() -> None:
    total = scoring.Counts(3, 1, 0) + scoring.Counts(1, 1, 2)
    assert total == scoring.Counts(4, 2, 2)
    assert total.precision == pytest.approx(4 / 6)
    assert total.recall == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="equal length"):
        scoring.pointwise(np.zeros(3, bool), np.zeros(4, bool))


# ------------------------------------------------------------------------------------------------ forecast
def test_forecast_streaming_equals_batch_and_restores() -> None:
    x, t = series(n=1200)
    make = lambda: SeasonalARDetector(step=900, grace_period=96, threshold=4, min_scale=0.01)  # noqa: E731
    batch = make().score_many(x, t)
    assert np.isnan(batch[np.isnan(x)]).all()
    one = make()
    stream = np.empty_like(batch)
    for i in range(x.shape[0]):
        stream[i] = one.score_one(x[i], t[i : i + 1])
        one.learn_one(x[i], t[i : i + 1])
    np.testing.assert_array_equal(stream, batch)
    first = make()
    head = first.score_many(x[:500], t[:500])
    restored = detector_from_state(json.loads(json.dumps(first.state_dict())))
    pickled = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(np.concatenate([head, restored.score_many(x[500:], t[500:])]), batch)
    np.testing.assert_array_equal(np.concatenate([head, pickled.score_many(x[500:], t[500:])]), batch)


def test_forecast_marks_the_whole_episode_and_stays_quiet_on_the_daily_cycle() -> None:
    rng = np.random.default_rng(1)
    n = 96 * 14
    t = np.datetime64("2024-03-01", "ns") + np.arange(n) * np.timedelta64(900, "s")
    x = 8 + 1.5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.05, n)
    clean = SeasonalARDetector(step=900, threshold=6).score_many(x, t)
    assert (clean >= 1).mean() < 0.002
    shifted = x.copy()
    shifted[900:940] += 1.0  # a 10-hour offset of 20 noise scales
    scores = SeasonalARDetector(step=900, threshold=6).score_many(shifted, t)
    inside = scores[900:940] >= 1
    assert inside.all(), f"only {inside.sum()} of 40 readings of the episode marked"
    assert (scores[960:] >= 1).mean() < 0.01
    # a gap in the timestamps keeps the daily lag aligned: same scores as the series with NaN in the gap
    gap = np.ones(n, dtype=bool)
    gap[500:504] = False
    with_nan = np.where(gap, shifted, np.nan)
    a = SeasonalARDetector(step=900, threshold=6).score_many(with_nan, t)
    b = SeasonalARDetector(step=900, threshold=6).score_many(shifted[gap], t[gap])
    np.testing.assert_array_equal(a[gap], b)


def test_forecast_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="release"):
        SeasonalARDetector(release=1.5)
    with pytest.raises(ValueError, match="memory"):
        SeasonalARDetector(memory=0.5)
    with pytest.raises(ValueError, match="needs times"):
        SeasonalARDetector().score_many(np.ones(3))


# ------------------------------------------------------------------------------------------------ defaults
def quantised_steady(seed: int = 3, days: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-minute data in steps of 0.05 that wanders so slowly a value repeats for hours; 1 % real events."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    times = np.datetime64("2024-05-01T00:00", "ns") + np.arange(n) * np.timedelta64(60, "s")
    walk = np.cumsum(rng.normal(0, 0.0005, n))
    level = 0.5 + 0.03 * np.sin(2 * np.pi * np.arange(n) / 1440) + walk - np.linspace(0, walk[-1], n)
    x = np.round(level / 0.05) * 0.05
    truth = np.zeros(n, dtype=bool)
    length = n // 100 // 4
    for start in rng.choice(np.arange(1440, n - 200, 1440), size=4, replace=False):
        x[start : start + length] += 0.25
        truth[start : start + length] = True
    return times, x, truth


def test_defaults_do_not_flag_a_quantised_steady_series() -> None:
    times, x, truth = quantised_steady()
    runs = np.diff(np.flatnonzero(np.diff(x) != 0))
    assert np.percentile(runs, 90) > 120, "the series must repeat values for hours"
    config, notes = derive_config(pd.DataFrame({"cl": x}), times.view(np.int64))
    assert any("at most 1 a week" in note for note in notes)
    res = evaluate_site({"cl": x}, times, config).parameters["cl"]
    flagged = np.isin(res.flag, (QartodFlag.SUSPECT, QartodFlag.FAIL)) | res.anomaly
    assert flagged[~truth].mean() < 0.02
    assert scoring.eventwise(truth, flagged).recall == 1.0


@pytest.mark.parametrize("seed", [4, 5])
def test_defaults_keep_the_false_alarm_budget_on_clean_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 96 * 7 * 6  # six weeks of 15-minute readings: a daily cycle, a slow drift, heavy-tailed noise
    times = np.datetime64("2024-02-01", "ns") + np.arange(n) * np.timedelta64(900, "s")
    trend = 7 + 0.8 * np.sin(np.arange(n) * 2 * np.pi / 96) + np.linspace(0, 0.5, n)
    x = np.round(trend + 0.03 * rng.standard_t(3, n), 2)
    config, notes = derive_config(pd.DataFrame({"ph": x}), times.view(np.int64))
    raw = config.parameters["ph"].model_dump()
    raw["detectors"]["forecast"]["threshold"] = 4.0  # the lowest threshold the calibration tries
    fixed = QCConfig.model_validate({"parameters": {"ph": raw}})
    flagged = {}
    for name, cfg in (("derived", config), ("fixed", fixed)):
        res = evaluate_site({"ph": x}, times, cfg).parameters["ph"]
        flagged[name] = np.isin(res.flag, (QartodFlag.SUSPECT, QartodFlag.FAIL)) | res.anomaly
    assert len(scoring.runs(flagged["fixed"])) > 6  # the noise would raise more than one alarm a week
    assert len(scoring.runs(flagged["derived"])) <= 6, notes  # the calibrated defaults keep to one a week


# ------------------------------------------------------------------------------------------------ tune
def labelled_csv(tmp_path: Path, days: int = 30) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(11)
    n = days * 96
    t = pd.date_range("2024-04-01", periods=n, freq="15min")
    do = 9 + 1.2 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.05, n)
    qual = np.full(n, "", dtype=object)
    for start in range(300, n - 50, 400):  # a fouling step every ~4 days, labelled by the technician
        do[start : start + 12] -= 2.5
        qual[start : start + 12] = "fouled"
    path = tmp_path / "site.csv"
    pd.DataFrame({"when": t, "do": np.round(do, 2), "do_qual": qual}).to_csv(path, index=False)
    return path, qual != ""


def test_label_mask_rule() -> None:
    got = label_mask(["", "0", "false", "NULL", "1", "fouled", None, float("nan"), "2"])
    assert got.tolist() == [False, False, False, False, True, True, False, False, True]


def test_tune_learns_from_the_past_and_beats_the_defaults(tmp_path: Path) -> None:
    path, truth = labelled_csv(tmp_path)
    frame = pd.read_csv(path)
    ns = pd.to_datetime(frame["when"]).to_numpy().astype("datetime64[ns]").view(np.int64)
    x = frame["do"].to_numpy(dtype=float)
    half = x.shape[0] // 2
    tuned = tune_parameter("do", x[:half], ns[:half], truth[:half])
    assert tuned.chosen, "something must be chosen when labels exist"
    assert tuned.cv.f1 > 0.8
    cfg = QCConfig(parameters={"do": tuned.config})
    res = evaluate_site({"do": x}, ns.view("datetime64[ns]"), cfg).parameters["do"]
    pred = np.isin(res.flag, (3, 4, 9)) | res.anomaly
    later = scoring.pyhydroqc(truth[half:], pred[half:])
    assert later.f1 > 0.9
    assert scoring.pointwise(truth[half:], pred[half:]).precision > 0.9


def test_tune_prefers_a_local_test_to_a_range_the_next_season_breaks() -> None:
    """Stage rising through a spring with single-reading drops (a probe pulled for cleaning), labelled; a gross
    range and a spike test fit those labels equally, but only the spike test still holds when the autumn low
    flow takes the stage below anything the spring saw."""
    rng = np.random.default_rng(3)
    days = 60
    n = days * 96
    ns = (np.arange(n, dtype=np.int64) * 900 + 1_700_000_000) * 1_000_000_000
    season = np.concatenate([np.linspace(40, 90, n // 2), np.linspace(90, 5, n - n // 2)])
    x = season + 0.5 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0, 0.05, n)
    truth = np.zeros(n, dtype=bool)
    for i in range(200, n, 600):
        x[i] = 2.0
        truth[i] = True
    half = n // 2
    tuned = tune_parameter("stage", x[:half], ns[:half], truth[:half])
    cfg = QCConfig(parameters={"stage": tuned.config})
    res = evaluate_site({"stage": x}, ns.view("datetime64[ns]"), cfg).parameters["stage"]
    pred = np.isin(res.flag, (3, 4, 9)) | res.anomaly
    later = scoring.pointwise(truth[half:], pred[half:])
    assert later.recall == 1.0
    assert later.fp <= 5, f"{later.fp} unlabelled readings flagged in the low-flow season by {tuned.notes}"


def test_tune_leaves_out_a_component_whose_alarms_are_mostly_unlabelled() -> None:
    """A component that touches every labelled stretch with one reading and runs on for hours past it scores
    PyHydroQC F1 1.0 (its groups hold a label) while 98 % of what it flags is unlabelled: the precision floor
    leaves it out; one that flags a share of the labelled readings and little else is taken."""
    n = 2000
    truth = np.zeros(n, dtype=bool)
    sloppy = np.zeros(n, dtype=bool)
    precise = np.zeros(n, dtype=bool)
    for a in range(100, n - 200, 400):
        truth[a : a + 50] = True
        sloppy[a + 49 : a + 110] = True
        precise[a + 10 : a + 30] = True
    precise[1990] = True
    folds = [Fold(truth.copy(), np.zeros(n, dtype=bool), [sloppy.copy(), precise.copy()]) for _ in range(3)]
    assert scoring.pyhydroqc(truth, sloppy).f1 == 1.0
    assert greedy(folds, ["detectors.forecast", "qartod.spike"], "pyhydroqc") == [1]
    assert greedy([Fold(truth, np.zeros(n, dtype=bool), [sloppy])], ["detectors.forecast"], "pyhydroqc") == []


def test_tune_backs_a_lone_range_with_a_robust_test() -> None:
    """A narrow range that fits the labels best is not left alone: the best robust test that costs at most
    MIN_GAIN on the folds joins it, to watch for what the range will not carry to the next season."""
    n = 1000
    truth = np.zeros(n, dtype=bool)
    truth[200:260] = True
    truth[600:660] = True
    narrow = truth.copy()
    local = np.zeros(n, dtype=bool)
    local[[200, 259, 600, 659, 900]] = True
    folds = [Fold(truth, np.zeros(n, dtype=bool), [narrow, local])]
    knobs = ["qartod.gross_range", "qartod.spike"]
    assert scoring.pyhydroqc(truth, local).f1 < 1.0
    assert greedy(folds, knobs, "pyhydroqc", [False, False]) == [0]
    assert greedy(folds, knobs, "pyhydroqc", [True, False]) == [0, 1]


def test_qc_tune_cli_writes_a_config_qc_and_the_service_accept(tmp_path: Path) -> None:
    path, _ = labelled_csv(tmp_path, days=20)
    out = tmp_path / "tuned.yaml"
    rc = cli.main(["qc", "tune", str(path), "--time-column", "when", "--labels", "{param}_qual", "--out", str(out)])
    assert rc == 0
    assert out.read_text(encoding="utf-8").startswith("# pilotwatch qc tune site.csv")
    config = load_config(out)
    assert list(config.parameters) == ["do"]
    check_streamable(ParameterQC.model_validate(config.parameters["do"].model_dump()), 86_400.0, "do")
    result = tmp_path / "qc.csv"
    args = ["qc", str(path), "--time-column", "when", "--config", str(out), "--out", str(result), "--quiet"]
    assert cli.main(args) == 0
    assert "do_label" in pd.read_csv(result).columns


def test_qc_tune_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = labelled_csv(tmp_path, days=5)
    base = ["qc", "tune", str(path), "--time-column", "when", "--out", str(tmp_path / "x.yaml")]
    assert cli.main(base) == 2
    assert "needs --labels" in capsys.readouterr().err
    assert cli.main([*base, "--labels", "{param}_flags"]) == 2
    assert "no column" in capsys.readouterr().err
    assert cli.main([*base, "--labels", "qual"]) == 2
    assert "{param}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ evidence
def test_episode_support_labels_whole_confirmed_episodes_as_events() -> None:
    n = 60
    times = np.arange(n, dtype=np.int64) * 900 * 1_000_000_000
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[10:20] = True  # an event: b follows a with a delay of five readings
    b[15:22] = True
    a[40:43] = True  # a alone later: a sensor fault
    support = episode_support({"a": a, "b": b}, times, 900.0)
    assert (support["a"][10:20] == 2).all()
    assert (support["a"][40:43] == 1).all()
    assert (support["a"][~a] == 0).all()
    flags = {p: np.where(np.zeros(n, dtype=bool), 4, 1).astype(np.uint8) for p in "ab"}
    kw = {"agreement_window": 900.0, "min_agree": 2}
    by_episode = label_site({}, flags, {"a": a, "b": b}, times, evidence="episode", **kw)
    by_point = label_site({}, flags, {"a": a, "b": b}, times, **kw)
    assert (by_episode["a"][10:20] == Label.EVENT).all()  # also the readings before b moved
    assert (by_point["a"][10:14] == Label.FAULT).all()  # reading by reading, they had no partner yet
    assert (by_episode["a"][40:43] == Label.FAULT).all()
    with pytest.raises(ValueError, match="evidence"):
        label_site({}, flags, {"a": a, "b": b}, times, evidence="vote")


def test_site_result_carries_support() -> None:
    n = 400
    times = np.datetime64("2024-01-01", "ns") + np.arange(n) * np.timedelta64(900, "s")
    rng = np.random.default_rng(2)
    cols = {p: 5 + rng.normal(0, 0.01, n) for p in ("x", "y", "z")}
    for p in ("x", "y"):
        cols[p][300] = 50.0
    cfg = QCConfig.model_validate(
        {
            "parameters": {
                p: {"qartod": {"spike": {"suspect_threshold": 1.0, "method": "differential"}}} for p in cols
            },
            "labels": {"evidence": "episode"},
        }
    )
    res = evaluate_site(cols, times, cfg)
    assert res.parameters["x"].support[300] == 2
    assert res.parameters["z"].support.max() == 0
    assert res.parameters["x"].label[300] == Label.EVENT
