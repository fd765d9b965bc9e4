"""The alert engine: points in, decided and stored alerts out — the same code live and in the backtest.

:class:`Engine` ``.process(points, statuses, now_ms)`` takes readings joined with their QC verdict
(:class:`alerts.rules.Point`) and device status points, in any order, and

1. feeds every rule's evaluator the points of each of its series in sample-time order, one observation per
   (series, sample time) — readings that arrive late from an edge buffer are evaluated in sample-time order,
   and anything at or before what a series has already seen changes nothing (:mod:`alerts.machine`);
2. observes each device's clock offset from ingest's ``delivery`` points (``device.clock_off``, on ingest's
   clock), and silence at ``now_ms``: a device ingest has not heard from for ``silent_after_s`` — judged on when
   its messages *arrived* (``delivery``), or on its newest sample time where no arrival is known (the backtest)
   — raises one ``device`` alert, which resolves when it is heard again; one of its sensors raises one when its
   newest sample falls ``silent_after_s`` behind its device's newest (the device's own clock on both sides, so a
   clock that jumped back silences nothing);
3. writes everything the pass changed — rule states, newest sample times, fired alerts, resolved alerts and
   their outbox transitions — in **one** SQLite transaction (:class:`alerts.store.AlertStore`).

A fired alert that falls inside a silence is stored with ``silenced`` set (and so is its transition): it is
recorded, never dropped. :func:`alert_lines` renders alerts as points of the ``alert`` measurement; the live
service writes those after each pass for Grafana (idempotent: one point per alert, overwritten on change).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.machine import Condition, Event, EventKind, Machine, Observation, State
from alerts.rules import (
    Delivery,
    Point,
    RollingLimit,
    Rule,
    RuleConfig,
    RuleId,
    Status,
    clock_condition,
    rules_from_manifest,
)
from alerts.store import AlertStore, NewAlert, Silence, alert_id
from pilotwatch.manifest import Manifest
from pilotwatch.schema import Measurement, line

SUPPORT_KEEP = 12
"""Readings cited per alert: the newest ones of the episode up to the decision."""


@dataclass
class PassReport:
    points: int = 0
    observations: int = 0
    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    duplicates: int = 0  # FIRED decisions whose episode was already stored (a replay after a crash)
    suppressed: int = 0  # readings the QC gate kept from limit and pollution rules
    silenced: int = 0

    def add(self, other: PassReport) -> None:
        self.points += other.points
        self.observations += other.observations
        self.fired += other.fired
        self.resolved += other.resolved
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.silenced += other.silenced


def arrival_key(device_series: str) -> str:
    """Where the newest arrival of a device (ingest's receive time) is kept beside the newest sample times."""
    return f"arrival:{device_series}"


def split_series(series: str) -> tuple[str, str, str, str]:
    parts = [*series.split("|"), "", "", ""]
    return parts[0], parts[1], parts[2], parts[3]


class Engine:
    """Rules of a manifest over a store (module docstring). Not thread-safe: one pass at a time."""

    def __init__(self, manifest: Manifest, store: AlertStore, config: RuleConfig | None = None) -> None:
        self.manifest = manifest
        self.config = config or RuleConfig()
        self.store = store
        self.rules = rules_from_manifest(manifest, self.config)
        self.rule_by_id = {r.id: r for r in self.rules}
        self.machines = {r.id: Machine(r.timing) for r in self.rules}
        self.states: dict[tuple[str, str], State] = store.load_states()
        self.seen: dict[str, int] = store.load_seen()
        self.silent_after_ms = round(self.config.silent_after_s * 1000)
        self._support: dict[tuple[str, str], deque[dict[str, object]]] = defaultdict(lambda: deque(maxlen=SUPPORT_KEEP))
        self.placement = {
            d.id: (c.id, s.id, [x.id for x in d.sensors], max(x.interval_s for x in d.sensors))
            for c, s, d in manifest.iter_devices()
        }

    def warmups(self) -> list[tuple[str, frozenset[str], int]]:
        """(parameter, sites, history ms) that rolling statistics need replayed after a start: only their own
        series, so a restart does not read a month of the whole fleet."""
        out = []
        for r in self.rules:
            ev = r.evaluator
            if isinstance(ev, RollingLimit):
                out.append((ev.param, ev.sites, ev.context_ms))
        return out

    # -- one pass ---------------------------------------------------------------------------------------------
    def process(
        self, points: Iterable[Point], statuses: Iterable[Status], now_ms: int, deliveries: Iterable[Delivery] = ()
    ) -> PassReport:
        report = PassReport()
        pts = sorted(points, key=lambda p: (p.t_ms, p.device, p.sensor))
        report.points = len(pts)
        changed: dict[tuple[str, str], State] = {}
        decisions: list[tuple[Rule, str, Event, list[dict[str, object]]]] = []

        def feed(rule: Rule, series: str, obs: Observation, support: Sequence[Point] = ()) -> None:
            key = (rule.id, series)
            state = changed.get(key) or self.states.get(key) or State()
            new, events = self.machines[rule.id].transition(state, obs, now_ms)
            report.observations += 1
            if new != state:
                changed[key] = new
            if obs.condition is Condition.TRIGGER:
                buf = self._support[key]
                if new.episode_ms is not None and buf and int(str(buf[0]["t_ms"])) < new.episode_ms:
                    buf.clear()
                buf.extend(p.ref() for p in support)
            for event in events:
                decisions.append((rule, series, event, list(self._support[key])))
                if event.kind is EventKind.RESOLVED:
                    self._support[key].clear()

        # 1. readings, grouped per rule, series and sample time
        for rule in self.rules:
            ev = rule.evaluator
            if ev is None:
                continue
            groups: dict[tuple[str, int], list[Point]] = {}
            for p in pts:
                s = ev.series(p)
                if s is not None:
                    groups.setdefault((s, p.t_ms), []).append(p)
            for (series, _), group in groups.items():
                obs = ev.observe(series, group)
                if obs.condition is Condition.UNUSABLE and rule.kind.value in ("pollution", "limit_exceedance"):
                    report.suppressed += 1
                feed(rule, series, obs, group if obs.condition is Condition.TRIGGER else ())
        # 2. device status
        for st in sorted(statuses, key=lambda s: s.t_ms):
            series = f"{st.city}|{st.site}|{st.device}"
            c = self.config
            if st.battery_pct is not None:
                b = st.battery_pct
                cond = (
                    Condition.TRIGGER
                    if b < c.battery_low_pct
                    else Condition.CLEAR
                    if b >= c.battery_ok_pct
                    else Condition.HOLD
                )
                feed(self.rule_by_id[RuleId.BATTERY_LOW], series, Observation(st.t_ms, cond, b))
            if st.buffer_depth is not None:
                d = st.buffer_depth
                cond = (
                    Condition.TRIGGER if d > c.buffer_high else Condition.CLEAR if d <= c.buffer_ok else Condition.HOLD
                )
                feed(self.rule_by_id[RuleId.BUFFER_HIGH], series, Observation(st.t_ms, cond, float(d)))
        # 3. the device clock, and when each device was last heard (ingest's clock, from its delivery points)
        seen_changed: dict[str, int] = {}
        for dl in sorted(deliveries, key=lambda d: d.t_ms):
            series = f"{dl.city}|{dl.site}|{dl.device}"
            if dl.clock_offset_ms is not None:
                cond = clock_condition(dl.clock_offset_ms, self.config)
                obs = Observation(dl.t_ms, cond, dl.clock_offset_ms / 1000)
                feed(self.rule_by_id[RuleId.CLOCK_OFF], series, obs)
            heard = dl.heard_ms
            if heard is not None and heard > self.seen.get(arrival_key(series), -1):
                self.seen[arrival_key(series)] = seen_changed[arrival_key(series)] = heard
        # 4. silence: arrival where known, else the newest sample time; sensors against their device's newest

        for p in pts:
            for key in (f"{p.city}|{p.site}|{p.device}", f"{p.city}|{p.site}|{p.device}|{p.sensor}"):
                if p.t_ms > self.seen.get(key, -1):
                    self.seen[key] = p.t_ms
                    seen_changed[key] = p.t_ms
        for obs_rule, series, obs in self._silence(now_ms):
            feed(self.rule_by_id[obs_rule], series, obs)
        # 5. one transaction for the whole pass
        silences = self.store.silences() if decisions else []
        with self.store.transaction() as conn:
            for (rule_id, series), state in changed.items():
                AlertStore.save_state(conn, rule_id, series, state)
            for key, t in seen_changed.items():
                AlertStore.save_seen(conn, key, t)
            for rule, series, event, support in decisions:
                if event.kind is EventKind.FIRED:
                    alert = self._new_alert(rule, series, event, support)
                    silenced = any(_covers(s, alert) for s in silences)
                    if self.store.insert_fired(conn, alert, silenced):
                        report.fired.append(alert.alert_id)
                        report.silenced += int(silenced)
                    else:
                        report.duplicates += 1
                else:
                    aid = alert_id(rule.id, series, event.episode_ms)
                    if self.store.mark_resolved(conn, aid, event.t_ms, event.decided_ms):
                        report.resolved.append(aid)
        self.states.update(changed)
        return report

    def _silence(self, now_ms: int) -> list[tuple[str, str, Observation]]:
        out: list[tuple[str, str, Observation]] = []
        for device, (city, site, sensors, interval_s) in self.placement.items():
            dkey = f"{city}|{site}|{device}"
            newest = self.seen.get(dkey)  # the newest sample time, on the device's clock
            # Silence is a matter of arrival: a device whose clock jumped back keeps talking while its newest
            # sample time stands still. Sample time stands in only where no arrival is known (the backtest).
            heard = self.seen.get(arrival_key(dkey), newest)
            if heard is None:
                continue  # never heard from: nothing to compare with (it is not commissioned here yet)
            after = max(self.silent_after_ms, round(3 * interval_s * 1000))
            if now_ms - heard > after:
                out.append((RuleId.DEVICE_SILENT, dkey, Observation(heard + after + 1, Condition.TRIGGER)))
                continue  # a silent device's sensors are not silent one by one
            out.append((RuleId.DEVICE_SILENT, dkey, Observation(now_ms, Condition.CLEAR)))
            for sensor in sensors:
                slast = self.seen.get(f"{dkey}|{sensor}")
                if slast is None or newest is None:
                    continue
                skey = f"{dkey}|{sensor}"
                # Both observations on the device's clock: the time at which the sensor falls behind, and the
                # device's newest sample while it has not (never after a TRIGGER that came before it).
                if newest - slast > after:
                    out.append((RuleId.SENSOR_SILENT, skey, Observation(slast + after + 1, Condition.TRIGGER)))
                else:
                    out.append((RuleId.SENSOR_SILENT, skey, Observation(newest, Condition.CLEAR)))
        return out

    def _new_alert(self, rule: Rule, series: str, event: Event, support: list[dict[str, object]]) -> NewAlert:
        city, site, device, sensor = split_series(series)
        param = str(rule.detail.get("param", "")) or (str(support[-1]["param"]) if support else "")
        title = rule.title
        where = device or site
        if sensor:
            where = f"{device}/{sensor}"
        body: dict[str, Any] = {
            "rule": rule.id,
            "series": series,
            "episode_ms": event.episode_ms,
            "value": event.value,
            "param": param,
            "readings": support,
            "qc": "readings flagged FAIL or labelled fault are never used for limit or pollution alerts",
            **rule.detail,
        }
        if rule.id == RuleId.POLLUTION:
            body["params"] = sorted({str(r["param"]) for r in support})
            body["magnitude"] = event.value
        return NewAlert(
            rule=rule.id,
            series=series,
            episode_ms=event.episode_ms,
            kind=rule.kind,
            city=city,
            site=site,
            device=device,
            sensor=sensor,
            severity=rule.severity,
            title=f"{title} at {where}",
            fired_ms=event.t_ms,
            decided_ms=event.decided_ms,
            value=event.value,
            body=body,
        )


def _covers(s: Silence, a: NewAlert) -> bool:
    return s.covers(a.city, a.site, a.device, a.kind.value, a.fired_ms)


def alert_lines(alerts: Iterable[dict[str, Any]]) -> list[str]:
    """Alerts (store rows) as ``alert`` points: one per alert at its firing time, overwritten on change."""
    out = []
    for a in alerts:
        tags = {
            "city": a["city"],
            "site": a["site"],
            "device": a["device"],
            "sensor": a["sensor"],
            "kind": a["kind"],
            "rule": a["rule"],
        }
        fields: dict[str, Any] = {
            "alert_id": a["alert_id"],
            "title": a["title"],
            "severity": a["severity"],
            "status": a["status"],
            "firing": int(a["firing"]),
            "silenced": int(a["silenced"]),
            "value": a["value"],
            "resolved_ms": a["resolved_ms"],
        }
        out.append(line(Measurement.ALERT, tags, fields, int(a["fired_ms"])))
    return out
