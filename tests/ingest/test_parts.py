"""The parts of ingest that need no service: manifest validation, the sequence-number set and ledger, the spool."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ingest.ledger import Ledger, SeqSet, compress, read_ledger
from ingest.settings import IngestSettings
from ingest.spool import Spool, SpoolFullError
from ingest.validate import Validator
from ingest.writers import Outcome, classify_status, parse_retry_after
from pilotwatch.manifest import Manifest
from pilotwatch.schema import StoredReading
from pilotwatch.settings import InfluxApi
from pilotwatch.wire import DeviceState, Reading, ReadingsMessage, Reason, StatusMessage, WireError, readings_topic
from pilotwatch.wire import status_topic as wire_status_topic
from tests.ingest.helpers import DEVICE, make_message, recent_t0

NOW_MS = int(time.time() * 1000)


def _msg(*readings: Reading, seq: int = 1, sent: int | None = None, device: str = DEVICE) -> bytes:
    sent_ms = sent if sent is not None else max(r.t_ms for r in readings) + 10
    return ReadingsMessage(device=device, seq=seq, sent_ms=sent_ms, readings=readings).encode()


def test_good_lines_are_exactly_the_shared_schema(manifest: Manifest) -> None:
    message = make_message(manifest, 3, 6, recent_t0())
    checked = Validator(manifest).check_readings(readings_topic(DEVICE), message.encode(), NOW_MS)
    placement = manifest.device_index()[DEVICE]
    expected = [
        StoredReading(
            placement.city.id, placement.site.id, DEVICE, r.sensor, r.param, r.value, r.unit, r.t_ms, 3, r.flag
        ).to_line()
        for r in message.readings
    ]
    assert checked.lines == expected
    assert checked.rejections == []
    flagged = Reading(message.readings[0].t_ms, "ph", "ph", 7.0, "pH", flag=3)
    line = Validator(manifest).check_readings(readings_topic(DEVICE), _msg(flagged), NOW_MS).lines[0]
    assert line.endswith(f'value=7.0,unit="pH",seq=1i,flag=3i {flagged.t_ms}')


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (Reading(NOW_MS - 1000, "nosuch", "ph", 7.0, "pH"), Reason.UNKNOWN_SENSOR),
        (Reading(NOW_MS - 1000, "ph", "do", 7.0, "pH"), Reason.WRONG_PARAMETER),
        (Reading(NOW_MS - 1000, "ph", "ph", 7.0, "mg/L"), Reason.WRONG_UNIT),
        (Reading(NOW_MS - 1000, "ph", "ph", 14.5, "pH"), Reason.OUT_OF_RANGE),
        (Reading(NOW_MS + 3_600_000, "ph", "ph", 7.0, "pH"), Reason.FUTURE_TIMESTAMP),
        (Reading(1_700_000_000_000, "ph", "ph", 7.0, "pH"), Reason.BEFORE_COMMISSIONING),
        (Reading(946_684_700_000, "ph", "ph", 7.0, "pH"), Reason.BAD_TIMESTAMP),
    ],
)
def test_a_bad_reading_is_refused_with_its_reason_and_costs_no_neighbour(
    manifest: Manifest, reading: Reading, reason: Reason
) -> None:
    good = Reading(NOW_MS - 2000, "temp", "temperature", 28.5, "degC")
    if reason is Reason.BAD_TIMESTAMP:
        # Before 2000 is refused by the wire decoder itself: send it raw.
        payload = json.dumps(
            {"v": 1, "device": DEVICE, "seq": 5, "sent": NOW_MS, "readings": [good.to_wire(), reading.to_wire()]}
        ).encode()
    else:
        payload = _msg(good, reading, seq=5, sent=NOW_MS)
    checked = Validator(manifest).check_readings(readings_topic(DEVICE), payload, NOW_MS)
    assert len(checked.lines) == 1
    assert [(r.reason, r.index, r.seq, r.kind) for r in checked.rejections] == [(reason, 1, 5, "reading")]
    replay = json.loads(checked.rejections[0].payload)
    assert replay["readings"] == [reading.to_wire()]
    assert replay["seq"] == 5


def test_clock_jump_and_device_clock_in_the_future(manifest: Manifest) -> None:
    validator = Validator(manifest, max_future_s=300, clock_jump_s=120)
    jumped = Reading(NOW_MS - 1000, "ph", "ph", 7.0, "pH")
    checked = validator.check_readings(readings_topic(DEVICE), _msg(jumped, sent=NOW_MS - 600_000), NOW_MS)
    assert [r.reason for r in checked.rejections] == [Reason.BAD_TIMESTAMP]
    assert "clock jump" in checked.rejections[0].detail
    with pytest.raises(WireError) as err:
        validator.check_readings(readings_topic(DEVICE), _msg(jumped, sent=NOW_MS + 3_600_000), NOW_MS)
    assert err.value.reason is Reason.FUTURE_TIMESTAMP


def test_unknown_device_is_refused_as_a_whole(manifest: Manifest) -> None:
    reading = Reading(NOW_MS - 1000, "ph", "ph", 7.0, "pH")
    with pytest.raises(WireError) as err:
        Validator(manifest).check_readings(readings_topic("zz-nowhere-1"), _msg(reading, device="zz-nowhere-1"), NOW_MS)
    assert err.value.reason is Reason.UNKNOWN_DEVICE


def test_status_line_has_fixed_types(manifest: Manifest) -> None:
    status = StatusMessage(
        DEVICE,
        DeviceState.ONLINE,
        NOW_MS,
        battery_pct=80,
        signal_dbm=-70,
        uptime_s=12,
        buffer_depth=3,
        oldest_unsent_ms=NOW_MS - 5000,
        disk_free_mb=100,
        last_seq=41,
    )
    _decoded, line = Validator(manifest).check_status(wire_status_topic(DEVICE), status.encode())
    fields = line.split(" ")[1]
    assert fields == (
        f'state="online",battery_pct=80.0,signal_dbm=-70.0,uptime_s=12.0,disk_free_mb=100.0,'
        f"buffer_depth=3i,oldest_unsent_ms={NOW_MS - 5000}i,last_seq=41i"
    )
    assert line.startswith("device_status,city=bangkok,device=bkk-pratunam-wq1,site=bkk-pratunam-pier ")


def test_seqset_ranges_gaps_and_through() -> None:
    s = SeqSet()
    for seq in [0, 1, 2, 5, 6, 9, 3]:
        s.add(seq)
    assert s.ranges == [(0, 3), (5, 6), (9, 9)]
    assert s.through(0) == 3
    assert s.gaps(0, 10) == [(4, 4), (7, 8), (10, 10)]
    assert s.above(3) == [(5, 6), (9, 9)]
    assert not s.add(5)
    s.add_range(4, 8)
    assert s.ranges == [(0, 9)]
    assert len(s) == 10
    assert SeqSet([(3, 4)]).through(0) == -1
    assert compress([5, 1, 2, 3, 9, 2]) == [(1, 3), (5, 5), (9, 9)]
    with pytest.raises(ValueError, match="0 <= low <= high"):
        s.add_range(5, 2)


def test_ledger_recovered_gaps_and_merge_of_workers(tmp_path: Path) -> None:
    a = Ledger(tmp_path / "ledger-a.json", "a")
    b = Ledger(tmp_path / "ledger-b.json", "b")
    for seq in (0, 2, 4, 5):
        a.mark_stored("dev-1", seq)
    b.mark_stored("dev-1", 1)
    a.mark_stored("dev-1", 3)  # below a's highest: a gap that closed
    b.record("dev-1").device_last_seq = 8
    b.record("dev-1").device_buffered = 2
    b.record("dev-1").status_ms = 5
    a.save()
    b.save()
    (view,) = read_ledger(tmp_path)
    assert (view.stored, view.stored_through, view.missing, view.gaps) == (6, 5, 3, ((6, 8),))
    assert view.recovered == 1
    assert view.buffered_on_device == 2
    assert read_ledger(tmp_path / "nothing-here") == []
    again = Ledger(tmp_path / "ledger-a.json", "a")
    assert again.devices["dev-1"].stored.ranges == [(0, 0), (2, 5)]


def test_spool_keeps_order_survives_reopen_and_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000_000)
    for i in range(3):
        spool.append([f"m,t=a v={i} {i}", f"m,t=b v={i} {i}"])
    assert spool.pending_batches == 3
    assert spool.peek() == ["m,t=a v=0 0", "m,t=b v=0 0"]
    spool.commit()
    # A crash in the middle of an append leaves a torn record: it was never acknowledged, so it is dropped.
    segment = sorted((tmp_path / "s").glob("*.seg"))[-1]
    with segment.open("ab") as f:
        f.write(b"\x50\x00\x00\x00garbage")
    reopened = Spool(tmp_path / "s", max_bytes=10_000_000)
    assert reopened.pending_batches == 2
    assert reopened.peek() == ["m,t=a v=1 1", "m,t=b v=1 1"]
    reopened.commit()
    reopened.append(["m v=9 9"])
    assert reopened.peek() == ["m,t=a v=2 2", "m,t=b v=2 2"]
    reopened.commit()
    assert reopened.peek() == ["m v=9 9"]
    reopened.commit()
    assert reopened.empty
    assert reopened.peek() is None
    small = Spool(tmp_path / "small", max_bytes=64)
    small.append(["x" * 40])
    with pytest.raises(SpoolFullError, match="limit 64"):
        small.append(["y" * 40])


def test_write_errors_are_classified_like_telegraf() -> None:
    assert classify_status(204, "", None).outcome is Outcome.OK
    assert classify_status(400, "partial write", None).outcome is Outcome.REJECT
    assert classify_status(401, "no", None).outcome is Outcome.FATAL
    assert classify_status(403, "no", None).outcome is Outcome.FATAL
    retry = classify_status(429, "slow down", "7")
    assert (retry.outcome, retry.retry_after_s) == (Outcome.RETRY, 7.0)
    assert classify_status(503, "", None).outcome is Outcome.RETRY
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0) == 0.0
    assert parse_retry_after("soon") is None


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="influx api v2 needs token, org, bucket"):
        IngestSettings(influx={"api": InfluxApi.V2}, state_dir=tmp_path)
    with pytest.raises(ValueError, match="share_group"):
        IngestSettings(share_group="a/b", state_dir=tmp_path)
    with pytest.raises(ValueError, match="less than or equal to 20000"):
        IngestSettings(max_unacked=70_000, state_dir=tmp_path)
    assert IngestSettings(share_group="w", state_dir=tmp_path).subscription == (
        "$share/w/pilotwatch/v1/devices/+/readings"
    )
