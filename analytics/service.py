"""The live QC service: QARTOD flags, anomaly scores and fault/event labels for the readings in InfluxDB.

In: readings that ingest writes (measurement ``reading``, tags ``city, site, device, sensor, param``, field
``value``, time = sample time in ms). Out: measurement ``qc`` with the same tags and sample time, fields ``flag``
(integer aggregate QARTOD flag), one integer field per configured QARTOD test (``gross_range``, ``spike``, ...),
``anomaly_score`` (float, alarm units), ``anomaly`` (integer 0/1) and ``label`` (string: good, fault, event).
Writes are idempotent: a point's identity is (measurement, tags, time), so re-evaluating a window overwrites.

Late data (an edge buffer flushing after an outage) is handled by **re-reading the trailing window**: per series
the service keeps a *horizon*; detector state is committed only up to the horizon, and every run re-reads and
re-evaluates everything after it (plus ``context`` seconds before it, so spike, flat-line and attenuated-signal
windows and the fault/event agreement window see their history). After a run the horizon moves to
``until - late_window``. So a reading that arrives up to ``late_window`` seconds late is evaluated exactly as
if it had arrived on time — the results equal a batch run over the same data — and the readings around it are
re-flagged and re-labelled. Readings later than that are still flagged by QARTOD when their window is re-read
but are not learned by the detectors (their state has moved on); ``RunReport.too_late`` counts them.
This choice needs no ingest-time field and works with any writer.

The client is injected (anything with ``query(q, epoch="ms") -> rows`` and ``write_lines(lines)``, such as
:class:`pilotwatch.influx.InfluxV1`), so a unit test can count calls; the integration test uses a real influxd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from analytics import detectors as det
from analytics import qartod
from analytics.config import Labels, ParameterQC
from analytics.labels import LABEL_NAMES, Label, label_site
from analytics.pipeline import build_detectors, run_qartod

TAGS = ("city", "site", "device", "sensor", "param")
SeriesKey = tuple[str, str, str, str, str]
NS_PER_MS = 1_000_000


class InfluxClient(Protocol):
    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]: ...

    def write_lines(self, lines: Iterable[str], precision: str = "ms") -> Any: ...


@dataclass
class _Series:
    horizon_ms: int
    detectors: dict[str, det.Detector]
    seen_until_ms: int
    seen: set[int] = field(default_factory=set)  # sample times already read, back to horizon - context


@dataclass
class RunReport:
    series: int = 0
    points_written: int = 0
    late_points: int = 0
    too_late: int = 0
    sites: set[tuple[str, str]] = field(default_factory=set)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def qc_line(key: SeriesKey, time_ms: int, fields: Mapping[str, int | float | str]) -> str:
    tags = ",".join(f"{name}={_escape(value)}" for name, value in zip(TAGS, key, strict=True))
    parts = []
    for name, value in fields.items():
        if isinstance(value, str):
            parts.append(f'{name}="{value}"')
        elif isinstance(value, int | np.integer):
            parts.append(f"{name}={int(value)}i")
        else:
            parts.append(f"{name}={float(value)!r}")
    return f"qc,{tags} {','.join(parts)} {time_ms}"


class QCService:
    """Evaluate the live stream window by window (see the module docstring)."""

    def __init__(
        self,
        client: InfluxClient,
        config: Mapping[str, ParameterQC] | Callable[[SeriesKey], ParameterQC | None],
        *,
        labels: Labels | None = None,
        late_window: float = 6 * 3600.0,
        context: float = 24 * 3600.0,
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
        self._series: dict[SeriesKey, _Series] = {}

    def config_for(self, key: SeriesKey) -> ParameterQC | None:
        if callable(self._config):
            return self._config(key)
        return self._config.get(key[4])

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-able checkpoint of every series' horizon and detector state (restore with ``load_state``)."""
        return {
            "|".join(key): {
                "horizon_ms": s.horizon_ms,
                "seen_until_ms": s.seen_until_ms,
                "seen": sorted(s.seen),
                "detectors": {name: d.state_dict() for name, d in s.detectors.items()},
            }
            for key, s in self._series.items()
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        for joined, s in state.items():
            key = tuple(joined.split("|"))
            self._series[key] = _Series(  # type: ignore[index]
                horizon_ms=int(s["horizon_ms"]),
                detectors={name: det.detector_from_state(d) for name, d in s["detectors"].items()},
                seen_until_ms=int(s["seen_until_ms"]),
                seen={int(t) for t in s["seen"]},
            )

    # -- one pass ---------------------------------------------------------------------------------------------
    def _read(
        self, since_ms: int, until_ms: int
    ) -> dict[SeriesKey, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        q = (
            f"SELECT value FROM reading WHERE time > {since_ms}ms AND time <= {until_ms}ms "  # noqa: S608  # integers only
            "GROUP BY city, site, device, sensor, param"
        )
        rows: dict[SeriesKey, list[tuple[int, float]]] = {}
        for row in self.client.query(q, epoch="ms"):
            key = tuple(str(row.get(t, "")) for t in TAGS)
            v = row["value"]
            rows.setdefault(key, []).append((int(row["time"]), math.nan if v is None else float(v)))  # type: ignore[arg-type]
        out = {}
        for key, pts in rows.items():
            pts.sort()
            out[key] = (np.array([p[0] for p in pts], dtype=np.int64), np.array([p[1] for p in pts], dtype=np.float64))
        return out

    def run_once(self, since_ms: int, until_ms: int) -> RunReport:
        """Evaluate readings up to ``until_ms``; series seen for the first time start after ``since_ms``."""
        report = RunReport()
        earliest = min(s.horizon_ms for s in self._series.values()) if self._series else since_ms
        data = self._read(earliest - self.context_ms, until_ms)
        per_site: dict[tuple[str, str], dict[SeriesKey, dict[str, Any]]] = {}
        for key, (t_ms, values) in data.items():
            cfg = self.config_for(key)
            if cfg is None:
                continue
            state = self._series.get(key)
            if state is None:
                state = _Series(horizon_ms=since_ms, detectors=build_detectors(cfg), seen_until_ms=since_ms)
                self._series[key] = state
            report.series += 1
            fresh = t_ms > state.horizon_ms
            unseen = np.array([int(t) not in state.seen for t in t_ms], dtype=bool)
            report.late_points += int(np.count_nonzero(fresh & unseen & (t_ms <= state.seen_until_ms)))
            report.too_late += int(np.count_nonzero(~fresh & unseen & (t_ms <= state.seen_until_ms)))
            times_ns = (t_ms * NS_PER_MS).view("datetime64[ns]")
            tests = run_qartod(values, times_ns, cfg)
            flag = qartod.aggregate(tests) if tests else np.where(np.isfinite(values), 2, 9).astype(np.uint8)
            learnable = np.where(flag == qartod.QartodFlags.FAIL, np.nan, values)
            new_horizon = max(state.horizon_ms, until_ms - self.late_ms)
            score = np.zeros(values.shape[0])
            for name, committed in state.detectors.items():
                trial = det.detector_from_state(committed.state_dict())
                s = trial.alarm_score(learnable[fresh], times_ns[fresh])
                score[fresh] = np.fmax(score[fresh], np.nan_to_num(s, nan=0.0))
                commit = fresh & (t_ms <= new_horizon)
                committed.score_many(learnable[commit], times_ns[commit])
                state.detectors[name] = committed
            score[~np.isfinite(values)] = np.nan
            anomaly = (np.nan_to_num(score) >= 1.0) | np.isin(
                flag, (qartod.QartodFlags.SUSPECT, qartod.QartodFlags.FAIL)
            )
            per_site.setdefault((key[0], key[1]), {})[key] = {
                "t": t_ms,
                "fresh": fresh,
                "tests": tests,
                "flag": flag,
                "score": score,
                "anomaly": anomaly,
            }
            state.horizon_ms = new_horizon
            state.seen = {int(t) for t in t_ms if t > new_horizon - self.context_ms}
            state.seen_until_ms = max(state.seen_until_ms, until_ms)
        lines: list[str] = []
        for site, series in per_site.items():
            report.sites.add(site)
            axis = np.unique(np.concatenate([ser["t"] for ser in series.values()]))
            aligned_tests: dict[str, dict[str, npt.NDArray[np.uint8]]] = {}
            aligned_flag: dict[str, npt.NDArray[np.uint8]] = {}
            aligned_anom: dict[str, npt.NDArray[np.bool_]] = {}
            for key, ser in series.items():
                pos = np.searchsorted(axis, ser["t"])
                name = "|".join(key)
                f = np.full(axis.shape[0], qartod.QartodFlags.MISSING, dtype=np.uint8)
                f[pos] = ser["flag"]
                a = np.zeros(axis.shape[0], dtype=bool)
                a[pos] = ser["anomaly"]
                tt = {}
                for test, flags in ser["tests"].items():
                    col = np.full(axis.shape[0], qartod.QartodFlags.MISSING, dtype=np.uint8)
                    col[pos] = flags
                    tt[test] = col
                aligned_tests[name], aligned_flag[name], aligned_anom[name] = tt, f, a
            labels = label_site(
                aligned_tests,
                aligned_flag,
                aligned_anom,
                axis * NS_PER_MS,
                agreement_window=self.labels.agreement_window,
                min_agree=self.labels.min_agree,
            )
            for key, ser in series.items():
                lab = labels["|".join(key)][np.searchsorted(axis, ser["t"])]
                for i in np.flatnonzero(ser["fresh"]):
                    if not math.isfinite(ser["score"][i]):
                        continue
                    fields: dict[str, int | float | str] = {"flag": int(ser["flag"][i])}
                    fields.update({test: int(flags[i]) for test, flags in ser["tests"].items()})
                    fields["anomaly_score"] = float(ser["score"][i])
                    fields["anomaly"] = int(ser["anomaly"][i])
                    fields["label"] = LABEL_NAMES[Label(int(lab[i]))]
                    lines.append(qc_line(key, int(ser["t"][i]), fields))
        for lo in range(0, len(lines), 5000):
            response = self.client.write_lines(lines[lo : lo + 5000], precision="ms")
            status = getattr(response, "status_code", 204)
            if status >= 300:
                raise RuntimeError(f"InfluxDB refused the qc points ({status}): {getattr(response, 'text', '')[:300]}")
        report.points_written = len(lines)
        return report
