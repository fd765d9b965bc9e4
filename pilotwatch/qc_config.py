"""QC configuration models: what the ``qc:`` section of a sensor in the pilot manifest may say.

This module imports only pydantic and the standard library, so :mod:`pilotwatch.manifest` can import it
cheaply. The model for one sensor/parameter is :class:`ParameterQC`; a whole file for ``pilotwatch qc`` is
:class:`QCConfig`. Every model forbids unknown keys: an unknown test name, detector name or parameter is a
validation error whose location names it (ioos_qc only warns and skips the test).

Example (YAML)::

    qartod:
      gross_range: {fail_span: [0, 20], suspect_span: [2, 16]}
      spike: {suspect_threshold: 0.5, fail_threshold: 2.0}
      rate_of_change: {threshold: 0.002}
      flat_line: {suspect_threshold: 7200, fail_threshold: 21600, tolerance: 0.001}
      climatology:
        members:
          - {period: hour, tspan: [0, 23], vspan: [4, 14]}
    detectors:
      robust_z: {window: 24, threshold: 6}
      seasonal: {bins: 24}
      drift: {step: 900}

Parameter names and meanings are those of :mod:`analytics.qartod` and :mod:`analytics.detectors` (and, for
QARTOD, of ioos_qc). See docs/qc.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Span = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------ QARTOD
class GrossRange(_Strict):
    fail_span: Span
    suspect_span: Span | None = None

    @model_validator(mode="after")
    def _suspect_inside_fail(self) -> GrossRange:
        if self.suspect_span is not None:
            flo, fhi = sorted(self.fail_span)
            slo, shi = sorted(self.suspect_span)
            if slo < flo or shi > fhi:
                raise ValueError(f"suspect_span {self.suspect_span} must fall within fail_span {self.fail_span}")
        return self


Period = Literal["year", "quarter", "month", "week", "weekofyear", "dayofyear", "dayofweek", "day", "hour", "minute"]


class ClimatologyMember(_Strict):
    tspan: tuple[Any, Any] = Field(description="period units, or two datetimes when period is None")
    vspan: Span
    fspan: Span | None = None
    zspan: Span | None = None
    period: Period | None = None


class Climatology(_Strict):
    members: list[ClimatologyMember] = Field(min_length=1)


class Spike(_Strict):
    suspect_threshold: float | None = Field(default=None, gt=0)
    fail_threshold: float | None = Field(default=None, gt=0)
    method: Literal["average", "differential"] = "average"


class RateOfChange(_Strict):
    threshold: float = Field(ge=0, description="units per second")
    fail_threshold: float | None = Field(default=None, ge=0)


class FlatLine(_Strict):
    suspect_threshold: float = Field(gt=0, description="seconds")
    fail_threshold: float = Field(gt=0, description="seconds")
    tolerance: float = Field(default=0, ge=0)


class AttenuatedSignal(_Strict):
    suspect_threshold: float = Field(ge=0)
    fail_threshold: float = Field(ge=0)
    test_period: float | None = Field(default=None, gt=0, description="seconds")
    min_obs: int | None = Field(default=None, ge=0)
    min_period: float | None = Field(default=None, ge=0)
    check_type: Literal["std", "range"] = "std"

    @model_validator(mode="after")
    def _one_minimum(self) -> AttenuatedSignal:
        if self.min_obs is not None and self.min_period is not None:
            raise ValueError("give min_obs or min_period, not both")
        return self


class Neighbor(_Strict):
    reference: str = Field(description="the parameter (column) this one must agree with")
    suspect_threshold: float = Field(ge=0)
    fail_threshold: float | None = Field(default=None, ge=0)


class Qartod(_Strict):
    gross_range: GrossRange | None = None
    climatology: Climatology | None = None
    spike: Spike | None = None
    rate_of_change: RateOfChange | None = None
    flat_line: FlatLine | None = None
    attenuated_signal: AttenuatedSignal | None = None
    neighbor: Neighbor | None = None

    def configured(self) -> dict[str, BaseModel]:
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}


# ------------------------------------------------------------------------------------------------ detectors
class RobustZ(_Strict):
    window: int = Field(default=24, ge=3)
    grace_period: int = Field(default=24, ge=0)
    threshold: float = Field(default=8.0, gt=0)
    min_scale: float = Field(default=0.0, ge=0)


class Ewma(_Strict):
    alpha: float = Field(default=0.05, gt=0, le=1)
    grace_period: int = Field(default=32, ge=0)
    threshold: float = Field(default=6.0, gt=0)
    min_scale: float = Field(default=0.0, ge=0)


class Cusum(_Strict):
    alpha: float = Field(default=0.01, gt=0, le=1)
    k: float = Field(default=0.5, ge=0)
    h: float = Field(default=10.0, gt=0)
    grace_period: int = Field(default=96, ge=0)
    min_scale: float = Field(default=0.0, ge=0)


class Seasonal(_Strict):
    bins: int = Field(default=24, ge=1)
    alpha: float = Field(default=0.1, gt=0, le=1)
    grace_period: int = Field(default=28, ge=0, description="values learned in the bin before it scores")
    threshold: float = Field(default=6.0, gt=0)
    min_scale: float = Field(default=0.0, ge=0)


class Drift(_Strict):
    step: float = Field(default=900.0, gt=0, description="nominal sampling interval, seconds")
    fast_period: float = Field(default=86_400.0, gt=0)
    slow_period: float = Field(default=14 * 86_400.0, gt=0)
    threshold: float = Field(default=8.0, gt=0)
    collapse: float = Field(default=0.75, gt=0, le=1)
    grace_period: int = Field(default=3, ge=0, description="whole days before scoring")
    min_scale: float = Field(default=0.0, ge=0)


class Forecast(_Strict):
    """The model-based detector (:class:`analytics.detectors.SeasonalARDetector`); times in seconds."""

    step: float = Field(default=900.0, gt=0, description="nominal sampling interval, seconds")
    period: float = Field(default=86_400.0, ge=0, description="seasonal cycle, seconds (0: none)")
    order: int = Field(default=3, ge=1, le=12)
    memory: float = Field(default=2_000.0, ge=1, description="readings the refitted model remembers")
    scale_memory: float = Field(default=500.0, ge=1, description="readings the residual scale remembers")
    threshold: float = Field(default=6.0, gt=0, description="alarm, in residual scales")
    release: float = Field(default=0.5, gt=0, le=1, description="an episode closes under this share of the alarm")
    max_episode: float = Field(default=2 * 86_400.0, gt=0, description="seconds before a new level is accepted")
    max_gap: float = Field(default=3_600.0, ge=0, description="seconds of missing readings imputed")
    grace_period: int = Field(default=192, ge=0, description="readings learned before scoring")
    min_scale: float = Field(default=0.0, ge=0)


class Fouling(_Strict):
    """The fouling signature (:class:`analytics.detectors.FoulingDetector`): its alarm labels a reading fault."""

    step: float = Field(default=900.0, gt=0, description="nominal sampling interval, seconds")
    direction: Literal["low", "high"] = Field(
        default="low", description="where a fouled probe reads: low (DO, conductivity), high (optical turbidity)"
    )
    departure: float = Field(default=0.1, gt=0, le=1, description="share of the clean level that opens an episode")
    window: float = Field(default=3_600.0, gt=0, description="seconds (whole hours) the gain is taken over")
    min_descent: float = Field(default=6 * 3_600.0, ge=0, description="seconds the departure must have built up")
    max_step: float = Field(default=0.5, gt=0, description="largest hourly move of a slide, share of departure")
    release: float = Field(default=0.5, gt=0, le=1, description="the episode closes under this share of departure")
    memory_days: float = Field(default=7.0, ge=1, description="days the clean daily profile remembers")
    grace_period: int = Field(default=2, ge=1, description="days each hour of the profile learns before scoring")
    max_episode: float = Field(default=21 * 86_400.0, gt=0, description="seconds before a held level is accepted")


class Detectors(_Strict):
    robust_z: RobustZ | None = None
    ewma: Ewma | None = None
    cusum: Cusum | None = None
    seasonal: Seasonal | None = None
    drift: Drift | None = None
    forecast: Forecast | None = None
    fouling: Fouling | None = None

    def configured(self) -> dict[str, BaseModel]:
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}


class ParameterQC(_Strict):
    """QC of one parameter of one sensor: the ``qc:`` section of a sensor in the manifest."""

    qartod: Qartod = Field(default_factory=Qartod)
    detectors: Detectors = Field(default_factory=Detectors)


class Labels(_Strict):
    """How anomalies are told apart: fault (the sensor) or event (the water)."""

    agreement_window: float = Field(default=3 * 3600.0, gt=0, description="seconds either side")
    min_agree: int = Field(default=2, ge=2, description="parameters anomalous together for an event")
    evidence: Literal["point", "episode"] = Field(
        default="point", description="agreement reading by reading, or over whole episodes (analytics.labels)"
    )


class QCConfig(_Strict):
    """A whole QC configuration (``pilotwatch qc --config``): parameters by column name, plus labelling."""

    parameters: dict[str, ParameterQC]
    labels: Labels = Field(default_factory=Labels)
