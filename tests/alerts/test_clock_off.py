"""Device clocks on the real stack: test devices publish wire messages → Mosquitto → ingest (measures each
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

from alerts.rules import RuleId
from alerts.service import AlertService
from alerts.settings import AlertSettings
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


def device_offset(device: str, k: int) -> int:
    if k in FAULT:
        return {JUMPED: -HOUR, AHEAD: 10 * 60_000}.get(device, 0)
    return 0


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
    # a device that truly stopped is still silent, once; its replayed buffer is no clock error
    (silent,) = of(RuleId.DEVICE_SILENT, OFFLINE)
    assert not silent["firing"]
    assert not of(RuleId.CLOCK_OFF, OFFLINE)
    assert not [a for a in alerts if a["kind"] != "device"]

    # routed to operators, never to city staff (the API's role x city test, tests/api/test_alerts_api.py, shows
    # the clock alerts to operators of their city only)
    assert {r for route in manifest.alerts if route.alert is AlertKind.DEVICE for r in route.roles} == {Role.OPERATOR}
