"""Backtesting: the rules replayed over stored history or over a simulated fleet with its ground truth.

Nothing is sent: the engine writes to a throw-away store (its outbox is never read). Two sources:

- **history** (:func:`backtest_history`): readings joined with their ``qc`` points from InfluxDB over a range,
  fed to :class:`alerts.engine.Engine` hour by hour as the live engine would have seen them.
- **simulated** (:func:`commands.alert_backtest.backtest_simulated`, in the command layer because it composes
  the simulator, the analytics core and this engine): the manifest's simulated fleet (``firmware_sim``, faults on) over
  ``days`` days; each sensor's readings go through the analytics core's public functions exactly as the live
  service runs them — QARTOD and detectors per series (:func:`analytics.pipeline.evaluate_parameter`), labels per
  site on the site's time axis (:func:`analytics.labels.label_site` with the site kind's signatures, devices with
  a dying battery marked unhealthy) — then through the same engine. Labels here are the settled ones (computed
  over the whole window); live, a label can settle up to the analytics late window after the reading.

Scoring against ground truth (:class:`Score`):

- a **pollution event** is a simulated ``sewage_discharge`` (water) or ``discharge_spike`` (effluent); it is
  caught when a pollution alert of its site is firing at some time in ``[start, end + tail]``; the delay is the
  alert's firing sample time minus the event's start;
- a pollution or limit alert is **caused by a sensor fault** when it overlaps no true event (pollution) or no
  true exceedance (limit: the environment's true value beyond the limit at a cited reading, or the rolling
  statistic of true values beyond it) and a cited reading is under a simulated fault; otherwise such an alert
  is **false**. Pollution alerts on rain are counted apart (a real environmental event, not a pollution one).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.engine import Engine, PassReport
from alerts.rules import HOUR_MS, Point, RuleConfig, RuleId, Status, rolling_statistic
from alerts.source import QueryClient, read_points, read_statuses
from alerts.store import AlertStore
from pilotwatch.manifest import AlertKind, LimitStatistic, Manifest, ParameterLimit

WEEK_MS = 7 * 86_400_000
POLLUTION_EVENTS = frozenset({"sewage_discharge", "discharge_spike"})
STATUS_EVERY_MS = 300_000
STEP_MS = HOUR_MS


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class RuleRow:
    """One line of the report: a rule (or rule family) in one city."""

    rule: str
    city: str
    alerts: int = 0
    delays_s: list[float] = field(default_factory=list)
    caught: int | None = None
    missed: int | None = None
    false: int | None = None
    on_faults: int | None = None

    def per_week(self, days: float) -> float:
        return self.alerts / (days / 7.0)


@dataclass
class Score:
    days: float
    rows: dict[tuple[str, str], RuleRow] = field(default_factory=dict)
    events: int = 0
    caught: int = 0  # by a pollution alert, or by a limit alert the event raised
    caught_by_pollution: int = 0
    false_alerts: int = 0
    fault_alerts: int = 0
    rain_alerts: int = 0
    delays_s: list[float] = field(default_factory=list)
    suppressed: int = 0
    has_truth: bool = True

    def row(self, rule: str, city: str) -> RuleRow:
        return self.rows.setdefault((rule, city), RuleRow(rule, city))

    @property
    def recall(self) -> float:
        return self.caught / self.events if self.events else float("nan")

    def table(self) -> list[str]:
        head = f"{'rule':<34} {'city':<10} {'alerts':>6} {'/week':>6} {'p50 s':>7} {'p90 s':>7}"
        if self.has_truth:
            head += f" {'caught':>6} {'missed':>6} {'false':>5} {'faults':>6}"
        out = [head]
        for (rule, city), r in sorted(self.rows.items()):
            p50 = f"{statistics.median(r.delays_s):.0f}" if r.delays_s else "-"
            p90 = f"{_percentile(r.delays_s, 0.9):.0f}" if r.delays_s else "-"
            text = f"{rule:<34} {city:<10} {r.alerts:>6} {r.per_week(self.days):>6.2f} {p50:>7} {p90:>7}"
            if self.has_truth:
                text += "".join(
                    f" {'-' if v is None else v:>{w}}"
                    for v, w in ((r.caught, 6), (r.missed, 6), (r.false, 5), (r.on_faults, 6))
                )
            out.append(text)
        return out

    def final_line(self) -> str:
        delay = f"{statistics.median(self.delays_s):.0f}" if self.delays_s else "nan"
        return (
            f"backtest: events {self.events} caught {self.caught} (recall {self.recall:.2f}) · "
            f"false alerts {self.false_alerts} (per week {self.false_alerts / (self.days / 7.0):.2f}) · "
            f"alerts on sensor faults {self.fault_alerts} · median delay {delay} s"
        )


def replay(
    engine: Engine, points: Sequence[Point], statuses: Sequence[Status], start_ms: int, end_ms: int
) -> PassReport:
    """Feed the engine hour by hour (``now`` = the end of each hour), as the live engine would have seen it."""
    report = PassReport()
    pts = sorted(points, key=lambda p: p.arrival_ms or p.t_ms)
    sts = sorted(statuses, key=lambda s: s.t_ms)
    i = j = 0

    def arrived(p: Point) -> int:
        return p.t_ms if p.arrival_ms is None else p.arrival_ms

    for step_end in range(start_ms + STEP_MS, end_ms + STEP_MS, STEP_MS):
        lo_i, lo_j = i, j
        while i < len(pts) and arrived(pts[i]) < step_end:
            i += 1
        while j < len(sts) and sts[j].t_ms < step_end:
            j += 1
        report.add(engine.process(pts[lo_i:i], sts[lo_j:j], min(step_end, end_ms)))
    return report


# ------------------------------------------------------------------------------------------------ simulated
@dataclass(frozen=True, slots=True)
class TruthKey:
    device: str
    sensor: str
    t_ms: int


@dataclass(frozen=True, slots=True)
class Truth:
    value: float
    true_value: float
    truth: str
    event: str


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def _limit_true(
    alert: dict[str, Any], truth: dict[TruthKey, Truth], by_series: dict[tuple[str, str], list[tuple[int, float]]]
) -> bool:
    body = alert["body"]
    limit = ParameterLimit(min=body.get("min"), max=body.get("max"), statistic=LimitStatistic(body["statistic"]))

    def beyond(x: float) -> bool:
        return (limit.min is not None and x < limit.min) or (limit.max is not None and x > limit.max)

    if limit.statistic is LimitStatistic.SAMPLE:
        return any(
            beyond(truth[k].true_value)
            for r in body["readings"]
            if (k := TruthKey(str(r["device"]), str(r["sensor"]), int(r["t_ms"]))) in truth
        )
    window_ms = round(float(body["window_days"]) * 86_400_000)
    t1 = int(alert["fired_ms"])
    vals = sorted(v for t, v in by_series[(alert["device"], alert["sensor"])] if t1 - window_ms < t <= t1)
    if not vals:
        return False
    return beyond(rolling_statistic(limit.statistic, vals, sum(vals), sum(math.log(max(v, 1e-12)) for v in vals)))


def score_simulated(
    alerts: Iterable[dict[str, Any]],
    truth: dict[TruthKey, Truth],
    fleet: Any,
    *,
    manifest: Manifest,
    start_ms: int,
    end_ms: int,
) -> Score:
    days = (end_ms - start_ms) / 86_400_000
    score = Score(days=days)
    alerts = list(alerts)
    city_of = {s.id: c.id for c, s in manifest.iter_sites()}
    by_series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for k, tr in truth.items():
        by_series[(k.device, k.sensor)].append((k.t_ms, tr.true_value))
    # every alert: its row
    for a in alerts:
        score.row(
            a["rule"].split(":")[0] if a["kind"] == AlertKind.LIMIT_EXCEEDANCE else a["rule"], a["city"]
        ).alerts += 1
    # pollution events: caught by the pollution alert of their site, or by a limit alert the event raised
    limit_true = {
        a["alert_id"]: _limit_true(a, truth, by_series) for a in alerts if a["kind"] == AlertKind.LIMIT_EXCEEDANCE
    }
    for site_id, model in fleet.sites.items():
        city = city_of[site_id]
        site_alerts = [a for a in alerts if a["rule"] == RuleId.POLLUTION and a["site"] == site_id]
        site_limits = [a for a in alerts if limit_true.get(a["alert_id"]) and a["site"] == site_id]
        row = score.row(RuleId.POLLUTION, city) if site_alerts or model.site.kind.value != "bin" else None
        for event in model.events_between(start_ms, end_ms):
            if event.kind not in POLLUTION_EVENTS:
                continue
            score.events += 1
            until = event.end_ms + event.tail_ms
            hit = [
                a for a in site_alerts if _overlaps(a["episode_ms"], a["resolved_ms"] or end_ms, event.start_ms, until)
            ]
            if row is not None:
                row.caught = (row.caught or 0) + bool(hit)
                row.missed = (row.missed or 0) + (not hit)
            if hit:
                score.caught_by_pollution += 1
                delay = max(0.0, (min(a["fired_ms"] for a in hit) - event.start_ms) / 1000)
                if row is not None:
                    row.delays_s.append(delay)
            hit += [a for a in site_limits if event.start_ms <= a["fired_ms"] <= until]
            if hit:
                score.caught += 1
                score.delays_s.append(max(0.0, (min(a["fired_ms"] for a in hit) - event.start_ms) / 1000))
        for a in site_alerts:
            episode = (a["episode_ms"], a["resolved_ms"] or end_ms)
            events = [
                e
                for e in model.events_between(start_ms - WEEK_MS, end_ms)
                if _overlaps(*episode, e.start_ms, e.end_ms + e.tail_ms)
            ]
            if any(e.kind in POLLUTION_EVENTS for e in events):
                continue
            if events:
                score.rain_alerts += 1
                continue
            _count_wrong(score, score.row(RuleId.POLLUTION, city), a, truth)
    # limit alerts
    for a in alerts:
        if a["kind"] != AlertKind.LIMIT_EXCEEDANCE:
            continue
        row = score.row(a["rule"].split(":")[0], a["city"])
        if limit_true[a["alert_id"]]:
            row.caught = (row.caught or 0) + 1
            row.delays_s.append(max(0.0, (a["fired_ms"] - a["episode_ms"]) / 1000))
        else:
            _count_wrong(score, row, a, truth)
    # device alerts against injected faults (informational: operators, not city staff)
    faults = fleet.faults(start_ms, end_ms)
    for city_id in {c.id for c in manifest.cities}:
        row = score.row("device (all, vs injected faults)", city_id)
        devs = {d.id for c, _, d in manifest.iter_devices() if c.id == city_id}
        dev_alerts = [a for a in alerts if a["kind"] == AlertKind.DEVICE and a["device"] in devs]
        row.alerts = len(dev_alerts)
        seen_faults = [f for f in faults if f.device in devs and f.kind.value not in ("clock_jump", "spike")]
        for f in seen_faults:
            hit = [
                a
                for a in dev_alerts
                if a["device"] == f.device
                and (not a["sensor"] or f.sensor is None or a["sensor"] == f.sensor)
                and _overlaps(a["episode_ms"] - 6 * HOUR_MS, a["resolved_ms"] or end_ms, f.start_ms, f.end_ms + HOUR_MS)
            ]
            row.caught = (row.caught or 0) + bool(hit)
            row.missed = (row.missed or 0) + (not hit)
            if hit:
                row.delays_s.append(max(0.0, (min(a["fired_ms"] for a in hit) - f.start_ms) / 1000))
        row.false = sum(
            1
            for a in dev_alerts
            if not any(
                f.device == a["device"]
                and _overlaps(a["episode_ms"] - 6 * HOUR_MS, a["resolved_ms"] or end_ms, f.start_ms, f.end_ms + HOUR_MS)
                for f in faults
            )
        )
        if not dev_alerts and not seen_faults:
            del score.rows[("device (all, vs injected faults)", city_id)]
    return score


def _count_wrong(score: Score, row: Any, alert: dict[str, Any], truth: dict[TruthKey, Truth]) -> None:
    refs = [TruthKey(str(r["device"]), str(r["sensor"]), int(r["t_ms"])) for r in alert["body"]["readings"]]
    if any(k in truth and truth[k].truth.startswith("fault:") for k in refs):
        score.fault_alerts += 1
        row.on_faults = (row.on_faults or 0) + 1
    else:
        score.false_alerts += 1
        row.false = (row.false or 0) + 1


def default_start(manifest: Manifest) -> int:
    """The earliest baseline start of the manifest's sites, 00:00 UTC."""
    first = min(s.periods.baseline.start for _, s in manifest.iter_sites())
    return int(dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)


def backtest_history(
    manifest: Manifest,
    client: QueryClient,
    start_ms: int,
    end_ms: int,
    *,
    config: RuleConfig | None = None,
    store_dir: Path | None = None,
) -> Score:
    """Run the rules over stored readings and their ``qc`` points in ``(start_ms, end_ms]``; no ground truth:
    delays are from the episode's first triggering reading to the decision."""
    if end_ms <= start_ms:
        raise ValueError(f"the range is empty: end {end_ms} <= start {start_ms} (ms)")
    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(store_dir or tmp) / "backtest.sqlite")
        try:
            engine = Engine(manifest, store, config)
            report = PassReport()
            for lo in range(start_ms, end_ms, 86_400_000):
                hi = min(lo + 86_400_000, end_ms)
                report.add(replay(engine, read_points(client, lo, hi), read_statuses(client, lo, hi), lo, hi))
            alerts = store.all_alerts()
        finally:
            store.close()
    score = Score(days=(end_ms - start_ms) / 86_400_000, has_truth=False, suppressed=report.suppressed)
    for a in alerts:
        row = score.row(a["rule"].split(":")[0] if a["kind"] == AlertKind.LIMIT_EXCEEDANCE else a["rule"], a["city"])
        row.alerts += 1
        row.delays_s.append((a["fired_ms"] - a["episode_ms"]) / 1000)
    return score
