"""The live QC service: QARTOD flags, anomaly scores and fault/event labels for the readings in InfluxDB.

In: readings that ingest writes (measurement ``reading``, tags ``city, site, device, sensor, param``, field
``value``, time = sample time in ms) and device health (measurement ``device_status``, tags ``city, site,
device``, fields ``state``, ``battery_pct``, ...). Out: measurement ``qc`` with the reading's tags and sample
time, fields ``flag`` (integer aggregate QARTOD flag), one integer field per configured QARTOD test
(``gross_range``, ``spike``, ...), ``anomaly_score`` (float, alarm units), ``anomaly`` (integer 0/1) and
``label`` (string: good, fault, event). Writes are idempotent: a point's identity is (measurement, tags,
time), so re-evaluating a window overwrites.

Configuration comes from the pilot manifest: each sensor's ``qc:`` section (:func:`sensor_qc`), with defaults
derived from the sensor's ``valid_range`` and interval for what the section leaves out (docs/qc.md).

Late data (an edge buffer flushing after an outage) is handled by **re-reading the trailing window**: per series
the service keeps a *horizon*; detector state is committed only up to the horizon, and every run re-reads and
re-evaluates everything after it (plus ``context`` seconds before it, so spike, flat-line and attenuated-signal
windows and the fault/event agreement window see their history). After a run the horizon moves to
``until - late_window``. So a reading that arrives up to ``late_window`` seconds late is evaluated exactly as
if it had arrived on time — the results equal a batch run over the same data — and the readings around it are
re-flagged and re-labelled. Readings later than that (``RunReport.too_late``) get no ``qc`` point from the live
pass; the **reconciliation pass** (:meth:`QCService.reconcile`, every ``reconcile_interval_s``) finds them by
comparing hourly counts of ``reading`` and ``qc`` per series over ``reconcile_lookback_s`` and writes a ``qc``
point, marked ``late=1``, for each stored reading that has none — never rewriting one that exists. Those readings
are scored from a copy of the detectors' current state (the detectors never learn old data) and labelled at the
site level by the same code as the live pass.

Three layers:

- :class:`QCService` — one evaluation pass over an injected client (anything with ``query(q, epoch="ms")`` and
  ``write_lines(lines, precision)``, such as :class:`pilotwatch.influx.InfluxV1`); checkpoint as a dict.
- :class:`AnalyticsService` — the process ``pilotwatch analytics run`` runs: settings
  (:class:`analytics.settings.AnalyticsSettings`), the manifest, a checkpoint file in ``state_dir`` written
  atomically after every pass, long windows split into ``max_window_s`` steps, a loop every ``interval_s``.
- :func:`evaluate_window` — the whole fleet over ``[start_ms, end_ms)`` in-process, for the demo and scripts.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from analytics import detectors as det
from analytics.labels import BASELINE_WINDOW_S, LABEL_NAMES, SIGNATURES, Label, label_site
from analytics.pipeline import ParameterResult, StreamWindow, build_detectors, evaluate_parameter
from analytics.settings import AnalyticsSettings
from analytics.stream import (
    Checkpoint,
    SeriesKey,
    SeriesPass,
    SeriesState,
    load_series_state,
    read_checkpoint,
    series_state_dict,
    write_checkpoint,
)
from pilotwatch.influx import quote_literal
from pilotwatch.influx_writer import raise_for_write
from pilotwatch.manifest import Manifest, Sensor
from pilotwatch.outage import OutageEvent, ride_through
from pilotwatch.qc_config import FlatLine, GrossRange, Labels, ParameterQC
from pilotwatch.schema import SERIES_TAGS, Measurement, QartodFlag, line
from pilotwatch.settings import InfluxConnection

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
"""Sorted sample times (epoch ms) and their values."""
NS_PER_MS = 1_000_000
HOUR_MS = 3_600_000
WRITE_BATCH = 5_000
LATE_FIELDS: Mapping[str, int] = {"late": 1}
"""The mark on a ``qc`` point the reconciliation pass wrote (live verdicts leave the field out)."""

DEFAULT_FLAT_LINE_S = (12 * 3600.0, 24 * 3600.0)
FLAT_TOLERANCE = 1e-9
"""Flat line (suspect, fail, tolerance) for a sensor whose ``qc:`` section has none: a probe that repeats exactly
the same value (the test's tolerance is strict, so "exactly" needs a tolerance above 0) for half a day is stuck;
no healthy sensor of the pilots, with noise above its resolution, does that."""


class InfluxClient(Protocol):
    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]: ...

    def write_lines(self, lines: Iterable[str], precision: str = "ms") -> httpx.Response: ...


class InfluxClosable(InfluxClient, Protocol):
    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------ config
def sensor_qc(sensor: Sensor) -> ParameterQC:
    """The QC a sensor gets: its manifest ``qc:`` section, completed with defaults for what it leaves out.

    Defaults: ``gross_range`` fails outside the sensor's ``valid_range`` (what the hardware can report); a
    ``flat_line`` flags SUSPECT after 12 h and FAIL after 24 h of the exact same value. Other
    tests and detectors run only where configured: their thresholds depend on the water, not the sensor.
    """
    qc = sensor.qc
    updates: dict[str, Any] = {}
    if qc.qartod.gross_range is None:
        updates["gross_range"] = GrossRange(fail_span=sensor.valid_range)
    if qc.qartod.flat_line is None:
        suspect, fail = DEFAULT_FLAT_LINE_S
        updates["flat_line"] = FlatLine(suspect_threshold=suspect, fail_threshold=fail, tolerance=FLAT_TOLERANCE)
    if not updates:
        return qc
    return qc.model_copy(update={"qartod": qc.qartod.model_copy(update=updates)})


def manifest_config(manifest: Manifest) -> dict[tuple[str, str], ParameterQC]:
    """(device id, sensor id) → the sensor's effective QC (:func:`sensor_qc`) for every sensor of the fleet."""
    return {(d.id, s.id): sensor_qc(s) for _, _, d in manifest.iter_devices() for s in d.sensors}


def check_streamable(cfg: ParameterQC, context_s: float, where: str) -> None:
    """Refuse a configuration the live service cannot evaluate window by window (ValueError naming it)."""
    q = cfg.qartod
    if q.flat_line is not None and q.flat_line.fail_threshold > context_s:
        raise ValueError(
            f"{where}: flat_line fail_threshold {q.flat_line.fail_threshold} s is longer than the service's "
            f"context ({context_s} s); raise PILOTWATCH_ANALYTICS_CONTEXT_S or shorten the threshold"
        )
    if q.attenuated_signal is not None:
        period = q.attenuated_signal.test_period
        if period is None:
            raise ValueError(f"{where}: attenuated_signal needs a test_period (seconds) on a live stream")
        if period > context_s:
            raise ValueError(f"{where}: attenuated_signal test_period {period} s exceeds the context ({context_s} s)")


# ------------------------------------------------------------------------------------------------ report
@dataclass
class RunReport:
    """What a pass (or a whole window) did. Counts are of readings evaluated (one per series and time)."""

    series: int = 0
    points_written: int = 0
    late_points: int = 0
    too_late: int = 0
    passes: int = 0
    sites: set[tuple[str, str]] = field(default_factory=set)
    flags: Counter[int] = field(default_factory=Counter)
    """Readings per aggregate QARTOD flag (1 good, 2 not evaluated, 3 suspect, 4 fail)."""
    anomalies: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    """Readings per label: good, fault, event."""
    unconfigured: set[str] = field(default_factory=set)
    """Series in InfluxDB with no sensor in the manifest (``device/sensor``); not evaluated."""
    stopped_early: bool = False
    """A stop came before the whole window was evaluated (what was done is checkpointed)."""
    backfilled: int = 0
    """``qc`` points the reconciliation pass wrote for stored readings that had none (marked ``late=1``)."""
    backfill_pending_hours: int = 0
    """Hours of data the last reconciliation pass found short of qc points but left for the next pass."""

    def add(self, other: RunReport) -> None:
        self.series = max(self.series, other.series)
        self.points_written += other.points_written
        self.late_points += other.late_points
        self.too_late += other.too_late
        self.passes += other.passes
        self.sites |= other.sites
        self.flags.update(other.flags)
        self.anomalies += other.anomalies
        self.labels.update(other.labels)
        self.unconfigured |= other.unconfigured
        self.stopped_early |= other.stopped_early
        self.backfilled += other.backfilled
        self.backfill_pending_hours = max(self.backfill_pending_hours, other.backfill_pending_hours)

    def summary(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "passes": self.passes,
            "points_written": self.points_written,
            "late_points": self.late_points,
            "too_late": self.too_late,
            "flags": {str(k): v for k, v in sorted(self.flags.items())},
            "anomalies": self.anomalies,
            "labels": dict(sorted(self.labels.items())),
            "unconfigured": sorted(self.unconfigured),
            "stopped_early": self.stopped_early,
            "backfilled": self.backfilled,
            "backfill_pending_hours": self.backfill_pending_hours,
        }


def qc_line(key: SeriesKey, time_ms: int, fields: Mapping[str, int | float | str]) -> str:
    return line(Measurement.QC, dict(zip(SERIES_TAGS, key, strict=True)), fields, time_ms)


def _align(t: npt.NDArray[np.int64], v: npt.NDArray[np.float64], at: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``v`` (sampled at sorted ``t``) at the times ``at``; NaN where it has no sample."""
    out = np.full(at.shape[0], np.nan)
    if t.shape[0]:
        pos = np.clip(np.searchsorted(t, at), 0, t.shape[0] - 1)
        hit = t[pos] == at
        out[hit] = v[pos[hit]]
    return out


def _series_key(row: Mapping[str, Any]) -> SeriesKey:
    """The series a row of a ``GROUP BY`` over :data:`SERIES_TAGS` belongs to."""
    city, site, device, sensor, param = (str(row.get(t, "")) for t in SERIES_TAGS)
    return city, site, device, sensor, param


def _sensors_by_device(keys: Iterable[SeriesKey]) -> dict[tuple[str, str, str], dict[str, SeriesKey]]:
    """(city, site, device) → sensor → series: where a neighbour test finds the other sensors of a device."""
    out: dict[tuple[str, str, str], dict[str, SeriesKey]] = {}
    for key in keys:
        out.setdefault(key[:3], {})[key[3]] = key
    return out


# ------------------------------------------------------------------------------------------------ one pass
class QCService:
    """Evaluate the live stream window by window (see the module docstring).

    ``config`` maps a parameter name to its QC, or is a function of the series key (``None``: not evaluated).
    ``low_battery_pct``: readings of a device whose latest ``device_status`` before them reports a battery
    below this are labelled fault; ``None`` reads no device health. ``site_kinds`` (site id → ``water``,
    ``effluent``, ``bin``) labels events by the site kind's known signatures (:mod:`analytics.labels`); sites
    not in it use direction-blind agreement.
    """

    def __init__(
        self,
        client: InfluxClient,
        config: Mapping[str, ParameterQC] | Callable[[SeriesKey], ParameterQC | None],
        *,
        labels: Labels | None = None,
        late_window: float = 6 * 3600.0,
        context: float = 24 * 3600.0,
        low_battery_pct: float | None = None,
        site_kinds: Mapping[str, str] | None = None,
    ) -> None:
        if late_window < 0 or context < 0:
            raise ValueError("late_window and context must be >= 0 seconds")
        self.client = client
        self._config = config
        self.labels = labels or Labels()
        if late_window < self.labels.agreement_window:
            raise ValueError(
                f"late_window ({late_window} s) must cover the labels' agreement_window "
                f"({self.labels.agreement_window} s)"
            )
        self.late_ms = round(late_window * 1000)
        self.context_ms = round(context * 1000)
        self.low_battery_pct = low_battery_pct
        self.site_kinds = dict(site_kinds or {})
        if self.site_kinds and context < BASELINE_WINDOW_S + self.labels.agreement_window:
            raise ValueError(
                f"context ({context} s) must cover the labels' baseline window and agreement window "
                f"({BASELINE_WINDOW_S + self.labels.agreement_window} s)"
            )
        self._series: dict[SeriesKey, SeriesState] = {}

    def config_for(self, key: SeriesKey) -> ParameterQC | None:
        if callable(self._config):
            return self._config(key)
        return self._config.get(key[4])

    @property
    def horizon_ms(self) -> int | None:
        """The earliest horizon of any series (None before the first pass): the next pass re-reads from it."""
        return min((s.horizon_ms for s in self._series.values()), default=None)

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-able checkpoint of every series' horizon and detector state (restore with ``load_state``)."""
        return series_state_dict(self._series)

    def load_state(self, state: Mapping[str, Any]) -> None:
        self._series.update(load_series_state(state))

    # -- reading and writing ----------------------------------------------------------------------------------
    def _write(self, lines: list[str], what: str) -> None:
        for lo in range(0, len(lines), WRITE_BATCH):
            raise_for_write(self.client.write_lines(lines[lo : lo + WRITE_BATCH], precision="ms"), what)

    def _read(self, since_ms: int, until_ms: int, where: str = "") -> dict[SeriesKey, Samples]:
        q = (
            f"SELECT value FROM {Measurement.READING} WHERE time > {since_ms}ms AND time <= {until_ms}ms{where} "  # noqa: S608  # integers and quote_literal only
            "GROUP BY city, site, device, sensor, param"
        )
        rows: dict[SeriesKey, tuple[list[int], list[float]]] = {}
        for row in self.client.query(q, epoch="ms"):
            key = _series_key(row)
            ts, vs = rows.setdefault(key, ([], []))
            v = row["value"]
            ts.append(int(row["time"]))
            vs.append(math.nan if v is None else float(v))
        out = {}
        for key, (ts, vs) in rows.items():
            t = np.array(ts, dtype=np.int64)
            order = np.argsort(t, kind="stable")
            out[key] = (t[order], np.array(vs, dtype=np.float64)[order])
        return out

    def _battery(self, since_ms: int, until_ms: int) -> dict[str, Samples]:
        """Per device, the battery level reported by its status points (a day before ``since_ms`` on)."""
        q = (
            f"SELECT battery_pct FROM {Measurement.DEVICE_STATUS} WHERE time > {since_ms - 86_400_000}ms "  # noqa: S608  # integers
            f"AND time <= {until_ms}ms GROUP BY device"
        )
        per: dict[str, list[tuple[int, float]]] = {}
        for row in self.client.query(q, epoch="ms"):
            v = row.get("battery_pct")
            if v is not None:
                per.setdefault(str(row.get("device", "")), []).append((int(row["time"]), float(v)))
        out = {}
        for device, pts in per.items():
            pts.sort()
            out[device] = (np.array([p[0] for p in pts], dtype=np.int64), np.array([p[1] for p in pts]))
        return out

    def _device_ok(self, battery: Mapping[str, Samples], device: str, t_ms: Any) -> npt.NDArray[np.bool_]:
        t_ms = np.asarray(t_ms, dtype=np.int64)
        if self.low_battery_pct is None or device not in battery:
            return np.ones(t_ms.shape[0], dtype=bool)
        bt, level = battery[device]
        idx = np.searchsorted(bt, t_ms, side="right") - 1
        known = idx >= 0
        ok = np.ones(t_ms.shape[0], dtype=bool)
        ok[known] = level[idx[known]] >= self.low_battery_pct
        return ok

    # -- one pass ---------------------------------------------------------------------------------------------
    def run_once(
        self, since_ms: int, until_ms: int, *, final: bool = True, count_from_ms: int | None = None
    ) -> RunReport:
        """Evaluate readings up to ``until_ms``; series seen for the first time start after ``since_ms``.

        The report counts the readings at or after ``count_from_ms`` (and late ones) that this pass settles:
        those at or before the new horizon, and with ``final`` (the last pass of a window) also the provisional
        ones after it. So consecutive windows count every reading once.
        """
        report = RunReport(passes=1)
        count_from = np.iinfo(np.int64).min if count_from_ms is None else count_from_ms
        horizon = self.horizon_ms
        read_from = (since_ms if horizon is None else horizon) - self.context_ms
        data = self._read(read_from, until_ms)
        battery = self._battery(read_from, until_ms) if self.low_battery_pct is not None else {}
        per_site: dict[tuple[str, str], dict[SeriesKey, SeriesPass]] = {}
        by_device = _sensors_by_device(data)
        for key, (t_ms, values) in data.items():
            cfg = self.config_for(key)
            if cfg is None:
                report.unconfigured.add(f"{key[2]}/{key[3]}")
                continue
            state = self._series.get(key)
            if state is None:
                state = SeriesState(horizon_ms=since_ms, detectors=build_detectors(cfg), seen_until_ms=since_ms)
                self._series[key] = state
            report.series += 1
            fresh = t_ms > state.horizon_ms
            unseen = np.array([int(t) not in state.seen for t in t_ms], dtype=bool)
            late = fresh & unseen & (t_ms <= state.seen_until_ms)
            report.late_points += int(np.count_nonzero(late))
            report.too_late += int(np.count_nonzero(~fresh & unseen & (t_ms <= state.seen_until_ms)))
            times_ns = (t_ms * NS_PER_MS).view("datetime64[ns]")
            columns = None
            if cfg.qartod.neighbor is not None:
                # The neighbour is another sensor of the same device, aligned on this series' sample times.
                columns = {sensor: _align(*data[other], t_ms) for sensor, other in by_device[key[:3]].items()}
            new_horizon = max(state.horizon_ms, until_ms - self.late_ms)
            window = StreamWindow(fresh=fresh, commit=fresh & (t_ms <= new_horizon))
            result = evaluate_parameter(values, times_ns, cfg, state.detectors, columns, window=window)
            per_site.setdefault((key[0], key[1]), {})[key] = SeriesPass(
                t_ms=t_ms,
                values=values,
                fresh=fresh,
                settled=fresh & ((t_ms >= count_from) | late) & ((t_ms <= new_horizon) | final),
                result=result,
            )
            state.horizon_ms = new_horizon
            state.seen = {int(t) for t in t_ms if t > new_horizon - self.context_ms}
            state.seen_until_ms = max(state.seen_until_ms, until_ms)
        lines: list[str] = []
        for site, series in per_site.items():
            report.sites.add(site)
            lines += self._label_and_format(site[1], series, battery, report)
        self._write(lines, "qc points")
        report.points_written = len(lines)
        return report

    # -- reconciliation ---------------------------------------------------------------------------------------
    def _hourly_counts(self, measurement: Measurement, field_name: str, lo_ms: int, hi_ms: int) -> dict[Any, int]:
        """(series key, hour start ms) → how many points of ``measurement`` have ``field_name`` in that hour."""
        q = (
            f'SELECT count("{field_name}") FROM {measurement} WHERE time >= {lo_ms}ms AND time < {hi_ms}ms '  # noqa: S608  # integers and schema names only
            f"GROUP BY time(1h), {', '.join(SERIES_TAGS)} fill(none)"
        )
        out: dict[Any, int] = {}
        for row in self.client.query(q, epoch="ms"):
            n = row.get("count")
            if n:
                out[(_series_key(row), int(row["time"]))] = int(n)
        return out

    def reconcile(self, since_ms: int, until_ms: int, *, max_hours: int) -> RunReport:
        """Write a ``qc`` point (marked ``late=1``) for every stored reading in ``[since_ms, until_ms)`` that has
        none: the readings the live pass never saw because they arrived after its late window.

        Hours are compared by counts per series (``reading`` against ``qc``); a series' hours after its own
        horizon minus the late window belong to the live pass and are skipped. At most ``max_hours`` hours with
        missing points are done, oldest first; ``backfill_pending_hours`` says how many are left. Changes no
        state: the detectors are copied, so they never learn old data, and an interrupted pass is simply redone
        (what it wrote is not rewritten, and what it had left gets the same verdict from the same inputs).
        """
        report = RunReport()
        if self.horizon_ms is None:
            return report  # no live pass yet: nothing is the reconciliation's
        lo = -(-since_ms // HOUR_MS) * HOUR_MS
        # A series' own bound: before its horizon minus the late window (the live pass re-reads after it). A series
        # the live pass has not met yet gets the earliest horizon's bound (it will meet it after that).
        default_bound = self.horizon_ms - self.late_ms
        bounds = {key: s.horizon_ms - self.late_ms for key, s in self._series.items()}
        hi = min(until_ms, max([*bounds.values(), default_bound])) // HOUR_MS * HOUR_MS
        if hi <= lo:
            return report
        readings = self._hourly_counts(Measurement.READING, "value", lo, hi)
        qc = self._hourly_counts(Measurement.QC, "flag", lo, hi)
        dirty: dict[int, set[tuple[str, str]]] = {}
        for (key, hour), n in readings.items():
            if n <= qc.get((key, hour), 0) or hour + HOUR_MS > bounds.get(key, default_bound):
                continue
            if self.config_for(key) is None:
                report.unconfigured.add(f"{key[2]}/{key[3]}")
                continue
            dirty.setdefault(hour, set()).add((key[0], key[1]))
        hours = sorted(dirty)
        todo = hours[:max_hours]
        report.backfill_pending_hours = len(hours) - len(todo)
        # Consecutive hours form one run, read and evaluated together (one context read per run, not per hour).
        runs: list[tuple[int, int, set[tuple[str, str]]]] = []
        for hour in todo:
            if runs and runs[-1][1] == hour:
                runs[-1] = (runs[-1][0], hour + HOUR_MS, runs[-1][2] | dirty[hour])
            else:
                runs.append((hour, hour + HOUR_MS, set(dirty[hour])))
        for start, end, sites in runs:
            report.add(self._backfill(start, end, sites))
        return report

    def _stored_anomaly(self, lo_ms: int, hi_ms: int, where: str) -> dict[SeriesKey, dict[int, int]]:
        """Per series, the sample times that have a ``qc`` point in ``[lo_ms, hi_ms)`` and its ``anomaly``."""
        q = (
            f"SELECT anomaly, flag FROM {Measurement.QC} WHERE time >= {lo_ms}ms AND time < {hi_ms}ms{where} "  # noqa: S608  # integers and quote_literal only
            f"GROUP BY {', '.join(SERIES_TAGS)}"
        )
        out: dict[SeriesKey, dict[int, int]] = {}
        for row in self.client.query(q, epoch="ms"):
            key = _series_key(row)
            a = row.get("anomaly")
            out.setdefault(key, {})[int(row["time"])] = int(a or 0)
        return out

    @staticmethod
    def _score_by_hour(
        t_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        cfg: ParameterQC,
        *,
        detectors: dict[str, det.Detector],
        columns: Mapping[str, npt.NDArray[np.float64]] | None,
        unjudged: npt.NDArray[np.bool_],
    ) -> ParameterResult:
        """QARTOD over the whole re-read window; detector scores for the hours holding ``unjudged`` readings, each
        hour scored on its own from the same copy of the detectors. So a reading's verdict depends on its hour
        alone, not on how many hours one pass took on or where a killed pass stopped."""
        times = (t_ms * NS_PER_MS).view("datetime64[ns]")
        nothing = np.zeros(t_ms.shape[0], dtype=bool)
        result = evaluate_parameter(values, times, cfg, detectors, columns, window=StreamWindow(nothing, nothing))
        hour_of = t_ms // HOUR_MS
        for hour in np.unique(hour_of[unjudged]):
            mine = hour_of == hour
            part = evaluate_parameter(values, times, cfg, detectors, columns, window=StreamWindow(mine, nothing))
            for name, flags in part.tests.items():
                result.tests[name][mine] = flags[mine]
            result.flag[mine] = part.flag[mine]
            result.score[mine] = part.score[mine]
            result.anomaly[mine] = part.anomaly[mine]
        return result

    def _backfill(self, start_ms: int, end_ms: int, sites: set[tuple[str, str]]) -> RunReport:
        """QC the readings of ``[start_ms, end_ms)`` at ``sites`` that have no ``qc`` point (see :meth:`reconcile`).

        Labels see ``context`` before the run and the agreement window after it: a reading with a verdict counts
        as evidence by its stored ``anomaly``, one without by its score (:meth:`_score_by_hour`). Both are the
        same whichever pass computes them, so a pass redone after a kill writes what the first would have."""
        report = RunReport()
        site_ids = sorted({site for _, site in sites})
        where = " AND (" + " OR ".join(f"site = {quote_literal(s)}" for s in site_ids) + ")"
        read_from = start_ms - self.context_ms
        read_to = end_ms + round(self.labels.agreement_window * 1000)
        data = {k: v for k, v in self._read(read_from - 1, read_to - 1, where).items() if (k[0], k[1]) in sites}
        stored = self._stored_anomaly(read_from, read_to, where)
        battery = self._battery(read_from, read_to) if self.low_battery_pct is not None else {}
        by_device = _sensors_by_device(data)
        per_site: dict[tuple[str, str], dict[SeriesKey, SeriesPass]] = {}
        for key, (t_ms, values) in data.items():
            cfg = self.config_for(key)
            if cfg is None:
                continue
            state = self._series.get(key)
            detectors = (
                build_detectors(cfg)
                if state is None
                else {name: det.detector_from_state(d.state_dict()) for name, d in state.detectors.items()}
            )
            verdicts = stored.get(key, {})
            has_qc = np.array([int(t) in verdicts for t in t_ms], dtype=bool)
            in_run = (t_ms >= start_ms) & (t_ms < end_ms)
            columns = None
            if cfg.qartod.neighbor is not None:
                columns = {sensor: _align(*data[other], t_ms) for sensor, other in by_device[key[:3]].items()}
            result = self._score_by_hour(t_ms, values, cfg, detectors=detectors, columns=columns, unjudged=~has_qc)
            # A reading with a verdict is evidence as its verdict says (what an alert may have seen).
            for i in np.flatnonzero(has_qc):
                result.anomaly[i] = bool(verdicts[int(t_ms[i])])
            missing = in_run & ~has_qc
            per_site.setdefault((key[0], key[1]), {})[key] = SeriesPass(
                t_ms=t_ms, values=values, fresh=missing, settled=missing, result=result
            )
        lines: list[str] = []
        for site, series in per_site.items():
            if any(np.any(ser.fresh) for ser in series.values()):
                report.sites.add(site)
                lines += self._label_and_format(site[1], series, battery, report, LATE_FIELDS)
        self._write(lines, "late qc points")
        report.backfilled = len(lines)
        return report

    def _label_and_format(
        self,
        site: str,
        series: Mapping[SeriesKey, SeriesPass],
        battery: Mapping[str, Samples],
        report: RunReport,
        extra_fields: Mapping[str, int] | None = None,
    ) -> list[str]:
        """Label one site's series on their common time axis; the ``qc`` lines of the fresh readings (with
        ``extra_fields`` added to each)."""
        axis = np.unique(np.concatenate([ser.t_ms for ser in series.values()]))
        aligned_tests: dict[str, dict[str, npt.NDArray[np.uint8]]] = {}
        aligned_flag: dict[str, npt.NDArray[np.uint8]] = {}
        aligned_anom: dict[str, npt.NDArray[np.bool_]] = {}
        aligned_values: dict[str, npt.NDArray[np.float64]] = {}
        aligned_ok: dict[str, npt.NDArray[np.bool_]] = {}
        params: dict[str, str] = {}
        for key, ser in series.items():
            pos = np.searchsorted(axis, ser.t_ms)
            name = "|".join(key)
            f = np.full(axis.shape[0], QartodFlag.MISSING, dtype=np.uint8)
            f[pos] = ser.result.flag
            a = np.zeros(axis.shape[0], dtype=bool)
            a[pos] = ser.result.anomaly
            v = np.full(axis.shape[0], np.nan)
            v[pos] = ser.values
            tt = {}
            for test, flags in ser.result.tests.items():
                col = np.full(axis.shape[0], QartodFlag.MISSING, dtype=np.uint8)
                col[pos] = flags
                tt[test] = col
            aligned_tests[name], aligned_flag[name], aligned_anom[name], aligned_values[name] = tt, f, a, v
            aligned_ok[name] = self._device_ok(battery, key[2], axis)
            params[name] = key[4]
        labels = label_site(
            aligned_tests,
            aligned_flag,
            aligned_anom,
            axis * NS_PER_MS,
            agreement_window=self.labels.agreement_window,
            min_agree=self.labels.min_agree,
            device_ok=aligned_ok if self.low_battery_pct is not None else None,
            values=aligned_values,
            kinds=params,
            signatures=SIGNATURES.get(self.site_kinds[site]) if site in self.site_kinds else None,
        )
        lines: list[str] = []
        for key, ser in series.items():
            lab = labels["|".join(key)][np.searchsorted(axis, ser.t_ms)]
            for i in np.flatnonzero(ser.fresh):
                if not math.isfinite(ser.result.score[i]):
                    continue
                label_name = LABEL_NAMES[Label(int(lab[i]))]
                fields: dict[str, int | float | str] = {"flag": int(ser.result.flag[i])}
                fields.update({test: int(flags[i]) for test, flags in ser.result.tests.items()})
                fields["anomaly_score"] = float(ser.result.score[i])
                fields["anomaly"] = int(ser.result.anomaly[i])
                fields["label"] = label_name
                if extra_fields:
                    fields.update(extra_fields)
                lines.append(qc_line(key, int(ser.t_ms[i]), fields))
                if ser.settled[i]:
                    report.flags[int(ser.result.flag[i])] += 1
                    report.anomalies += int(ser.result.anomaly[i])
                    report.labels[label_name] += 1
        return lines


# ------------------------------------------------------------------------------------------------ the process
def influx_client(settings: AnalyticsSettings) -> InfluxClosable:
    """The default client factory: :meth:`pilotwatch.settings.InfluxConnection.client`."""
    return settings.influx.client()


class AnalyticsService:
    """The analytics process: the manifest's QC over the live stream, checkpointed in ``state_dir``.

    The constructor validates the manifest's QC against the settings and touches neither network nor disk;
    :meth:`open` builds the client (from ``client_factory``) and reads the checkpoint.
    """

    def __init__(
        self,
        settings: AnalyticsSettings,
        manifest: Manifest,
        *,
        client_factory: Callable[[AnalyticsSettings], InfluxClosable] = influx_client,
        clock: Callable[[], float] = time.time,
        on_outage: Callable[[OutageEvent], None] = lambda _event: None,
    ) -> None:
        self.settings = settings
        self.on_outage = on_outage
        self.manifest = manifest
        self.config = manifest_config(manifest)
        if settings.context_s < BASELINE_WINDOW_S + settings.agreement_window_s:
            raise ValueError(
                f"context_s ({settings.context_s}) must cover the labels' baseline window and agreement window "
                f"({BASELINE_WINDOW_S + settings.agreement_window_s} s)"
            )
        for (device, sensor), cfg in self.config.items():
            where = f"device {device} sensor {sensor}"
            check_streamable(cfg, settings.context_s, where)
            ref = cfg.qartod.neighbor.reference if cfg.qartod.neighbor is not None else None
            if ref is not None and (device, ref) not in self.config:
                raise ValueError(f"{where}: neighbor reference {ref!r} is not a sensor of the same device")
        self._client_factory = client_factory
        self._clock = clock
        self._client: InfluxClosable | None = None
        self._qc: QCService | None = None
        self.since_ms: int | None = None
        self._reconciled_at: float | None = None

    def _lookup(self, key: SeriesKey) -> ParameterQC | None:
        return self.config.get((key[2], key[3]))

    def open(self) -> None:
        if self._qc is not None:
            return
        self._client = self._client_factory(self.settings)
        s = self.settings
        self._qc = QCService(
            self._client,
            self._lookup,
            labels=s.labels,
            late_window=s.late_window_s,
            context=s.context_s,
            low_battery_pct=s.low_battery_pct,
            site_kinds={site.id: site.kind.value for _, site in self.manifest.iter_sites()},
        )
        saved = read_checkpoint(s.state_file)
        if saved is not None:
            self._qc.load_state(saved.series)
            self.since_ms = saved.since_ms

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._qc = None

    def __enter__(self) -> AnalyticsService:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self) -> None:
        """Write the checkpoint atomically (a crash leaves the previous one whole)."""
        if self._qc is None or self.since_ms is None:
            return
        write_checkpoint(self.settings.state_file, Checkpoint(self.since_ms, self._qc.state_dict()))

    def evaluate(self, start_ms: int, end_ms: int, stop: threading.Event | None = None) -> RunReport:
        """Evaluate readings with ``start_ms <= t < end_ms`` (and re-evaluate the unsettled tail before them)
        in steps of at most ``max_window_s``, checkpointing after each step.

        While InfluxDB is unavailable a step is retried from the last checkpoint (:mod:`pilotwatch.outage`);
        when ``stop`` is set during an outage the report so far is returned, everything in it checkpointed."""
        if end_ms <= start_ms:
            raise ValueError(f"the window is empty: end {end_ms} <= start {start_ms} (ms)")
        stop = stop or threading.Event()
        self.open()
        if self.since_ms is None:
            self.since_ms = start_ms - 1
        step = round(self.settings.max_window_s * 1000)
        report = RunReport()
        until = start_ms - 1
        while until < end_ms - 1:
            if stop.is_set():
                report.stopped_early = True
                break
            until = min(until + step, end_ms - 1)
            final = until >= end_ms - 1
            done = self._through_outages(functools.partial(self._evaluate_step, until, final, start_ms), stop)
            if done is None:
                report.stopped_early = True
                break
            report.add(done)
        return report

    def _evaluate_step(self, until_ms: int, final: bool, count_from_ms: int) -> RunReport:
        self.open()
        assert self._qc is not None
        assert self.since_ms is not None
        report = self._qc.run_once(self.since_ms, until_ms, final=final, count_from_ms=count_from_ms)
        self.save()
        return report

    def _reopen(self) -> None:
        """Forget what a failed step changed in memory: the next step starts from the checkpoint."""
        self.close()
        self.open()

    def _through_outages(self, attempt: Callable[[], RunReport], stop: threading.Event) -> RunReport | None:
        """``attempt`` redone from the checkpoint while InfluxDB is away; None when stopped meanwhile."""
        return ride_through(attempt, stop, reset=self._reopen, on_event=self.on_outage)

    def step(self, stop: threading.Event | None = None) -> RunReport:
        """One live pass: everything up to now (the first pass reaches back ``start_lookback_s``)."""
        self.open()
        assert self._qc is not None
        now_ms = int(self._clock() * 1000)
        horizon = self._qc.horizon_ms
        if horizon is None:
            start = now_ms - round(self.settings.start_lookback_s * 1000) if self.since_ms is None else self.since_ms
        else:
            start = horizon + 1
        stop = stop or threading.Event()
        report = self.evaluate(min(start, now_ms), now_ms + 1, stop)
        if not report.stopped_early and self.reconcile_due():
            done = self._through_outages(functools.partial(self._reconcile_step, now_ms), stop)
            if done is None:
                report.stopped_early = True
            else:
                report.add(done)
                self._reconciled_at = self._clock()
        return report

    def reconcile_due(self) -> bool:
        """Whether this pass reconciles: enabled and ``reconcile_interval_s`` since the last one (the first pass
        of a process always does: the reconciliation keeps no state of its own)."""
        interval = self.settings.reconcile_interval_s
        if interval <= 0:
            return False
        return self._reconciled_at is None or self._clock() - self._reconciled_at >= interval

    def _reconcile_step(self, now_ms: int) -> RunReport:
        self.open()
        assert self._qc is not None
        since = now_ms - round(self.settings.reconcile_lookback_s * 1000)
        return self._qc.reconcile(since, now_ms, max_hours=self.settings.reconcile_max_hours)

    def run_forever(self, stop: threading.Event, on_pass: Callable[[RunReport], None] | None = None) -> int:
        """Pass every ``interval_s`` until ``stop`` is set, riding through InfluxDB outages; 0 on a clean stop."""
        with self:
            while not stop.is_set():
                started = self._clock()
                report = self.step(stop)
                if on_pass is not None:
                    on_pass(report)
                stop.wait(max(0.0, self.settings.interval_s - (self._clock() - started)))
        return 0


def evaluate_window(  # noqa: PLR0917  # the positional form the demo calls
    manifest: Manifest,
    influx_url: str,
    database: str,
    start_ms: int,
    end_ms: int,
    state_dir: str | Path,
    *,
    token: str | None = None,
    **settings: Any,
) -> RunReport:
    """QC, anomaly scores and labels for the whole fleet's readings in ``[start_ms, end_ms)``, written back as
    ``qc`` points; the checkpoint in ``state_dir`` is continued (or started). More settings as keywords
    (``late_window_s=...``). Returns counts of the readings evaluated per flag and label, and anomalies."""
    config = AnalyticsSettings(
        influx=InfluxConnection(url=influx_url, database=database, token=SecretStr(token) if token else None),
        state_dir=Path(state_dir),
        **settings,
    )
    with AnalyticsService(config, manifest) as service:
        return service.evaluate(start_ms, end_ms)
