"""Evaluate one site pair or one city: the functions that turn series and the manifest into estimates.

Contract: :func:`evaluate_pair` (BACI of an impact and a control series) and :func:`evaluate_site_parameter`
(before/after of one series) are what both the evidence pack and ``pilotwatch evaluate calibrate`` call, so the
calibration measures exactly the method applied to stored data. :func:`naive_t_test` is the test the method
replaces, kept only to show its false-positive rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from evaluation.estimators import BootstrapConfig, Estimate, baci, before_after
from evaluation.series import QCAcceptance, Series, day_number, in_period, paired_sample, period_sample
from pilotwatch.manifest import City, Device, Manifest, Parameter, Periods, Sensor, Site, SiteKind, SiteRole


def evaluate_site_parameter(
    series: Series,
    periods: Periods,
    timezone: str,
    *,
    acceptance: QCAcceptance,
    config: BootstrapConfig,
    unit: str = "",
) -> list[Estimate]:
    base = period_sample(series, periods.baseline, timezone, acceptance)
    after = period_sample(series, periods.intervention, timezone, acceptance)
    return before_after(base, after, config, unit)


def evaluate_pair(
    impact: Series,
    control: Series,
    periods: Periods,
    timezone: str,
    *,
    acceptance: QCAcceptance,
    config: BootstrapConfig,
    unit: str = "",
) -> list[Estimate]:
    """BACI estimates of an impact series against its control over the impact site's periods."""
    base = paired_sample(impact, control, periods.baseline, timezone, acceptance)
    after = paired_sample(impact, control, periods.intervention, timezone, acceptance)
    return baci(base, after, config, unit)


def naive_t_test(impact: Series, control: Series, periods: Periods, timezone: str, acceptance: QCAcceptance) -> float:
    """Two-sided p of Welch's t on the impact - control differences before vs after, readings taken as
    independent (normal approximation; n is in the thousands). This is the trap: do not report it as evidence."""
    base = paired_sample(impact, control, periods.baseline, timezone, acceptance).difference().values
    after = paired_sample(impact, control, periods.intervention, timezone, acceptance).difference().values
    if base.shape[0] < 2 or after.shape[0] < 2:
        return math.nan
    se = math.sqrt(np.var(base, ddof=1) / base.shape[0] + np.var(after, ddof=1) / after.shape[0])
    if se == 0:
        return math.nan
    t = (after.mean() - base.mean()) / se
    return math.erfc(abs(t) / math.sqrt(2.0))


# ------------------------------------------------------------------------------------------------ one city
LOAD_PARAMETERS = frozenset({Parameter.COD, Parameter.AMMONIA, Parameter.COLOUR, Parameter.UV254})
"""Effluent parameters whose load (value x flow) is reported where the site measures flow."""
DEFAULT_MIN_COVERAGE = 0.5


@dataclass(frozen=True, slots=True)
class SensorData:
    """One sensor's series at a site, with local hours and days computed once."""

    site: Site
    device: Device
    sensor: Sensor
    series: Series
    hours: npt.NDArray[np.int64]
    days: npt.NDArray[np.int64]

    @property
    def key(self) -> str:
        return f"{self.site.id}/{self.device.id}/{self.sensor.id}"


Loader = Callable[[Site, Device, Sensor, int, int], Series]
"""Reads one sensor's series in ``[start_ms, end_ms)`` (see :func:`evaluation.data.load_series`)."""


@dataclass
class CityEvaluation:
    """Everything the evidence pack shows for one city; ``records`` are summary.json's estimates."""

    city: City
    acceptance: QCAcceptance
    config: BootstrapConfig
    min_coverage: float
    as_of_ms: int
    sensors: list[SensorData] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    compliance: list[dict[str, Any]] = field(default_factory=list)
    coverage: list[dict[str, Any]] = field(default_factory=list)
    bin_days: list[pd.DataFrame] = field(default_factory=list)
    load_days: list[pd.DataFrame] = field(default_factory=list)
    baci_days: list[pd.DataFrame] = field(default_factory=list)


def _record(
    data: SensorData, estimate: Estimate, cov: dict[str, float], min_coverage: float, **extra: Any
) -> dict[str, Any]:
    low_cov = any(not (v >= min_coverage) for v in cov.values())  # NaN counts as low
    return {
        "city": extra.pop("city"),
        "site": data.site.id,
        "site_role": data.site.role.value,
        "site_kind": data.site.kind.value,
        "device": data.device.id,
        "sensor": data.sensor.id,
        "parameter": data.sensor.param.value,
        "quantity": estimate.quantity,
        "estimate": _num(estimate.estimate),
        "low": _num(estimate.low),
        "high": _num(estimate.high),
        "unit": estimate.unit or data.sensor.unit,
        "method": estimate.method,
        "n": estimate.n,
        "block_length_days": _num(estimate.block_length) if estimate.block_length is not None else None,
        "coverage_baseline": _num(cov["baseline"]),
        "coverage_intervention": _num(cov["intervention"]),
        "low_coverage": low_cov,
        "periods": {k: _num(v) for k, v in estimate.periods.items()},
        "note": estimate.note,
        **extra,
    }


def _num(value: float | None) -> float | None:
    """JSON has no NaN: an undefined number is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _load(city: City, site: Site, loader: Loader, as_of_ms: int) -> list[SensorData]:
    from evaluation.coverage import local_midnight_ms  # noqa: PLC0415

    start = local_midnight_ms(site.periods.baseline.start, city.timezone)
    end = min(local_midnight_ms(site.periods.intervention.end, city.timezone), as_of_ms)
    out = []
    for device in site.devices:
        for sensor in device.sensors:
            series = loader(site, device, sensor, start, end)
            hours, days = series.local(city.timezone)
            out.append(SensorData(site, device, sensor, series, hours, days))
    return out


def evaluate_city(
    manifest: Manifest,
    city_id: str,
    loader: Loader,
    *,
    acceptance: QCAcceptance = QCAcceptance.GOOD,
    config: BootstrapConfig | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    as_of_ms: int | None = None,
) -> CityEvaluation:
    """Before/after per site x sensor, BACI against the city's control site of the same kind and parameter,
    compliance per limit, bin and effluent metrics, coverage — for one city of the manifest."""
    from evaluation import bins as bin_metrics  # noqa: PLC0415
    from evaluation.compliance import exceedance_change, period_compliance  # noqa: PLC0415
    from evaluation.coverage import period_coverage  # noqa: PLC0415

    try:
        city = manifest.city(city_id)
    except KeyError:
        known = ", ".join(c.id for c in manifest.cities)
        raise ValueError(f"unknown city {city_id!r}; the manifest has: {known}") from None
    cfg = config or BootstrapConfig()
    now = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    result = CityEvaluation(city, acceptance, cfg, min_coverage, now)
    for site in city.sites:
        result.sensors += _load(city, site, loader, now)
    controls = {(d.site.kind, d.sensor.param): d for d in result.sensors if d.site.role is SiteRole.CONTROL}
    tz = city.timezone

    for data in result.sensors:
        site, param = data.site, data.sensor.param
        cov: dict[str, float] = {}
        for name, period in (("baseline", site.periods.baseline), ("intervention", site.periods.intervention)):
            c = period_coverage(data.series, data.days, period, tz, acceptance=acceptance, as_of_ms=now)
            cov[name] = c.coverage
            result.coverage.append(
                {
                    "city": city.id,
                    "site": site.id,
                    "device": data.device.id,
                    "sensor": data.sensor.id,
                    "parameter": param.value,
                    "period": name,
                    "expected": c.expected,
                    "received": c.received,
                    "accepted": c.accepted,
                    "coverage": _num(c.coverage),
                    "gaps_over_1h": c.gaps,
                    "longest_gap_h": round(c.longest_gap_h, 3),
                    "low_coverage": not (c.coverage >= min_coverage),
                }
            )
        base = period_sample(data.series, site.periods.baseline, tz, acceptance)
        after = period_sample(data.series, site.periods.intervention, tz, acceptance)
        unit = data.sensor.unit

        def add(
            estimates: list[Estimate], _data: SensorData = data, _cov: dict[str, float] = cov, **extra: Any
        ) -> None:
            result.records += [_record(_data, e, _cov, min_coverage, city=city.id, **extra) for e in estimates]

        if base.n >= 2 and after.n >= 2:
            add(before_after(base, after, cfg, unit), design="before_after")
        else:
            add(
                [
                    Estimate(
                        "mean_difference",
                        math.nan,
                        math.nan,
                        math.nan,
                        "before/after",
                        base.n + after.n,
                        unit,
                        note=f"too few accepted readings: {base.n} baseline, {after.n} intervention",
                    )
                ],
                design="before_after",
            )
        control = controls.get((site.kind, param))
        if site.role is SiteRole.INTERVENTION and control is not None:
            pb = paired_sample(data.series, control.series, site.periods.baseline, tz, acceptance)
            pa = paired_sample(data.series, control.series, site.periods.intervention, tz, acceptance)
            if pb.n >= 2 and pa.n >= 2:
                add(
                    baci(pb, pa, cfg, unit),
                    design="baci",
                    control_site=control.site.id,
                    control_device=control.device.id,
                )
                frame = pd.DataFrame(
                    {
                        "day": np.concatenate([pb.days, pa.days]),
                        "difference": np.concatenate([pb.impact - pb.control, pa.impact - pa.control]),
                    }
                )
                daily = frame.groupby("day").agg(difference=("difference", "mean"), pairs=("difference", "size"))
                daily = daily.reset_index()
                daily.insert(0, "control_site", control.site.id)
                daily.insert(0, "parameter", param.value)
                daily.insert(0, "site", site.id)
                daily["period"] = np.where(
                    daily["day"] < day_number(site.periods.intervention.start), "baseline", "intervention"
                )
                result.baci_days.append(daily)
        for limit_name in site.limits:
            limit_set = manifest.limits[limit_name]
            limit = limit_set.parameters.get(param)
            if limit is None:
                continue
            row: dict[str, Any] = {
                "city": city.id,
                "site": site.id,
                "device": data.device.id,
                "sensor": data.sensor.id,
                "parameter": param.value,
                "standard": limit_set.standard,
                "citation": limit_set.citation,
                "limit_set": limit_name,
                "min": limit.min,
                "max": limit.max,
                "statistic": limit.statistic.value,
                "confirmed": limit.confirmed,
                "note": limit.note,
            }
            for name, sample in (("baseline", base), ("intervention", after)):
                pc = period_compliance(sample.values, limit, data.series.interval_s)
                row |= {
                    f"{name}_value": _num(pc.value),
                    f"{name}_compliant": pc.compliant,
                    f"{name}_readings": pc.readings,
                    f"{name}_share_outside": _num(pc.share_outside),
                    f"{name}_hours_outside": round(pc.hours_outside, 3),
                }
            result.compliance.append(row)
            add([exceedance_change(base, after, limit, cfg)], design="compliance", limit_set=limit_name)
        if site.kind is SiteKind.BIN and param is Parameter.FILL:
            ok = data.series.accepted(acceptance)
            table = bin_metrics.bin_days(
                data.series.times_ms[ok], data.series.values[ok], data.days[ok], data.series.interval_s
            )
            table.insert(0, "device", data.device.id)
            table.insert(0, "site", site.id)
            table["period"] = _period_names(table["day"].to_numpy(np.int64), site)
            result.bin_days.append(table)
            add(_bin_estimates(table, cfg), design="bin_metrics")
        if site.kind is SiteKind.EFFLUENT and param in LOAD_PARAMETERS:
            flow = next((d for d in result.sensors if d.site.id == site.id and d.sensor.param is Parameter.FLOW), None)
            if flow is not None:
                loads = bin_metrics.effluent_load_days(
                    data.series,
                    flow.series,
                    data.days,
                    data.series.accepted(acceptance),
                    flow.series.accepted(acceptance),
                )
                loads.insert(0, "parameter", param.value)
                loads.insert(0, "site", site.id)
                loads["period"] = _period_names(loads["day"].to_numpy(np.int64), site)
                result.load_days.append(loads)
                by = {
                    p: loads.loc[loads["period"] == p, "load"].to_numpy(np.float64)
                    for p in ("baseline", "intervention")
                }
                add(
                    bin_metrics.daily_change(
                        by["baseline"], by["intervention"], cfg, name="daily_load", unit=f"{data.sensor.unit} x m3"
                    ),
                    design="effluent_load",
                )
    return result


def _period_names(days: npt.NDArray[np.int64], site: Site) -> npt.NDArray[np.str_]:
    out: npt.NDArray[np.str_] = np.where(
        in_period(days, site.periods.baseline),
        "baseline",
        np.where(in_period(days, site.periods.intervention), "intervention", "outside"),
    )
    return out


def _bin_estimates(table: pd.DataFrame, config: BootstrapConfig) -> list[Estimate]:
    from evaluation.bins import daily_change  # noqa: PLC0415

    out: list[Estimate] = []
    b, a = table[table["period"] == "baseline"], table[table["period"] == "intervention"]
    share_b = b["nearly_full_collections"] / b["collections"].where(b["collections"] > 0)
    share_a = a["nearly_full_collections"] / a["collections"].where(a["collections"] > 0)
    for name, unit, scale, xb, xa in (
        ("collections_per_week", "collections/week", 7.0, b["collections"], a["collections"]),
        ("fill_at_collection", "%", 1.0, b["fill_at_collection"], a["fill_at_collection"]),
        ("overflow_hours_per_week", "h/week", 7.0, b["overflow_hours"], a["overflow_hours"]),
        ("nearly_full_share", "share of collections", 1.0, share_b, share_a),
        ("fill_rate", "%/h", 1.0, b["fill_rate"], a["fill_rate"]),
    ):
        out += daily_change(xb.to_numpy(np.float64), xa.to_numpy(np.float64), config, name=name, unit=unit, scale=scale)
    return out
