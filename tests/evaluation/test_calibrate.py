"""``pilotwatch evaluate calibrate``: the simulated pilots run end to end and the last line has the fixed form."""

from __future__ import annotations

import re

import pytest

from commands.cli import main

LINE = re.compile(
    r"^calibration: coverage (?P<c>[01]\.\d{3}) \((?P<n>\d+) runs, 95 % intervals\) · false positives "
    r"(?P<p>[01]\.\d{3}) under no effect · naive t-test false positives (?P<q>[01]\.\d{3})$"
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["evaluate", "calibrate", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_calibrate_ends_with_the_parsable_line_and_repeats_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--runs", "2", "--seed", "5", "--workers", "1", "--replicates", "99")
    first = run(capsys, *args)
    match = LINE.match(first)
    assert match, first
    assert match["n"] == "2"
    assert 0.0 <= float(match["c"]) <= 1.0
    assert run(capsys, *args) == first  # same runs and seed, same figures


def test_calibrate_refuses_bad_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "calibrate", "--runs", "0", "--seed", "1"])
    assert "expected a number >= 1, got 0" in capsys.readouterr().err
