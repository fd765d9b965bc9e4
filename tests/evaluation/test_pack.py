"""The evidence pack end to end from data stored in a real InfluxDB: CLI, files, checksums, content, and the
report opened in headless Chromium."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from playwright.sync_api import sync_playwright

from commands.cli import main
from pilotwatch.manifest import parse_manifest
from tests.evaluation.conftest import LATE_SERIES, TRUE_DO_EFFECT, EvaluationStore

CHROMIUM = "/usr/bin/chromium"
REQUIRED = {
    "site",
    "parameter",
    "quantity",
    "estimate",
    "low",
    "high",
    "method",
    "n",
    "coverage_baseline",
    "coverage_intervention",
    "low_coverage",
}


@pytest.fixture(scope="module")
def pack(evaluation_store: EvaluationStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "bangkok"
    status = main(
        [
            "--manifest",
            str(evaluation_store.manifest_path),
            "--home",
            str(out.parent / "home"),
            "evaluate",
            "report",
            "--city",
            "bangkok",
            "--out",
            str(out),
            "--replicates",
            "99",
            "--influx-url",
            evaluation_store.influx_url,
            "--database",
            evaluation_store.database,
        ]
    )
    assert status == 0
    return out


def test_pack_holds_every_file_and_sha256sum_checks_it(pack: Path) -> None:
    names = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    for required in (
        "report.html",
        "summary.json",
        "manifest.yaml",
        "METHODS.md",
        "SHA256SUMS",
        "data/readings.csv",
        "data/readings.parquet",
        "data/hourly.csv",
        "data/baci_daily.parquet",
        "data/coverage_daily.csv",
        "data/compliance.csv",
    ):
        assert required in names
    listed = {line.split("  ", 1)[1] for line in (pack / "SHA256SUMS").read_text().splitlines()}
    assert listed == names - {"SHA256SUMS"}
    ok = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], check=False, cwd=pack, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_changed_file_fails_the_check(pack: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(pack), str(copy)], check=True)
    (copy / "METHODS.md").write_text((copy / "METHODS.md").read_text() + "\nedited\n")
    bad = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], check=False, cwd=copy, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "METHODS.md: FAILED" in bad.stdout


def test_summary_estimates_the_simulated_effect_with_coverage(pack: Path) -> None:
    summary = json.loads((pack / "summary.json").read_text())
    estimates = summary["estimates"]
    assert all(set(r) >= REQUIRED for r in estimates)
    do = {r["quantity"]: r for r in estimates if r["site"] == "bkk-pratunam-pier" and r["parameter"] == "do"}
    baci = do["baci_relative"]
    assert baci["control_site"] == "bkk-asok-pier"
    assert baci["low"] <= TRUE_DO_EFFECT <= baci["high"]
    assert baci["low"] > 0  # the effect is found
    assert "Politis-White" in baci["method"]
    assert baci["block_length_days"] >= 1
    assert baci["coverage_baseline"] > 0.9
    assert not baci["low_coverage"]
    for name in (
        "mean_difference",
        "median_difference",
        "relative_change",
        "hodges_lehmann_shift",
        "ols_hac_difference",
        "baci_difference",
        "baci_interaction_hac",
        "exceedance_share_difference",
    ):
        assert name in do
    # The control site has no effect to find: its before/after relative change of DO is small.
    control = next(
        r
        for r in estimates
        if r["site"] == "bkk-asok-pier" and r["parameter"] == "do" and r["quantity"] == "relative_change"
    )
    assert abs(control["estimate"]) < 0.1
    compliance = [c for c in summary["compliance"] if c["parameter"] == "do"]
    assert {c["statistic"] for c in compliance} == {"p20"}  # the Thai standard's DO floor
    assert summary["qc_flags_used"] == [1]


def test_only_qc_good_readings_enter_an_estimate(pack: Path, evaluation_store: EvaluationStore) -> None:
    readings = pd.read_csv(pack / "data" / "readings.csv", comment="#")
    assert {"time", "site", "device", "sensor", "param", "value", "qc_flag", "used", "period"} <= set(readings)
    assert set(readings.loc[readings["used"], "qc_flag"]) == {1}
    assert (readings["qc_flag"] != 1).any()  # QC did flag something, so the filter was exercised
    # Readings QC'd late by analytics' reconciliation say so; the flag itself counts as any other.
    site, device, sensor = LATE_SERIES
    assert set(readings.loc[readings["qc_late"] == 1, "site"]) == {site}
    times = (pd.to_datetime(readings["time"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    marked = readings["qc_late"] == 1
    assert set(times[marked]) == set(evaluation_store.late)
    assert set(readings.loc[marked, "device"]) == {device}
    assert set(readings.loc[marked, "sensor"]) == {sensor}
    do = readings[(readings["site"] == "bkk-pratunam-pier") & (readings["param"] == "do")]
    used = int((do["used"] & do["period"].isin(["baseline", "intervention"])).sum())
    summary = json.loads((pack / "summary.json").read_text())
    n = next(
        r["n"]
        for r in summary["estimates"]
        if r["site"] == "bkk-pratunam-pier" and r["parameter"] == "do" and r["quantity"] == "mean_difference"
    )
    assert n == used


def test_data_files_carry_provenance(pack: Path, evaluation_store: EvaluationStore) -> None:
    head = (pack / "data" / "readings.csv").read_text().splitlines()[:10]
    assert any(line.startswith("# source: InfluxDB") for line in head)
    assert any(line.startswith("# manifest sha256: ") for line in head)
    meta = pq.read_schema(pack / "data" / "readings.parquet").metadata
    assert b"manifest sha256" in meta[b"pilotwatch.provenance"]
    frame = pq.read_table(pack / "data" / "readings.parquet").to_pandas()
    assert len(frame) == len(pd.read_csv(pack / "data" / "readings.csv", comment="#"))
    manifest = parse_manifest(yaml.safe_load((pack / "manifest.yaml").read_text()), "pack manifest.yaml")
    assert manifest == evaluation_store.manifest


def test_report_opens_in_headless_chromium_with_figures(pack: Path, tmp_path: Path) -> None:
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith(("file:", "data:")) else None
        )
        page.goto((pack / "report.html").as_uri())
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
        figure = page.locator("figure img").first
        shot = figure.screenshot()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    alts = [a for a, _, _ in images]
    assert len(images) >= 8
    assert all(w > 200 and h > 100 for _, w, h in images)
    for wanted in ("do: series", "do: before/after", "BACI", "coverage calendar"):
        assert any(wanted in a for a in alts), alts
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert pixels.shape[1] > 200
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50  # lines, shading and text were drawn, not a blank box
