"""Device clocks. The engine over a real SQLite store: ``device.clock_off`` from ``delivery`` points with its
hysteresis, silence judged on arrival (and persisted across a restart), sensor silence against the device's own
clock. Then on the real stack: test devices publish wire messages → Mosquitto → ingest (measures each
device's clock offset, publishes it in ``delivery``) → InfluxDB → analytics (qc) → the alert engine.

Ingest and the engine share one test clock that moves in 5-minute steps (the devices stamp it plus their own
error), so an hour and a quarter of operation takes seconds. Three devices, from 00:00 to 01:15:

- ``bkk-pratunam-wq1``'s clock jumps back an hour at 00:20 while it keeps publishing, and is set right at 01:00;
- ``mlk-morten-wq1``'s clock runs 10 min ahead from 00:20 to 01:00: beyond ingest's ``max_future_s`` (5 min), so
  ingest refuses its messages (dead letters ``future_timestamp``) but measures its clock from them;
- ``bkk-asok-wq1`` goes offline from 00:20 to 01:00 and then publishes its buffer (old sample times, sent now).

Expected: one ``device.clock_off`` alert for each of the first two, routed to operators only, resolved once the
clock is right, and no ``device.silent`` for either; one ``device.silent`` for the third, resolved by its replay,
and no clock alert for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.engine import Engine
from alerts.rules import Delivery, Point, RuleConfig, RuleId, rules_from_manifest
from alerts.service import AlertService
from alerts.settings import AlertSettings
from alerts.store import AlertStore
from analytics.service import evaluate_window
from commands.stack import LocalStack
from ingest.service import IngestService
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import AlertKind, Manifest, Role
from pilotwatch.wire import Reading, ReadingsMessage, readings_topic
from tests.ingest.conftest import clear_retained_status, forget_session, test_settings
from tests.ingest.helpers import close_client, new_client, wait_until

STEP = 300_000
HOUR = 3_600_000
JUMPED, AHEAD, OFFLINE = "bkk-pratunam-wq1", "mlk-morten-wq1", "bkk-asok-wq1"
FAULT = range(4, 12)  # the steps (00:20 to 00:55) each device is at fault; set right at step 12
STEPS = 16
CITY, SITE = "bangkok", "bkk-pratunam-pier"
T0 = 1_788_192_000_000  # 2026-09-01 00:00 UTC


def device_offset(device: str, k: int) -> int:
    if k in FAULT:
        return {JUMPED: -HOUR, AHEAD: 10 * 60_000}.get(device, 0)
    return 0


def at(k: int, offset_s: float | None, *, heard: int | None = None, device: str = JUMPED) -> Delivery:
    """Ingest's delivery point at step ``k`` (a minute apart): the device heard then, its clock ``offset_s`` off."""
    t = T0 + k * 60_000
    offset = None if offset_s is None else round(offset_s * 1000)
    return Delivery(CITY, SITE, device, t, last_seen_ms=heard if heard is not None else t, clock_offset_ms=offset)


def points(t_ms: int, sensors: tuple[str, ...] = ("temp", "ph", "do")) -> list[Point]:
    return [Point(CITY, SITE, JUMPED, s, s, t_ms, 7.0) for s in sensors]


def by_rule(store: AlertStore, rule: str) -> list[dict[str, object]]:
    return [a for a in store.all_alerts() if a["rule"] == rule]


def test_clock_off_fires_after_its_duration_holds_in_the_band_and_resolves_within_it(
    manifest: Manifest, tmp_path: Path
) -> None:
    config = RuleConfig(clock_for_s=600, clock_clear_for_s=300)
    (rule,) = [r for r in rules_from_manifest(manifest, config) if r.id == RuleId.CLOCK_OFF]
    assert (rule.kind, rule.timing.for_ms, rule.timing.clear_for_ms) == (AlertKind.DEVICE, 600_000, 300_000)
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = Engine(manifest, store, config)
    # 0-4 right; 5-14 an hour behind (fires at 15, ten minutes on); 16-25 within the band (90 s: holds);
    # 26-31 right again (30 s, then 0: resolves five minutes on)
    offsets = [0.2] * 5 + [-3600.4] * 11 + [-90.0] * 10 + [-30.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    fired_at = resolved_at = None
    for k, off in enumerate(offsets):
        engine.process([], [], T0 + k * 60_000 + 5_000, [at(k, off)])
        (alert,) = by_rule(store, RuleId.CLOCK_OFF) or [None]
        if alert is not None and fired_at is None:
            fired_at = k
        if alert is not None and not alert["firing"] and resolved_at is None:
            resolved_at = k
    assert (fired_at, resolved_at) == (15, 31)
    (alert,) = by_rule(store, RuleId.CLOCK_OFF)
    assert alert["kind"] == "device"
    assert alert["value"] == pytest.approx(-3600.4)
    assert alert["body"]["unit"] == "s"
    assert alert["body"]["clock_off_s"] == 120
    assert alert["title"] == f"device clock off by more than 120 s at {JUMPED}"
    assert not by_rule(store, RuleId.DEVICE_SILENT)
    store.close()


def test_a_clear_band_wider_than_the_trigger_is_refused() -> None:
    with pytest.raises(ValueError, match=r"clock_ok_s \(200\) must be at most clock_off_s \(120\)"):
        RuleConfig(clock_ok_s=200)


def test_silence_is_judged_on_arrival_and_the_arrival_survives_a_restart(manifest: Manifest, tmp_path: Path) -> None:
    """The device's newest sample time stops at step 10 (its clock jumped back) while ingest keeps hearing it:
    not silent. Then it stops talking: silent 20 min after it was last heard, also for an engine restarted on the
    same store in between."""
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = Engine(manifest, store)
    for k in range(40):
        sample = T0 + min(k, 10) * 60_000 - (HOUR if k > 10 else 0)
        engine.process(points(sample), [], T0 + k * 60_000 + 5_000, [at(k, -3600.0 if k > 10 else 0.0)])
    assert not by_rule(store, RuleId.DEVICE_SILENT)
    assert not by_rule(store, RuleId.SENSOR_SILENT)  # every sensor stands still with its device's clock
    store.close()
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = Engine(manifest, store)
    for k in range(40, 70):  # nothing heard after step 39
        engine.process([], [], T0 + k * 60_000 + 5_000)
    (silent,) = by_rule(store, RuleId.DEVICE_SILENT)
    assert silent["fired_ms"] == T0 + 39 * 60_000 + 1_200_000 + 1
    assert silent["firing"]
    engine.process([], [], T0 + 70 * 60_000, [at(70, 0.0)])
    (silent,) = by_rule(store, RuleId.DEVICE_SILENT)
    assert not silent["firing"]
    store.close()


def test_a_refused_device_is_heard_and_one_sensor_that_stops_is_silent(manifest: Manifest, tmp_path: Path) -> None:
    """Heard includes messages ingest refused for a future ``sent`` (``clock_checked_ms``); a sensor is silent when
    its newest sample falls behind its device's newest by ``silent_after_s``."""
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = Engine(manifest, store)
    for k in range(60):
        t = T0 + k * 60_000
        stored = T0 + min(k, 5) * 60_000
        heard = Delivery(CITY, SITE, JUMPED, t, last_seen_ms=stored, clock_offset_ms=600_000, clock_checked_ms=t)
        engine.process([], [], t + 5_000, [heard])
    assert heard.heard_ms == T0 + 59 * 60_000
    assert not by_rule(store, RuleId.DEVICE_SILENT)
    assert len(by_rule(store, RuleId.CLOCK_OFF)) == 1
    for k in range(60, 100):
        t = T0 + k * 60_000
        engine.process(points(t, ("temp", "ph") if k >= 70 else ("temp", "ph", "do")), [], t + 5_000, [at(k, 0.0)])
    (sensor,) = by_rule(store, RuleId.SENSOR_SILENT)
    assert (sensor["sensor"], sensor["fired_ms"]) == ("do", T0 + 69 * 60_000 + 1_200_000 + 1)
    store.close()


TYPICAL = {"temperature": 30.0, "ph": 7.2, "do": 6.0, "conductivity": 650.0, "turbidity": 20.0, "orp": 60.0,
           "ammonia": 0.2}  # fmt: skip


def message(manifest: Manifest, device: str, seq: int, t_ms: int, sent_ms: int) -> bytes:
    """One reading per sensor at sample time ``t_ms``: calm water, a little movement that is a function of time."""
    sensors = manifest.device_index()[device].device.sensors
    wiggle = 1 + 0.002 * ((t_ms // STEP) % 5 - 2)
    readings = tuple(
        Reading(t_ms, s.id, s.param.value, round(TYPICAL[s.param.value] * wiggle, 4), s.unit) for s in sensors
    )
    return ReadingsMessage(device, seq, sent_ms, readings).encode()


@pytest.fixture
def ingest_on(stack: LocalStack, influx: InfluxV1, manifest: Manifest, tmp_path: Path) -> Iterator[list[int]]:
    """Ingest on the session stack with a group and session of its own, on the test clock (``clock[0]``, ms)."""
    clear_retained_status(stack.config.host, stack.config.mqtt_port, (JUMPED, AHEAD, OFFLINE))
    clock = [int(time.time() * 1000) // HOUR * HOUR - 4 * HOUR]
    settings = test_settings(stack, influx.database, tmp_path / "ingest", delivery_interval_s=0.05)
    service = IngestService(settings, manifest, clock=lambda: clock[0] / 1000)
    service.start()
    try:
        service.wait_connected()
        yield clock
    finally:
        service.stop()
        forget_session(stack.config.host, stack.config.mqtt_port, settings.client_id)


def delivered(influx: InfluxV1, at_ms: int) -> set[str]:
    """Devices whose delivery point says ingest heard from them at ``at_ms``."""
    rows = influx.query("SELECT last(clock_checked_ms) AS heard FROM delivery GROUP BY device")
    return {str(r["device"]) for r in rows if r.get("heard") == at_ms}


def test_a_clock_that_jumps_back_or_runs_ahead_raises_clock_off_not_silent(
    stack: LocalStack,
    influx: InfluxV1,
    manifest: Manifest,
    ingest_on: list[int],
    tmp_path: Path,
) -> None:
    clock = ingest_on
    t0 = clock[0]
    publisher = new_client(stack.config.host, stack.config.mqtt_port, "clock-test")
    engine_settings = AlertSettings(
        influx={"url": influx.url, "database": influx.database}, state_dir=tmp_path / "alerts"
    )
    seqs = dict.fromkeys((JUMPED, AHEAD, OFFLINE), 0)
    buffered: list[tuple[int, int]] = []  # (seq, sample time) the offline device holds
    timeline: list[tuple[int, set[str]]] = []
    try:
        with AlertService(engine_settings, manifest, clock=lambda: clock[0] / 1000) as engine:
            for k in range(STEPS):
                now = clock[0] = t0 + k * STEP
                for device in seqs:
                    device_now = now + device_offset(device, k)
                    if device == OFFLINE and k in FAULT:
                        buffered.append((seqs[device], device_now - 2_000))
                        seqs[device] += 1
                        continue
                    if device == OFFLINE and k == FAULT.stop:
                        for seq, t in buffered:  # the buffer, stamped as it is published
                            payload = message(manifest, device, seq, t, device_now)
                            publisher.publish(readings_topic(device), payload, qos=1).wait_for_publish(5)
                    payload = message(manifest, device, seqs[device], device_now - 2_000, device_now)
                    publisher.publish(readings_topic(device), payload, qos=1).wait_for_publish(5)
                    seqs[device] += 1
                talking = {d for d in seqs if not (d == OFFLINE and k in FAULT)}
                wait_until(lambda t=talking, n=now: t <= delivered(influx, n), 20, f"delivery points at step {k}", 0.02)
                evaluate_window(manifest, influx.url, influx.database, t0 - 2 * HOUR, now + 1, tmp_path / f"qc{k}")
                engine.step()
                assert engine.store is not None
                firing = {(a["rule"], a["device"]) for a in engine.store.all_alerts() if a["firing"]}
                timeline.append((k, {f"{r}@{d}" for r, d in firing}))
            assert engine.store is not None
            alerts = engine.store.all_alerts()
    finally:
        close_client(publisher)

    def of(rule: str, device: str) -> list[dict[str, object]]:
        return [a for a in alerts if a["rule"] == rule and a["device"] == device]

    for device, sign in ((JUMPED, -1), (AHEAD, 1)):
        (clock_alert,) = of(RuleId.CLOCK_OFF, device)
        assert clock_alert["kind"] == "device"
        assert clock_alert["value"] is not None
        assert sign * float(str(clock_alert["value"])) == pytest.approx(3600 if sign < 0 else 600, abs=1), timeline
        assert not clock_alert["firing"], timeline  # resolved once the clock was set right
        assert int(str(clock_alert["resolved_ms"])) >= t0 + FAULT.stop * STEP
        assert not of(RuleId.DEVICE_SILENT, device), timeline
        assert not [a for a in alerts if a["rule"] == RuleId.SENSOR_SILENT and a["device"] == device], timeline
    # what ingest did with them: the jumped device's readings are stored under their (wrong) sample times; the one
    # running ahead was refused while it did (nothing of it stored), and measured all the same
    counts = {
        str(r["device"]): int(r["count"])
        for r in influx.query("SELECT count(value) FROM reading GROUP BY device")  # one row per device
    }
    sensors = {d: len(manifest.device_index()[d].device.sensors) for d in seqs}
    assert counts == {d: n * (STEPS - (len(FAULT) if d == AHEAD else 0)) for d, n in sensors.items()}
    # a device that truly stopped is still silent, once; its replayed buffer is no clock error
    (silent,) = of(RuleId.DEVICE_SILENT, OFFLINE)
    assert not silent["firing"]
    assert not of(RuleId.CLOCK_OFF, OFFLINE)
    assert not [a for a in alerts if a["kind"] != "device"]

    # routed to operators, never to city staff (the API's role x city test, tests/api/test_alerts_api.py, shows
    # the clock alerts to operators of their city only)
    assert {r for route in manifest.alerts if route.alert is AlertKind.DEVICE for r in route.roles} == {Role.OPERATOR}
