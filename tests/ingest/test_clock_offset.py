"""Ingest's clock-offset estimate (:mod:`ingest.clock`): the bucketed window against an obvious oracle, what a
delayed message, a replayed buffer and a clock jump do to it, and its way through intake, the ledger (saved,
loaded, merged over workers) and the ``delivery`` point. Then the project's edge agent, offline for an hour,
replays its buffer through Mosquitto into ingest: the readings are an hour old, the clock offset is nil."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from commands.stack import LocalStack
from edge.clock import SimulatedClock
from edge.settings import EdgeSettings
from firmware_sim.agents import simulated_agent
from firmware_sim.fleet import SimulatedFleet
from ingest.acknowledge import Acknowledger
from ingest.clock import add_lag, bucket_ms, offset_ms
from ingest.delivery import delivery_line
from ingest.intake import Batch, Intake
from ingest.ledger import Ledger, read_ledger
from ingest.metrics import Stats
from ingest.service import IngestService
from ingest.validate import Validator
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.wire import ReadingsMessage, readings_topic
from tests.ingest.conftest import test_settings
from tests.ingest.helpers import DEVICE, make_readings, wait_until

WINDOW = 600_000
HOUR = 3_600_000
T0 = 1_788_192_000_000  # 2026-09-01 00:00 UTC


def estimate(messages: list[tuple[int, int]], window: int = WINDOW) -> int | None:
    buckets: list[tuple[int, int]] = []
    for received, lag in messages:
        buckets = add_lag(buckets, received, lag, window)
    return offset_ms(buckets, window)


def naive(messages: list[tuple[int, int]], window: int = WINDOW) -> int:
    """Minus the smallest lag of the messages received in the window's buckets, straight from the definition."""
    width = bucket_ms(window)
    newest = max(r - r % width for r, _ in messages)
    return -min(lag for r, lag in messages if r - r % width > newest - window)


@pytest.mark.parametrize("seed", range(20))
def test_the_bucketed_window_equals_the_minimum_over_the_window(seed: int) -> None:
    rnd = random.Random(seed)
    received = T0
    messages = []
    for _ in range(rnd.randrange(1, 400)):
        received += rnd.choice((50, 1_000, 30_000, 120_000, 700_000))
        messages.append((received, rnd.randrange(-400_000, 4_000_000)))
    assert estimate(messages) == naive(messages), seed
    buckets: list[tuple[int, int]] = []
    for received, lag in messages:
        buckets = add_lag(buckets, received, lag, WINDOW)
    assert len(buckets) <= 10  # fixed memory per device, whatever the message rate


def test_delay_only_adds_so_the_offset_is_short_of_the_truth_by_the_fastest_transit() -> None:
    rnd = random.Random(3)
    theta = -7_000  # the device clock is 7 s behind
    delays = [rnd.randrange(40, 900) for _ in range(60)]  # publish to receipt, one message every 10 s
    delays[57] = 3_600_000  # one message held an hour in a broker queue, received among the others
    messages = [(T0 + i * 10_000, d - theta) for i, d in enumerate(delays)]
    got = estimate(messages)
    assert got == theta - min(delays)
    assert theta - 1_000 < got <= theta


def test_a_replayed_buffer_is_stamped_at_publish_so_it_is_no_clock_error() -> None:
    """An edge back after an hour offline publishes its buffer: old sample times, ``sent`` = now. The estimate
    sees only ``received - sent``, the transit."""
    messages = [(T0 + i * 300_000 + 150, 150) for i in range(12)]
    replay_at = T0 + 5 * 3_600_000
    messages += [(replay_at + i * 20 + 200, 200) for i in range(500)]  # 500 buffered messages in 10 s
    assert estimate(messages) == -200  # the clock is right; 200 ms is the transit


def test_a_clock_ahead_shows_at_once_a_clock_behind_once_the_window_has_passed() -> None:
    before = [(T0 + i * 60_000, 300) for i in range(20)]
    end = before[-1][0]
    ahead = [*before, (end + 60_000, 300 - 600_000)]  # the device now stamps 10 min ahead
    assert estimate(ahead) == 600_000 - 300
    behind = [*before, *((end + i * 60_000, 300 + 3_600_000) for i in range(1, 12))]  # an hour back from here
    partial = behind[: len(before) + 5]
    assert estimate(partial) == -300  # the minimum still holds the minutes before the jump
    assert estimate(behind) == -3_600_000 - 300  # ten minutes on, only the jumped messages are in the window


def test_a_window_shorter_than_its_buckets_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 10 ms"):
        add_lag([], T0, 0, 5)


def test_intake_times_stored_messages_and_those_refused_for_a_future_sent(manifest: Manifest, tmp_path: Path) -> None:
    """A device 10 min ahead of ingest is refused (``future_timestamp``, beyond ``max_future_s`` = 5 min), but
    it was heard and its clock measured; the ledger keeps the window across a save and a load, and the merged view
    of two workers takes the smallest lag of both."""
    now = T0 + 3_600_000
    intake = Intake(Validator(manifest), Stats(), dedupe_window=10)
    topic = readings_topic(DEVICE)
    ok = ReadingsMessage(DEVICE, 0, now - 400, make_readings(manifest, 0, 2, now - 60_000))
    ahead = ReadingsMessage(DEVICE, 1, now + 600_000, make_readings(manifest, 1, 2, now + 590_000))
    batch = Batch()
    intake.take(topic, ok.encode(), (1, 1), batch, now)
    intake.take(topic, ahead.encode(), (1, 2), batch, now + 50)
    assert [r.reason.value for r in batch.rejections] == ["future_timestamp"]
    assert batch.stored == [(DEVICE, 0)]
    assert batch.clock == {DEVICE: (now + 50, -599_950)}

    ledger = Ledger(tmp_path / "ledger-a.json", "a")
    stage = Acknowledger(ledger, Stats(), puback=lambda _t: None, publish=lambda _t, _p: None, clock_ms=lambda: now)
    stage.settle(batch)
    (view,) = read_ledger(tmp_path)  # from the saved file
    assert (view.clock_offset_ms, view.clock_checked_ms, view.last_seen_ms) == (599_950, now + 50, now)

    other = Ledger(tmp_path / "ledger-b.json", "b")  # a second worker of the shared subscription
    other.record(DEVICE).time_clock(now + 90_000, -600_400, WINDOW)
    other.save()
    (merged,) = read_ledger(tmp_path)
    assert merged.clock_offset_ms == 600_400
    assert merged.clock_checked_ms == now + 90_000
    line = delivery_line(merged, "bangkok", "bkk-pratunam-pier", now + 100_000)
    assert re.search(r"\bclock_offset_ms=600400i\b", line)
    assert re.search(rf"\bclock_checked_ms={now + 90_000}i\b", line)


def test_the_edge_replays_an_hour_of_buffer_with_a_fresh_sent_and_ingest_sees_no_clock_error(
    private_stack: LocalStack, fault_free_manifest: Manifest, tmp_path: Path
) -> None:
    """The edge agent samples an hour with no broker; the link comes back 10 min after its last sample and it
    publishes its buffer. Ingest runs on the agent's own (simulated, then frozen) clock, so a right clock gives an
    offset of exactly 0; had the edge stamped ``sent`` with a sample time, the offset would be minus the age of
    the newest buffered reading: 10 min or more."""
    start = int(time.time() * 1000) // HOUR * HOUR - 3 * HOUR
    settings = EdgeSettings(
        device=DEVICE,
        mqtt_port=private_stack.config.mqtt_port,
        buffer_dir=tmp_path / "buffers",
        reconnect_min_s=1,
        reconnect_max_s=1,
        linger_s=0.05,
    )
    agent = simulated_agent(settings, SimulatedFleet(fault_free_manifest, 3).device(DEVICE), start)
    sampled = agent.sample(until_ms=start + HOUR)  # offline: all of it goes to the disk buffer
    back = start + HOUR + 600_000
    assert isinstance(agent.clock, SimulatedClock)
    agent.clock.advance_to(back)  # nothing is sampled meanwhile
    influx = InfluxV1(private_stack.config.influx_url, "clock")
    influx.create_database()
    ingest = IngestService(
        test_settings(private_stack, "clock", tmp_path / "ingest", delivery_interval_s=0.05),
        fault_free_manifest,
        clock=lambda: agent.clock.now_ms() / 1000,
    )
    ingest.start()
    try:
        ingest.wait_connected()
        agent.start()
        deadline = time.monotonic() + 30
        while agent.buffer.stats().depth and time.monotonic() < deadline:
            agent.pump()
            time.sleep(0.01)
        assert agent.buffer.stats().depth == 0, agent.buffer.stats()
        wait_until(lambda: _delivery(influx).get("clock_checked_ms") == back, 10, "the delivery point")
        view = _delivery(influx)
        oldest = influx.query(f"SELECT first(value) FROM reading WHERE device = '{DEVICE}'")[0]["time"]
    finally:
        agent.stop()
        agent.sampler.close()
        agent.buffer.close()
        ingest.stop()
        influx.close()
    assert sampled > 0
    assert view["stored"] == view["stored_through"] + 1 > 0
    assert oldest <= start + 300_000  # the buffer's readings are stored under their own, hour-old, times
    assert view["clock_offset_ms"] == 0


def _delivery(influx: InfluxV1) -> dict[str, int]:
    rows = influx.query(f"SELECT * FROM delivery WHERE device = '{DEVICE}' ORDER BY time DESC LIMIT 1")
    return {k: v for k, v in rows[0].items() if isinstance(v, int)} if rows else {}
