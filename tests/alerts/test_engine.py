"""The engine over a real SQLite store: QC gating, one alert per episode across restarts and kill -9, silence,
lifecycle actions and their outbox transitions, silences."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.engine import Engine
from alerts.rules import Point, RuleId, Status
from alerts.store import AlertStore
from pilotwatch.alerting import TransitionKind
from pilotwatch.manifest import Manifest, load_manifest

CITY, SITE, DEVICE = "bangkok", "bkk-pratunam-pier", "bkk-pratunam-wq1"
T0 = 1_772_323_200_000  # 2026-03-01 00:00 UTC
STEP = 300_000
PH_RULE = "limit:th-surface-class4:ph"


def ph(i: int, value: float, *, flag: int = 1, label: str = "good", sensor: str = "ph") -> Point:
    return Point(CITY, SITE, DEVICE, sensor, "ph", T0 + i * STEP, value, flag, label)


def others(i: int, label: str = "good") -> list[Point]:
    """The device's other sensors, so it is not silent."""
    return [
        Point(CITY, SITE, DEVICE, s, p, T0 + i * STEP, v, 1, label)
        for s, p, v in (("do", "do", 1.6), ("temp", "temperature", 30.0))
    ]


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    s = AlertStore(tmp_path / "alerts.sqlite")
    yield s
    s.close()


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


def feed(engine: Engine, points: list[Point], statuses: list[Status] = ()) -> None:  # type: ignore[assignment]
    """Hour by hour, now = end of the hour, as the backtest does."""
    by_hour: dict[int, list[Point]] = {}
    for p in points:
        by_hour.setdefault((p.t_ms - T0) // 3_600_000, []).append(p)
    for hour in sorted(by_hour):
        engine.process(
            by_hour[hour], [s for s in statuses if (s.t_ms - T0) // 3_600_000 == hour], T0 + (hour + 1) * 3_600_000
        )


def test_a_good_exceedance_fires_one_limit_alert_with_its_readings(store: AlertStore, manifest: Manifest) -> None:
    engine = Engine(manifest, store)
    points = [p for i in range(24) for p in [ph(i, 9.6 if 4 <= i < 12 else 7.2), *others(i)]]
    feed(engine, points)
    alerts = [a for a in store.all_alerts() if a["rule"] == PH_RULE]
    assert len(alerts) == 1
    a = alerts[0]
    assert a["kind"] == "limit_exceedance"
    assert (a["city"], a["site"], a["device"], a["sensor"]) == (CITY, SITE, DEVICE, "ph")
    assert a["episode_ms"] == T0 + 4 * STEP
    assert a["fired_ms"] == T0 + 7 * STEP  # 15 minutes held
    assert a["status"] == "resolved"
    assert not a["firing"]
    assert a["body"]["citation"].startswith("[TH1]")
    assert a["body"]["statistic"] == "sample"
    assert [r["t_ms"] for r in a["body"]["readings"]][-1] == T0 + 7 * STEP
    outbox = store.transitions_after(0)
    assert [(t.alert_id, t.transition) for t in outbox if t.alert_id == a["alert_id"]] == [
        (a["alert_id"], TransitionKind.FIRED),
        (a["alert_id"], TransitionKind.RESOLVED),
    ]


@pytest.mark.parametrize(
    ("flag", "label"),
    [(4, "good"), (3, "fault"), (1, "fault"), (9, "missing")],
    ids=["fail", "suspect-fault", "fault", "missing"],
)
def test_qc_gate_keeps_bad_readings_from_city_alerts(
    store: AlertStore, manifest: Manifest, flag: int, label: str
) -> None:
    """A FAIL, or a fault label, never raises limit_exceedance or pollution; a fault raises a device alert."""
    engine = Engine(manifest, store)
    points = [p for i in range(36) for p in [ph(i, 12.0, flag=flag, label=label), *others(i)]]
    feed(engine, points)
    kinds = {a["kind"] for a in store.all_alerts()}
    assert "limit_exceedance" not in kinds
    assert "pollution" not in kinds
    if label == "fault" or flag == 4:
        assert [a["rule"] for a in store.all_alerts()] == [RuleId.SENSOR_FAULT]


def test_suspect_event_reading_still_counts(store: AlertStore, manifest: Manifest) -> None:
    """SUSPECT without a fault label is the water, not the sensor: it may raise city alerts."""
    engine = Engine(manifest, store)
    points = [p for i in range(12) for p in [ph(i, 9.8, flag=3, label="event"), *others(i)]]
    feed(engine, points)
    assert sorted(a["rule"] for a in store.all_alerts() if a["kind"] != "device") == [PH_RULE, RuleId.POLLUTION]


def test_oscillation_around_the_limit_is_one_alert(store: AlertStore, manifest: Manifest) -> None:
    engine = Engine(manifest, store)
    points = [p for i in range(96) for p in [ph(i, 9.3 if i % 2 else 8.9), *others(i)]]
    feed(engine, points)
    assert len([a for a in store.all_alerts() if a["rule"] == PH_RULE]) == 1


def test_restart_with_the_same_store_or_a_lost_state_decides_each_episode_once(
    tmp_path: Path, manifest: Manifest
) -> None:
    points = [p for i in range(48) for p in [ph(i, 9.6 if (i // 12) % 2 else 7.0), *others(i)]]
    path = tmp_path / "alerts.sqlite"
    first = AlertStore(path)
    feed(Engine(manifest, first), points)
    ids = sorted(a["alert_id"] for a in first.all_alerts())
    assert len([a for a in first.all_alerts() if a["rule"] == PH_RULE]) == 2
    first.close()
    # a restart replays the whole window: nothing new
    again = AlertStore(path)
    feed(Engine(manifest, again), points)
    assert sorted(a["alert_id"] for a in again.all_alerts()) == ids
    # even with the rule state gone, the deterministic id and the unique constraint hold
    with again.transaction() as conn:
        conn.execute("DELETE FROM rule_state")
    engine = Engine(manifest, again)
    feed(engine, points)
    assert sorted(a["alert_id"] for a in again.all_alerts()) == ids
    again.close()


def test_silence_raises_one_device_alert_and_a_replay_resolves_it(store: AlertStore, manifest: Manifest) -> None:
    """A device silent for an hour: one device.silent alert; its buffer replayed afterwards: resolved, and a
    firing limit alert neither resolves nor fires again because of the gap."""
    engine = Engine(manifest, store)
    before = [p for i in range(12) for p in [ph(i, 9.6), *others(i)]]
    engine.process(before, [], T0 + 12 * STEP)
    for k in range(1, 5):  # an hour of passes with nothing arriving
        engine.process([], [], T0 + 12 * STEP + k * 900_000)
    silent = [a for a in store.all_alerts() if a["rule"] == RuleId.DEVICE_SILENT]
    assert len(silent) == 1
    assert silent[0]["firing"]
    assert silent[0]["kind"] == "device"
    replay = [p for i in range(12, 36) for p in [ph(i, 9.6), *others(i)]]
    engine.process(replay, [], T0 + 36 * STEP + 60_000)
    engine.process([], [], T0 + 36 * STEP + 120_000)
    by_rule = {}
    for a in store.all_alerts():
        by_rule.setdefault(a["rule"], []).append(a)
    assert len(by_rule[RuleId.DEVICE_SILENT]) == 1
    assert not by_rule[RuleId.DEVICE_SILENT][0]["firing"]
    assert len(by_rule[PH_RULE]) == 1
    assert by_rule[PH_RULE][0]["firing"]


def test_battery_low_is_a_device_alert(store: AlertStore, manifest: Manifest) -> None:
    engine = Engine(manifest, store)
    statuses = [
        Status(CITY, SITE, DEVICE, T0 + i * STEP, battery_pct=b) for i, b in enumerate([80, 40, 25, 15, 12, 25, 15, 35])
    ]
    engine.process([], statuses, T0 + 10 * STEP)
    alerts = [a for a in store.all_alerts() if a["rule"] == RuleId.BATTERY_LOW]
    assert len(alerts) == 1
    assert not alerts[0]["firing"]


def test_lifecycle_actions_and_their_transitions(store: AlertStore, manifest: Manifest) -> None:
    engine = Engine(manifest, store)
    feed(engine, [p for i in range(6) for p in [ph(i, 9.8), *others(i)]])
    (a,) = [a for a in store.all_alerts() if a["rule"] == PH_RULE]
    aid = a["alert_id"]
    assert store.act(aid, TransitionKind.ACKNOWLEDGED, "somchai", T0 + 1)["status"] == "acknowledged"
    with pytest.raises(ValueError, match="only an open alert can be acknowledged"):
        store.act(aid, TransitionKind.ACKNOWLEDGED, "somchai", T0 + 2)
    assert store.act(aid, TransitionKind.ASSIGNED, "somchai", T0 + 3, "niran")["assignee"] == "niran"
    store.act(aid, TransitionKind.COMMENTED, "niran", T0 + 4, "sampling team sent")
    closed = store.act(aid, TransitionKind.CLOSED, "niran", T0 + 5, "confirmed by grab sample")
    assert closed["status"] == "closed"
    assert closed["ack_by"] == "somchai"
    with pytest.raises(ValueError, match="is closed"):
        store.act(aid, TransitionKind.RESOLVED, "niran", T0 + 6)
    with pytest.raises(KeyError):
        store.act("nope", TransitionKind.ACKNOWLEDGED, "x", T0)
    full = store.get(aid)
    assert full is not None
    assert [c["text"] for c in full["comments"]] == ["sampling team sent", "confirmed by grab sample"]
    kinds = [t.transition for t in store.transitions_after(0) if t.alert_id == aid]
    assert kinds == [
        TransitionKind.FIRED,
        TransitionKind.ACKNOWLEDGED,
        TransitionKind.ASSIGNED,
        TransitionKind.COMMENTED,
        TransitionKind.CLOSED,
    ]


def test_an_alert_inside_a_silence_is_recorded_silenced(store: AlertStore, manifest: Manifest) -> None:
    store.add_silence(CITY, T0, T0 + 86_400_000, "probe cleaning", "op", T0, device=DEVICE)
    with pytest.raises(ValueError, match="must end after it starts"):
        store.add_silence(CITY, T0, T0, "x", "op", T0)
    with pytest.raises(ValueError, match="needs a reason"):
        store.add_silence(CITY, T0, T0 + 1, " ", "op", T0)
    engine = Engine(manifest, store)
    feed(engine, [p for i in range(6) for p in [ph(i, 9.8), *others(i)]])
    (a,) = [a for a in store.all_alerts() if a["rule"] == PH_RULE]
    assert a["silenced"]
    (t,) = [t for t in store.transitions_after(0) if t.alert_id == a["alert_id"]]
    assert t.silenced


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from alerts.engine import Engine
from alerts.store import AlertStore
from pilotwatch.manifest import load_manifest
from tests.alerts.test_engine import ph, others, T0, STEP
engine = Engine(load_manifest(), AlertStore({path!r}))
for hour in range(48):
    pts = [p for i in range(hour * 12, hour * 12 + 12) for p in [ph(i, 9.6 if (i // 30) % 2 else 7.0), *others(i)]]
    engine.process(pts, [], T0 + (hour + 1) * 3_600_000)
    print(hour, flush=True)
    time.sleep(0.05)
"""


def test_kill_9_mid_run_leaves_exactly_one_alert_per_episode(tmp_path: Path, manifest: Manifest) -> None:
    path = tmp_path / "alerts.sqlite"
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=root, path=str(path))], stdout=subprocess.PIPE, text=True, cwd=root
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 20:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    store = AlertStore(path)
    engine = Engine(manifest, store)
    all_points = [p for i in range(48 * 12) for p in [ph(i, 9.6 if (i // 30) % 2 else 7.0), *others(i)]]
    feed(engine, all_points)
    got = sorted((a["rule"], a["episode_ms"]) for a in store.all_alerts() if a["rule"] == PH_RULE)
    clean = AlertStore(tmp_path / "clean.sqlite")
    feed(Engine(manifest, clean), all_points)
    expected = sorted((a["rule"], a["episode_ms"]) for a in clean.all_alerts() if a["rule"] == PH_RULE)
    assert len(expected) == 10
    assert got == expected
    # the outbox has exactly one FIRED per alert
    fired = [t.alert_id for t in store.transitions_after(0, 10_000) if t.transition is TransitionKind.FIRED]
    assert len(fired) == len(set(fired)) == len(store.all_alerts())
    store.close()
    clean.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
