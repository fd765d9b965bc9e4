"""Ingest's stages without MQTT: intake (validate and dedupe), acknowledge (ledger, PUBACK, end-to-end ack), the
conflicting-sample guard, and the published delivery point."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from ingest.acknowledge import Acknowledger
from ingest.conflicts import SampleGuard, SampleLookupError, Stored
from ingest.delivery import delivery_line
from ingest.intake import MAX_SEQ_JUMP, AckToken, Batch, Intake
from ingest.ledger import Ledger
from ingest.metrics import Stats
from ingest.validate import Validator
from pilotwatch.manifest import Manifest
from pilotwatch.schema import SCHEMA, Measurement
from pilotwatch.wire import ReadingsMessage, decode_ack, readings_topic
from tests.ingest.helpers import DEVICE, make_message, recent_t0

NOW_MS = int(time.time() * 1000)


def _intake(manifest: Manifest, **kwargs: object) -> tuple[Intake, Stats]:
    stats = Stats()
    return Intake(Validator(manifest), stats, dedupe_window=10, **kwargs), stats  # type: ignore[arg-type]


def test_intake_sorts_each_message_into_stored_duplicate_or_refused(manifest: Manifest) -> None:
    intake, stats = _intake(manifest)
    t0 = recent_t0()
    first, second = make_message(manifest, 0, 3, t0), make_message(manifest, 1, 3, t0)
    batch = Batch()
    topic = readings_topic(DEVICE)
    intake.take(topic, first.encode(), (1, 1), batch, NOW_MS)
    intake.take(topic, first.encode(), (1, 2), batch, NOW_MS)  # a re-send
    intake.take(topic, second.encode(), (1, 3), batch, NOW_MS)
    intake.take(topic, b"{not json", (1, 4), batch, NOW_MS)
    jump = ReadingsMessage(DEVICE, 1 + MAX_SEQ_JUMP + 1, second.sent_ms, second.readings)
    intake.take(topic, jump.encode(), (1, 5), batch, NOW_MS)
    assert batch.acks == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert batch.stored == [(DEVICE, 0), (DEVICE, 1)]
    assert batch.duplicates == [(DEVICE, 0)]
    assert batch.refused == []  # neither refusal names a sane seq of a known device
    assert [r.reason.value for r in batch.rejections] == ["bad_json", "bad_sequence"]
    assert len(batch.lines) == batch.readings == 6
    assert [(a, b) for a, b, *_ in batch.spans] == [(0, 3), (3, 6)]
    assert (stats.messages, stats.duplicates) == (5, 1)


def test_acknowledge_marks_the_ledger_before_it_pubacks_and_tells_each_device(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger-w.json", "w")
    pubacks: list[AckToken] = []
    published: list[tuple[str, bytes]] = []

    def puback(token: AckToken) -> None:
        assert (tmp_path / "ledger-w.json").exists(), "PUBACK before the ledger was saved"
        pubacks.append(token)

    stage = Acknowledger(
        ledger, Stats(), puback=puback, publish=lambda t, p: published.append((t, p)), clock_ms=lambda: NOW_MS
    )
    batch = Batch(acks=[(1, 7), (1, 8), (1, 9)], stored=[(DEVICE, 0), (DEVICE, 1), (DEVICE, 3)], refused=[(DEVICE, 2)])
    stage.settle(batch)
    assert pubacks == [(1, 7), (1, 8), (1, 9)]
    ((topic, payload),) = published
    ack = decode_ack(topic, payload)
    assert (ack.stored_through, ack.ranges) == (3, ())
    assert all(ack.covers(seq) for seq in range(4))
    (view,) = ledger.view()
    assert (view.stored, view.stored_through, view.missing, view.dead_lettered) == (3, 1, 0, 1)


class _Influx:
    """What InfluxDB holds, as the guard's look-up sees it; counts the questions."""

    def __init__(self, stored: dict[tuple[str, int], Stored]) -> None:
        self.stored = stored
        self.asked = 0
        self.down = False

    def newest(self, device: str) -> dict[str, int]:
        self.asked += 1
        if self.down:
            raise SampleLookupError("down")
        out: dict[str, int] = {}
        for sensor, t in self.stored:
            out[sensor] = max(out.get(sensor, t), t)
        return out

    def between(self, device: str, start_ms: int, end_ms: int) -> dict[tuple[str, int], Stored]:
        self.asked += 1
        if self.down:
            raise SampleLookupError("down")
        return {k: v for k, v in self.stored.items() if start_ms <= k[1] <= end_ms}


def test_the_guard_asks_influxdb_only_below_the_floor_and_finds_conflicts() -> None:
    influx = _Influx({("ph", 1000): (7.0, None, 0)})
    guard = SampleGuard(influx, per_device=4)
    # Newer than anything stored: no query beyond the first look at the device.
    assert guard.check(DEVICE, 1, [("ph", 2000, 7.1, None), ("ph", 3000, 7.2, None)]) == []
    assert influx.asked == 1
    # The cache answers a replay and a conflict with what this worker accepted.
    assert guard.check(DEVICE, 2, [("ph", 2000, 7.1, None)]) == []
    (conflict,) = guard.check(DEVICE, 3, [("ph", 3000, 9.9, None)])
    assert (conflict.stored_value, conflict.stored_seq, conflict.value) == (7.2, 1, 9.9)
    assert influx.asked == 1
    # At or below the floor and not cached: one query for the message, which finds the stored value.
    (old,) = guard.check(DEVICE, 4, [("ph", 1000, 6.0, None), ("ph", 500, 6.0, None)])
    assert (old.position, old.stored_value) == (0, 7.0)
    assert influx.asked == 2
    # Past the cache bound the oldest entries go and the floor rises over them: no sample is forgotten unseen.
    guard.check(DEVICE, 5, [("ph", t, 1.0, None) for t in range(4000, 9000, 1000)])
    assert len(guard._devices[DEVICE].recent) <= 4
    influx.stored[("ph", 2000)] = (7.1, None, 1)
    guard.check(DEVICE, 6, [("ph", 2000, 7.1, None)])
    assert influx.asked == 3


def test_the_guard_skips_and_counts_when_influxdb_cannot_be_asked() -> None:
    influx = _Influx({})
    influx.down = True
    guard = SampleGuard(influx, retry_lookup_s=60)
    assert guard.check(DEVICE, 1, [("ph", 1000, 7.0, None)]) == []
    assert guard.check(DEVICE, 2, [("ph", 1000, 8.0, None)]) == []
    assert (guard.skipped, influx.asked) == (2, 1)  # not asked again before retry_lookup_s


def test_the_delivery_point_carries_every_ledger_field_with_fixed_types(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger-w.json", "w")
    for seq in (0, 1, 4):
        ledger.mark_stored(DEVICE, seq)
    ledger.mark_refused(DEVICE, 2)
    (view,) = ledger.view()
    text = delivery_line(view, "bangkok", "bkk-pratunam-pier", NOW_MS)
    assert text.startswith(f"delivery,city=bangkok,device={DEVICE},site=bkk-pratunam-pier ")
    assert text.endswith(f" {NOW_MS}")
    fields = dict(re.findall(r'([a-z_]+)=("[^"]*"|[-0-9]+i)', text.split(" ", 1)[1]))
    assert set(fields) <= set(SCHEMA[Measurement.DELIVERY].fields)
    assert (fields["stored"], fields["stored_through"], fields["highest_stored"]) == ("3i", "1i", "4i")
    assert (fields["missing"], fields["dead_lettered"], fields["recovered"]) == ("1i", "1i", "0i")
    assert json.loads(json.loads(fields["gaps"])) == [[3, 3]]


@pytest.mark.parametrize("seq", [2**40 + 1, 2**63 - 1])
def test_absurd_seqs_never_reach_the_ledger(manifest: Manifest, seq: int) -> None:
    intake, _ = _intake(manifest)
    message = make_message(manifest, 0, 2, recent_t0())
    batch = Batch()
    intake.take(
        readings_topic(DEVICE),
        ReadingsMessage(DEVICE, seq, message.sent_ms, message.readings).encode(),
        (1, 1),
        batch,
        NOW_MS,
    )
    assert (batch.stored, batch.refused, batch.lines) == ([], [], [])
    assert [r.reason.value for r in batch.rejections] == ["bad_sequence"]
