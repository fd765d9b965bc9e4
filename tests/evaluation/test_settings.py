"""The evaluation's settings: the commented sample loads, and bad values are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from evaluation.bootstrap import BlockScheme
from evaluation.series import QCAcceptance
from evaluation.settings import EvaluationSettings

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "evaluation" / "evaluation.env.sample"


def test_the_sample_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for line in SAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines
    for line in lines:
        key, value = line.split("=", 1)
        monkeypatch.setenv(key, value)
    settings = EvaluationSettings()
    assert settings.qc is QCAcceptance.GOOD
    assert settings.scheme is BlockScheme.STATIONARY
    assert settings.bootstrap().replicates == 2000


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTWATCH_EVALUATION_QC", "anything")
    with pytest.raises(ValidationError, match="good_or_suspect"):
        EvaluationSettings()
    monkeypatch.delenv("PILOTWATCH_EVALUATION_QC")
    with pytest.raises(ValidationError, match="must start with http"):
        EvaluationSettings(influx={"url": "influx:8086"})
