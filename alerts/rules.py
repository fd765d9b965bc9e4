"""Alert rules, derived from the pilot manifest: what each rule watches and what one observation says.

In: the manifest (sites, their kind and limit sets, devices and sensors) and :class:`RuleConfig` (durations and
thresholds; defaults suit 300 s / 900 s sensors). Out: :func:`rules_from_manifest` → a list of :class:`Rule`,
each with an evaluator that turns the points of one series at one sample time into an
:class:`~alerts.machine.Observation`. Nothing about a site is typed here: a limit rule exists because a site
names a limit set, a pollution rule because a site is water or effluent, a bin rule because a sensor measures
fill.

QC gate (:func:`usable_for_city`): a reading whose aggregate flag is FAIL or MISSING, or whose label is
``fault`` or ``missing`` (the analytics core's verdict: the sensor, not the water), is UNUSABLE for
``limit_exceedance`` and ``pollution`` — it can neither raise nor clear them. The same reading is what the
``device`` rules look for.

Evaluators may keep a window of history (a rolling percentile, a fill-rate fit): they see every point of their
series once, in sample-time order, and ``context_ms`` says how far back the engine must replay after a restart.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerts.machine import Condition, Observation, Timing
from pilotwatch.alerting import Severity
from pilotwatch.manifest import AlertKind, LimitStatistic, Manifest, Parameter, ParameterLimit, SiteKind
from pilotwatch.schema import QartodFlag

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class Label(enum.StrEnum):
    """The analytics core's label of a reading, as stored in the ``qc`` measurement's ``label`` field."""

    GOOD = "good"
    FAULT = "fault"
    EVENT = "event"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Point:
    """One reading with the analytics core's verdict on it (``reading`` joined with ``qc``)."""

    city: str
    site: str
    device: str
    sensor: str
    param: str
    t_ms: int
    value: float
    flag: int = int(QartodFlag.UNKNOWN)
    label: str = Label.GOOD
    anomaly_score: float = 0.0
    arrival_ms: int | None = None
    """When the reading reached the engine, where known (the backtest replays in arrival order)."""

    def ref(self) -> dict[str, object]:
        """How the alert cites this reading (docs/alerts.md, ``body.readings``)."""
        return {
            "device": self.device,
            "sensor": self.sensor,
            "param": self.param,
            "t_ms": self.t_ms,
            "value": self.value,
            "flag": self.flag,
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class Status:
    """One ``device_status`` point."""

    city: str
    site: str
    device: str
    t_ms: int
    battery_pct: float | None = None
    buffer_depth: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One ``delivery`` point: ingest's view of a device, stamped with ingest's clock (not the device's)."""

    city: str
    site: str
    device: str
    t_ms: int
    """When ingest published it (ingest's clock)."""
    last_seen_ms: int | None = None
    """When ingest last stored a message from the device (ingest's clock)."""
    clock_offset_ms: int | None = None
    """The device clock minus ingest's (ingest.clock: a lower bound, short by the fastest transit)."""
    clock_checked_ms: int | None = None
    """When ingest last measured the clock: the device was heard then, even if that message was refused."""

    @property
    def heard_ms(self) -> int | None:
        """When ingest last received anything from the device: what silence is judged on."""
        times = [t for t in (self.last_seen_ms, self.clock_checked_ms) if t is not None]
        return max(times) if times else None


def usable_for_city(p: Point) -> bool:
    """The QC gate of ``limit_exceedance`` and ``pollution`` (module docstring)."""
    if p.flag in (QartodFlag.FAIL, QartodFlag.MISSING) or not math.isfinite(p.value):
        return False
    return p.label not in (Label.FAULT, Label.MISSING)


class RuleConfig(BaseModel):
    """Durations (seconds) and thresholds of the rules; every value has a default (docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit_for_s: float = Field(default=900.0, ge=0, description="a sample limit exceeded this long fires")
    limit_clear_for_s: float = Field(default=1800.0, ge=0, description="back inside the clear band this long")
    limit_hysteresis: float = Field(default=0.05, ge=0, lt=1, description="clear band, share of the limit")
    limit_guard_band: float = Field(
        default=0.02,
        ge=0,
        lt=1,
        description="decision rule: a reading exceeds only when beyond the limit by this share of it (the "
        "measurement uncertainty of a field probe; ILAC-G8's guarded acceptance)",
    )
    rolling_window_days: float = Field(
        default=30.0, gt=0, description="window of p20/p80/mean/geomean limits (the standards name no period)"
    )
    rolling_min_days: float = Field(default=1.0, gt=0, description="data needed before a rolling statistic counts")
    pollution_for_s: float = Field(default=300.0, ge=0)
    pollution_clear_for_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="no event label this long ends the episode: a discharge lasts up to 6 h and the detectors adapt "
        "to its level within 2 h, so its middle readings look normal; a shorter period splits one discharge in two",
    )
    fault_for_s: float = Field(default=1800.0, ge=0, description="a sensor labelled fault this long")
    fault_clear_for_s: float = Field(default=7200.0, ge=0)
    silent_after_s: float = Field(default=1200.0, gt=0, description="no reading for this long: silent")
    battery_low_pct: float = Field(default=20.0, ge=0, le=100)
    battery_ok_pct: float = Field(default=30.0, ge=0, le=100)
    buffer_high: int = Field(default=5000, ge=1, description="readings held on the device")
    buffer_ok: int = Field(default=500, ge=0)
    clock_off_s: float = Field(
        default=120.0,
        gt=0,
        description="device clock this far from ingest's, either way (ingest's clock_jump_s calls a sample this far "
        "after its message's send time a clock jump)",
    )
    clock_ok_s: float = Field(default=60.0, ge=0, description="clear band: back within this")
    clock_for_s: float = Field(
        default=600.0,
        ge=0,
        description="off this long (ingest time) fires: longer than a broker backlog after an ingest restart "
        "takes to drain, so delayed messages cannot pass for a clock that is behind",
    )
    clock_clear_for_s: float = Field(default=300.0, ge=0)
    bin_full_pct: float = Field(default=90.0, gt=0, le=100)
    bin_clear_pct: float = Field(default=80.0, gt=0, le=100)
    bin_for_s: float = Field(default=900.0, ge=0)
    bin_forecast_h: float = Field(default=3.0, gt=0, description="alert when predicted full within this")
    bin_fit_window_s: float = Field(default=7200.0, gt=0, description="fill readings the rate is fitted on")
    max_gap_s: float = Field(default=3600.0, gt=0, description="evidence further apart restarts the timers")

    @model_validator(mode="after")
    def _clock_band(self) -> RuleConfig:
        if self.clock_ok_s > self.clock_off_s:
            raise ValueError(
                f"clock_ok_s ({self.clock_ok_s:g}) must be at most clock_off_s ({self.clock_off_s:g}): "
                "a clock clears inside the offset that raises the alert"
            )
        return self


SeriesKey = str
"""A rule's series, ``|``-joined tags: ``city|site`` (pollution), ``city|site|device`` (device health) or
``city|site|device|sensor`` (one sensor)."""


class Evaluator(Protocol):
    @property
    def context_ms(self) -> int:
        """History (ms) the evaluator needs replayed after a restart."""
        ...

    def series(self, p: Point) -> SeriesKey | None:
        """The series a point belongs to under this rule; None: the rule does not look at it."""
        ...

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        """The observation of one series at one sample time (``points`` all share it)."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: AlertKind
    severity: Severity
    timing: Timing
    title: str
    evaluator: Evaluator | None = None  # None: observations come from the engine (silence) or status points
    detail: dict[str, object] = field(default_factory=dict)


def sensor_series(p: Point) -> SeriesKey:
    return f"{p.city}|{p.site}|{p.device}|{p.sensor}"


# ------------------------------------------------------------------------------------------------ limits
def _band(limit: ParameterLimit, fraction: float) -> tuple[float | None, float | None]:
    """The clear thresholds: inside the limit by ``fraction`` of it (a floor of 0 gets a band of 0)."""
    low = None if limit.min is None else limit.min + fraction * abs(limit.min)
    high = None if limit.max is None else limit.max - fraction * abs(limit.max)
    return low, high


def limit_condition(value: float, limit: ParameterLimit, fraction: float, guard: float = 0.0) -> Condition:
    """TRIGGER beyond the limit by more than ``guard`` of it; CLEAR inside it by ``fraction``; HOLD between."""
    low_clear, high_clear = _band(limit, fraction)
    low_trigger, high_trigger = _band(limit, -guard)
    if (low_trigger is not None and value < low_trigger) or (high_trigger is not None and value > high_trigger):
        return Condition.TRIGGER
    if (low_clear is not None and value < low_clear) or (high_clear is not None and value > high_clear):
        return Condition.HOLD
    return Condition.CLEAR


@dataclass
class SampleLimit:
    """Each QC-usable reading against the limit (the ``sample`` statistic)."""

    sites: frozenset[str]
    param: str
    limit: ParameterLimit
    hysteresis: float
    guard: float
    context_ms: int = 0

    def series(self, p: Point) -> SeriesKey | None:
        return sensor_series(p) if p.site in self.sites and p.param == self.param else None

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        p = points[0]
        if not usable_for_city(p):
            return Observation(p.t_ms, Condition.UNUSABLE, p.value)
        return Observation(p.t_ms, limit_condition(p.value, self.limit, self.hysteresis, self.guard), p.value)


def rolling_statistic(statistic: LimitStatistic, ordered: Sequence[float], total: float, log_total: float) -> float:
    n = len(ordered)
    if statistic is LimitStatistic.MEAN:
        return total / n
    if statistic is LimitStatistic.GEOMEAN:
        return math.exp(log_total / n)
    q = 0.2 if statistic is LimitStatistic.P20 else 0.8
    pos = q * (n - 1)  # linear interpolation between order statistics (numpy's default percentile)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class _Window:
    times: deque[tuple[int, float]] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)
    total: float = 0.0
    log_total: float = 0.0
    last_ms: int = -(2**62)


@dataclass
class RollingLimit:
    """A percentile, mean or geometric mean of the QC-usable readings over a trailing window, against the limit."""

    sites: frozenset[str]
    param: str
    limit: ParameterLimit
    statistic: LimitStatistic
    hysteresis: float
    guard: float
    window_ms: int
    min_span_ms: int
    windows: dict[SeriesKey, _Window] = field(default_factory=dict)

    @property
    def context_ms(self) -> int:
        return self.window_ms

    def series(self, p: Point) -> SeriesKey | None:
        return sensor_series(p) if p.site in self.sites and p.param == self.param else None

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        p = points[0]
        w = self.windows.setdefault(series, _Window())
        if not usable_for_city(p) or p.t_ms <= w.last_ms:
            return Observation(p.t_ms, Condition.UNUSABLE, p.value)
        w.last_ms = p.t_ms
        w.times.append((p.t_ms, p.value))
        bisect.insort(w.ordered, p.value)
        w.total += p.value
        w.log_total += math.log(max(p.value, 1e-12))
        while w.times and w.times[0][0] <= p.t_ms - self.window_ms:
            _, old = w.times.popleft()
            del w.ordered[bisect.bisect_left(w.ordered, old)]
            w.total -= old
            w.log_total -= math.log(max(old, 1e-12))
        if p.t_ms - w.times[0][0] < self.min_span_ms:
            return Observation(p.t_ms, Condition.UNUSABLE, p.value)
        stat = rolling_statistic(self.statistic, w.ordered, w.total, w.log_total)
        return Observation(p.t_ms, limit_condition(stat, self.limit, self.hysteresis, self.guard), stat)


# ------------------------------------------------------------------------------------------------ pollution
@dataclass
class Pollution:
    """A site's readings labelled ``event`` by the analytics core (the label already demands a physically
    coherent pattern over several parameters: a discharge moving colour, conductivity and pH together at an
    effluent site). TRIGGER: some QC-usable reading of the site at this time is an event; CLEAR: every usable
    one is good."""

    sites: frozenset[str]
    context_ms: int = 0

    def series(self, p: Point) -> SeriesKey | None:
        return f"{p.city}|{p.site}" if p.site in self.sites else None

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        usable = [p for p in points if usable_for_city(p)]
        t = points[0].t_ms
        if not usable:
            return Observation(t, Condition.UNUSABLE)
        events = [p for p in usable if p.label == Label.EVENT]
        if events:
            return Observation(t, Condition.TRIGGER, max(p.anomaly_score for p in events))
        return Observation(t, Condition.CLEAR)


# ------------------------------------------------------------------------------------------------ device
@dataclass
class SensorFault:
    """A sensor whose readings the analytics core labels ``fault`` (stuck, drifting, fouled, impossible)."""

    context_ms: int = 0

    def series(self, p: Point) -> SeriesKey | None:
        return sensor_series(p)

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        p = points[0]
        if p.label == Label.FAULT or p.flag == QartodFlag.FAIL:
            return Observation(p.t_ms, Condition.TRIGGER, p.value)
        if p.label == Label.MISSING or not math.isfinite(p.value):
            return Observation(p.t_ms, Condition.UNUSABLE)
        return Observation(p.t_ms, Condition.CLEAR, p.value)


# ------------------------------------------------------------------------------------------------ bins
@dataclass
class BinFill:
    full_pct: float
    clear_pct: float
    context_ms: int = 0

    def series(self, p: Point) -> SeriesKey | None:
        return sensor_series(p) if p.param == Parameter.FILL else None

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:
        p = points[0]
        if p.flag in (QartodFlag.FAIL, QartodFlag.MISSING) or not math.isfinite(p.value):
            return Observation(p.t_ms, Condition.UNUSABLE)
        if p.value >= self.full_pct:
            return Observation(p.t_ms, Condition.TRIGGER, p.value)
        return Observation(p.t_ms, Condition.CLEAR if p.value < self.clear_pct else Condition.HOLD, p.value)


@dataclass
class BinForecast:
    """Fill rate by least squares over the last ``fit_ms``; TRIGGER when the bin is predicted full within
    ``horizon_ms`` (and not already past ``full_pct``, which :class:`BinFill` covers)."""

    full_pct: float
    horizon_ms: int
    fit_ms: int
    history: dict[SeriesKey, deque[tuple[int, float]]] = field(default_factory=dict)

    @property
    def context_ms(self) -> int:
        return self.fit_ms

    def series(self, p: Point) -> SeriesKey | None:
        return sensor_series(p) if p.param == Parameter.FILL else None

    def observe(self, series: SeriesKey, points: Sequence[Point]) -> Observation:  # noqa: PLR0911  # one return per case
        p = points[0]
        h = self.history.setdefault(series, deque())
        if p.flag in (QartodFlag.FAIL, QartodFlag.MISSING) or not math.isfinite(p.value):
            return Observation(p.t_ms, Condition.UNUSABLE)
        if h and p.t_ms <= h[-1][0]:
            return Observation(p.t_ms, Condition.UNUSABLE)
        if h and p.value < h[-1][1] - 20.0:
            h.clear()  # emptied: the rate before a collection says nothing about after it
        h.append((p.t_ms, p.value))
        while h and h[0][0] < p.t_ms - self.fit_ms:
            h.popleft()
        if len(h) < 3:
            return Observation(p.t_ms, Condition.UNUSABLE)
        n = len(h)
        mt = sum(t for t, _ in h) / n
        mv = sum(v for _, v in h) / n
        var = sum((t - mt) ** 2 for t, _ in h)
        slope = sum((t - mt) * (v - mv) for t, v in h) / var if var > 0 else 0.0  # % per ms
        if p.value >= self.full_pct:
            return Observation(p.t_ms, Condition.HOLD, p.value)
        if slope <= 0:
            return Observation(p.t_ms, Condition.CLEAR, p.value)
        eta_ms = (100.0 - p.value) / slope
        if eta_ms <= self.horizon_ms:
            return Observation(p.t_ms, Condition.TRIGGER, eta_ms / HOUR_MS)
        return Observation(p.t_ms, Condition.CLEAR if eta_ms > 2 * self.horizon_ms else Condition.HOLD, p.value)


# ------------------------------------------------------------------------------------------------ the rule set
class RuleId(enum.StrEnum):
    """Rule ids that are not per limit (limit rules are ``limit:<limit set>:<parameter>``)."""

    POLLUTION = "pollution"
    SENSOR_FAULT = "device.sensor_fault"
    DEVICE_SILENT = "device.silent"
    SENSOR_SILENT = "device.sensor_silent"
    BATTERY_LOW = "device.battery_low"
    BUFFER_HIGH = "device.buffer_high"
    CLOCK_OFF = "device.clock_off"
    BIN_FULL = "bin.full"
    BIN_FORECAST = "bin.forecast"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def clock_condition(offset_ms: int, config: RuleConfig) -> Condition:
    """TRIGGER beyond ``clock_off_s`` either way, CLEAR within ``clock_ok_s``, HOLD between (hysteresis)."""
    off = abs(offset_ms) / 1000
    if off > config.clock_off_s:
        return Condition.TRIGGER
    return Condition.CLEAR if off <= config.clock_ok_s else Condition.HOLD


def rules_from_manifest(manifest: Manifest, config: RuleConfig | None = None) -> list[Rule]:
    """Every rule the manifest implies (module docstring); fresh evaluator state each call."""
    c = config or RuleConfig()
    gap = _ms(c.max_gap_s)
    rules: list[Rule] = []
    sites_of_set: dict[str, set[str]] = {}
    for _, site in manifest.iter_sites():
        for name in site.limits:
            sites_of_set.setdefault(name, set()).add(site.id)
    limit_timing = Timing(_ms(c.limit_for_s), _ms(c.limit_clear_for_s), gap)
    for name, sites in sorted(sites_of_set.items()):
        limit_set = manifest.limits[name]
        for param, limit in limit_set.parameters.items():
            detail: dict[str, object] = {
                "limit_set": name,
                "standard": limit_set.standard,
                "citation": limit_set.citation,
                "param": param.value,
                "min": limit.min,
                "max": limit.max,
                "statistic": limit.statistic.value,
                "confirmed": limit.confirmed,
            }
            evaluator: Evaluator
            if limit.statistic is LimitStatistic.SAMPLE:
                evaluator = SampleLimit(frozenset(sites), param.value, limit, c.limit_hysteresis, c.limit_guard_band)
                detail["min_duration_s"] = c.limit_for_s
            else:
                evaluator = RollingLimit(
                    frozenset(sites),
                    param.value,
                    limit,
                    limit.statistic,
                    c.limit_hysteresis,
                    c.limit_guard_band,
                    _ms(c.rolling_window_days * 86_400),
                    _ms(c.rolling_min_days * 86_400),
                )
                detail["window_days"] = c.rolling_window_days
            bounds = " and ".join(
                f"{word} {v:g} {param.unit}" for word, v in (("min", limit.min), ("max", limit.max)) if v is not None
            )
            rules.append(
                Rule(
                    f"limit:{name}:{param.value}",
                    AlertKind.LIMIT_EXCEEDANCE,
                    Severity.WARNING,
                    limit_timing,
                    f"{param.value} outside {limit_set.standard} ({limit.statistic.value}: {bounds})",
                    evaluator,
                    detail,
                )
            )
    city_sites = frozenset(s.id for _, s in manifest.iter_sites() if s.kind in (SiteKind.WATER, SiteKind.EFFLUENT))
    rules += [
        Rule(
            RuleId.POLLUTION,
            AlertKind.POLLUTION,
            Severity.CRITICAL,
            Timing(_ms(c.pollution_for_s), _ms(c.pollution_clear_for_s), gap),
            "pollution event",
            Pollution(city_sites),
        ),
        Rule(
            RuleId.SENSOR_FAULT,
            AlertKind.DEVICE,
            Severity.WARNING,
            Timing(_ms(c.fault_for_s), _ms(c.fault_clear_for_s), gap),
            "sensor fault (stuck, drifting, fouled or impossible readings)",
            SensorFault(),
        ),
        Rule(RuleId.DEVICE_SILENT, AlertKind.DEVICE, Severity.WARNING, Timing(0, 0, 2**62), "device silent"),
        Rule(RuleId.SENSOR_SILENT, AlertKind.DEVICE, Severity.WARNING, Timing(0, 0, 2**62), "sensor silent"),
        Rule(RuleId.BATTERY_LOW, AlertKind.DEVICE, Severity.WARNING, Timing(0, 0, 2**62), "battery low"),
        Rule(RuleId.BUFFER_HIGH, AlertKind.DEVICE, Severity.WARNING, Timing(0, 0, 2**62), "edge buffer growing"),
        Rule(
            RuleId.CLOCK_OFF,
            AlertKind.DEVICE,
            Severity.WARNING,
            Timing(_ms(c.clock_for_s), _ms(c.clock_clear_for_s), gap),
            f"device clock off by more than {c.clock_off_s:g} s",
            detail={"unit": "s", "clock_off_s": c.clock_off_s, "clock_ok_s": c.clock_ok_s},
        ),
    ]
    if any(s.param is Parameter.FILL for _, _, d in manifest.iter_devices() for s in d.sensors):
        rules += [
            Rule(
                RuleId.BIN_FULL,
                AlertKind.BIN_OVERFLOW,
                Severity.WARNING,
                Timing(_ms(c.bin_for_s), 0, gap),
                f"bin above {c.bin_full_pct:g} % full",
                BinFill(c.bin_full_pct, c.bin_clear_pct),
            ),
            Rule(
                RuleId.BIN_FORECAST,
                AlertKind.BIN_OVERFLOW,
                Severity.INFO,
                Timing(_ms(c.bin_for_s), 0, gap),
                f"bin predicted full within {c.bin_forecast_h:g} h",
                BinForecast(c.bin_full_pct, _ms(c.bin_forecast_h * 3600), _ms(c.bin_fit_window_s)),
            ),
        ]
    return rules
