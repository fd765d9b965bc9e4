"""The fouling signature (:class:`analytics.detectors.FoulingDetector`) under the manifest's QC, as the live
service runs it: a fouled dissolved-oxygen probe is labelled fault over its fouled stretch, a real oxygen crash of
the same depth (a sewage discharge: conductivity and turbidity rise with it) stays an event, the detector's
streaming, chunked and restored runs equal its batch run, and its arguments are checked.

The site is synthetic (12 days of 5-minute readings at a Bangkok water site's probes, seeded): a daily oxygen
cycle from photosynthesis, day-to-day weather (a few per cent), sensor noise.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from analytics import fouling as kernel
from analytics.detectors import FoulingDetector
from analytics.labels import Label
from analytics.pipeline import evaluate_site
from analytics.service import sensor_qc
from pilotwatch.manifest import Manifest
from pilotwatch.qc_config import QCConfig
from pilotwatch.schema import QartodFlag
from tests.analytics import naive

SEED = 11
STEP_S = 300
DAYS = 12
PER_DAY = 86_400 // STEP_S
FOUL = (5 * PER_DAY, 9 * PER_DAY)  # fouling grows from day 5 to 50 % at day 9, when the probe is cleaned
CRASH = (6 * PER_DAY + 150, 6 * PER_DAY + 210)  # a 5-hour discharge on day 6, 12:30-17:30 UTC
DEPTH = 0.5  # the crash takes half the oxygen: the depth the fouling reaches


def site(*, fouled: bool, crash: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    n = DAYS * PER_DAY
    t = np.datetime64("2026-03-02", "ns") + np.arange(n) * np.timedelta64(STEP_S, "s")
    hour = (np.arange(n) * STEP_S / 3600.0) % 24
    weather = np.repeat(rng.normal(0.0, 0.03, DAYS), PER_DAY)
    photo = np.sin(2 * np.pi * (hour - 8.0) / 24.0)
    do = 5.0 * (1 + 0.3 * photo + weather)
    ec = 800.0 * (1 + 0.5 * weather)
    turb = 30.0 * (1 + 2 * weather)
    temp = 29.0 + 1.3 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    if crash:
        a, b = CRASH
        envelope = np.clip(np.arange(b - a) / 4.0, 0.0, 1.0)  # a 20-minute ramp, then the full load
        do[a:b] *= 1 - DEPTH * envelope
        ec[a:b] *= 1 + 0.5 * envelope
        turb[a:b] *= 1 + 2.5 * envelope
    do += rng.normal(0, 0.05, n)
    ec += rng.normal(0, 5.0, n)
    turb += rng.normal(0, 0.8, n)
    temp += rng.normal(0, 0.05, n)
    if fouled:
        a, b = FOUL
        do[a:b] *= 1 - DEPTH * np.arange(b - a) / (b - a)
    return t, {"temp": np.round(temp, 2), "do": np.round(do, 2), "ec": np.round(ec, 1), "turb": np.round(turb, 1)}


def run(manifest: Manifest, t: np.ndarray, columns: dict[str, np.ndarray], *, fouling: bool = True):  # type: ignore[no-untyped-def]
    """The manifest's QC for these probes (``fouling=False``: the same without the fouling signature)."""
    device = manifest.device_index()["bkk-pratunam-wq1"].device
    qc = {s.id: sensor_qc(s) for s in device.sensors if s.id in columns}
    assert qc["do"].detectors.fouling is not None, "the default manifest runs the fouling signature on DO"
    if not fouling:
        qc = {
            k: q.model_copy(update={"detectors": q.detectors.model_copy(update={"fouling": None})})
            for k, q in qc.items()
        }
    kinds = {s.id: s.param.value for s in device.sensors if s.id in columns}
    return evaluate_site(columns, t, QCConfig(parameters=qc), kinds=kinds, site_kind="water").parameters


def test_a_fouled_oxygen_probe_is_labelled_fault_over_its_fouled_stretch(manifest: Manifest) -> None:
    t, columns = site(fouled=True, crash=False)
    do = run(manifest, t, columns)["do"]
    fouling = do.tests["fouling"]
    a, b = FOUL
    flagged = np.flatnonzero(fouling == QartodFlag.SUSPECT)
    assert flagged.size, "the fouled probe was never flagged"
    # flagged only inside the fouled stretch, and no later than the first reading an hour after the cleaning
    assert flagged.min() >= a
    assert flagged.max() <= b + 3600 // STEP_S
    # from 20 % attenuation on (day 6.6) to the cleaning, every reading is SUSPECT and labelled fault
    deep = slice(a + round(0.4 * (b - a)), b)
    assert (fouling[deep] == QartodFlag.SUSPECT).all()
    assert (do.flag[deep] == QartodFlag.SUSPECT).all()
    assert (do.label[deep] == Label.FAULT).all()
    # opened while the error was still small: before 25 % attenuation (a limit alert needs a QC-good reading)
    assert flagged.min() < a + round(0.5 * (b - a))
    # after the cleaning the probe is trusted again
    assert (do.label[b + 3600 // STEP_S :] != Label.FAULT).mean() > 0.99


def test_a_real_oxygen_crash_of_the_same_depth_stays_an_event(manifest: Manifest) -> None:
    t, columns = site(fouled=False, crash=True)
    result = run(manifest, t, columns)
    do = result["do"]
    a, b = CRASH
    assert (do.tests["fouling"] != QartodFlag.SUSPECT).all(), "a crash within the hour is no film"
    during = do.label[a : b + 24]
    assert (during == Label.EVENT).sum() >= 5, "the crash is anomalous and labelled event"
    # the signature adds no fault label anywhere: every label is what the rest of the QC gives without it
    without = run(manifest, t, columns, fouling=False)
    for name, r in result.items():
        np.testing.assert_array_equal(r.label, without[name].label, err_msg=name)
    # and the clean probe is never called fouled, on any parameter
    for name, r in result.items():
        if "fouling" in r.tests:
            assert (r.tests["fouling"] != QartodFlag.SUSPECT).all(), name


def test_a_crash_inside_a_fouled_stretch_does_not_hide_the_fouling(manifest: Manifest) -> None:
    t, columns = site(fouled=True, crash=True)
    do = run(manifest, t, columns)["do"]
    a, b = FOUL
    assert (do.label[a + round(0.4 * (b - a)) : b] == Label.FAULT).all()


def make() -> FoulingDetector:
    return FoulingDetector(step=STEP_S, departure=0.15, min_descent=12 * 3600)


def test_streaming_chunked_and_restored_equal_batch() -> None:
    t, columns = site(fouled=True, crash=True)
    x = columns["do"].copy()
    x[np.random.default_rng(SEED).random(x.shape[0]) < 0.02] = np.nan
    x[2000:2030] = np.nan  # a gap of 2.5 hours
    batch = make().score_many(x, t)
    assert (batch >= 1).sum() > PER_DAY, "the series must exercise an episode"
    d = make()
    stream = []
    for v, ti in zip(x, t, strict=True):
        stream.append(d.score_one(v, ti))
        d.learn_one(v, ti)
    np.testing.assert_array_equal(batch, np.array(stream))
    d = make()
    parts = []
    for lo, hi in [(0, 1000), (1000, 1007), (1007, 2300), (2300, x.shape[0])]:
        parts.append(d.score_many(x[lo:hi], t[lo:hi]))
        # a restart between chunks: a JSON checkpoint or a pickle
        d = (
            FoulingDetector.from_state(json.loads(json.dumps(d.state_dict())))
            if lo % 2
            else pickle.loads(pickle.dumps(d))
        )
    np.testing.assert_array_equal(batch, np.concatenate(parts))


@pytest.mark.parametrize("direction", ["low", "high"])
def test_kernel_equals_the_naive_reference(direction: str) -> None:
    t, columns = site(fouled=True, crash=True)
    x = columns["do"] if direction == "low" else 60.0 - columns["do"] * 4  # a probe that fouls upwards
    x = x.copy()
    rng = np.random.default_rng(SEED)
    x[rng.random(x.shape[0]) < 0.05] = np.nan
    x[1500:1560] = np.nan  # a five-hour gap
    x[2400:2410] = x[2400] * 1.5  # a jump held under an hour
    d = FoulingDetector(step=STEP_S, direction=direction, departure=0.15, min_descent=6 * 3600, max_episode=2 * 86_400)
    ours = d.score_many(x, t)
    assert (ours >= 1).any()
    reference = naive.fouling(
        x.tolist(),
        t.view(np.int64).tolist(),
        sign=-1.0 if direction == "low" else 1.0,
        departure=0.15,
        min_descent_h=6,
        max_step=0.5,
        release=0.5,
        alpha=1 / 7,
        grace=2,
        max_episode_h=48,
        min_per_hour=6,
        max_excursion_h=kernel.MAX_EXCURSION_H,
        max_apart_h=kernel.MAX_APART_H,
        slid_share=kernel.SLID_SHARE,
    )
    np.testing.assert_array_equal(ours, np.array(reference))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"direction": "sideways"}, "direction must be one of ['low', 'high']"),
        ({"window": 1800}, "window must be a whole number of hours"),
        ({"departure": 0}, "departure must be in (0, 1]"),
        ({"memory_days": 0.5}, "memory_days must be at least 1"),
        ({"grace_period": 0}, "grace_period must be a whole number >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        FoulingDetector(**kwargs)  # type: ignore[arg-type]
