"""Regression tests of issue 15's ingest findings, against real Mosquitto, InfluxDB and SQLite:

1. nothing stops ingest silently: a poison status is dead-lettered and ingest goes on; a message whose storing fails
   is dead-lettered instead of blocking; a dead-letter store locked past its timeout makes ``run_forever`` return
   non-zero, and the unacknowledged message is redelivered and kept afterwards; a stuck thread shows as stale in
   ``/metrics`` and fails ``pilotwatch ingest status``;
2. refused messages never move the ledger, and absurd seqs are refused with a reason;
3. a new seq that re-uses a stored (device, sensor, time) with another value is dead-lettered as
   ``conflicting_sample`` with both values (also after a restart, when only InfluxDB knows), an identical replay is not;
5. the dead-letter store is bounded per entry, in total and in age, and counts what it dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from commands.cli import main
from commands.stack import LocalStack
from ingest.deadletter import DeadLetterStore
from ingest.intake import Batch, Intake
from ingest.ledger import read_ledger
from ingest.metrics import Stats
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.store import Store
from ingest.validate import Rejection, Validator
from pilotwatch.influx import InfluxV1
from pilotwatch.influx_writer import RetryPolicy, V1Writer, WriteResult
from pilotwatch.manifest import Manifest
from pilotwatch.wire import (
    AckMessage,
    Reading,
    ReadingsMessage,
    Reason,
    ack_topic,
    decode_ack,
    readings_topic,
    status_topic,
)
from tests.ingest.conftest import forget_session, test_settings
from tests.ingest.helpers import (
    DEVICE,
    close_client,
    make_message,
    new_client,
    publish_all,
    readings_in_db,
    recent_t0,
    wait_until,
)

POISON_STATUS = (
    b'{"v":1,"device":"' + DEVICE.encode() + b'","state":"online","t":1790000000000,"battery_pct":' + b"9" * 400 + b"}"
)


def _publish(stack: LocalStack, items: list[tuple[str, bytes]]) -> None:
    client = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(client, items)
    finally:
        close_client(client)


def _reasons(service: IngestService) -> dict[str, int]:
    with DeadLetterStore(service.deadletter_path) as store:
        return store.counts_by_reason()


# -- finding 1 -------------------------------------------------------------------------------------------------
def test_a_poison_status_is_dead_lettered_and_later_readings_still_land(
    start_ingest: Callable[..., IngestService], stack: LocalStack, influx: InfluxV1, manifest: Manifest
) -> None:
    service = start_ingest(metrics_port=0)
    message = make_message(manifest, 0, 5, recent_t0())
    _publish(stack, [(status_topic(DEVICE), POISON_STATUS), (readings_topic(DEVICE), message.encode())])
    wait_until(lambda: service.stats.readings_written == 5, 15, "the readings after the poison status")
    assert service.stats.fatal is None
    assert _reasons(service) == {"non_finite": 1}
    status = service.status()
    assert status["stale"] is False
    assert time.time() - status["last_progress_at"] < 5
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    assert f'pilotwatch_ingest_stale{{worker="{service.worker}"}} 0.0' in text
    assert f'pilotwatch_ingest_last_progress_seconds{{worker="{service.worker}"}}' in text


class _FailsOn:
    """A real InfluxDB writer in front of which one marked line makes the client raise, as a bug would."""

    name = "v1-with-a-fault"

    def __init__(self, inner: V1Writer, marker: str) -> None:
        self.inner = inner
        self.marker = marker

    def write(self, lines: Sequence[str]) -> WriteResult:
        if any(self.marker in line for line in lines):
            raise UnicodeEncodeError("utf-8", self.marker, 0, 1, "a line the client cannot send")
        return self.inner.write(lines)

    def close(self) -> None:
        self.inner.close()


def test_a_message_whose_storing_fails_is_dead_lettered_and_its_batch_mates_land(
    influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    stats = Stats()
    intake = Intake(Validator(manifest), stats, dedupe_window=100)
    t0 = recent_t0()
    messages = [make_message(manifest, seq, 4, t0) for seq in range(3)]
    batch = Batch()
    for i, m in enumerate(messages):
        intake.take(readings_topic(DEVICE), m.encode(), (1, i), batch, int(time.time() * 1000))
    marker = f"seq={messages[1].seq}i"
    writer = _FailsOn(V1Writer(influx.url, influx.database), marker)
    with DeadLetterStore(tmp_path / "dead.sqlite") as dead:
        store = Store(writer, dead, Spool(tmp_path / "spool", 10**7), stats, RetryPolicy(0.01, 0.05, 0.1))
        store.make_safe(batch)
        (letter,) = dead.list()
    writer.close()
    assert (letter.reason, letter.seq, letter.payload) == ("processing_failed", 1, messages[1].encode())
    assert "UnicodeEncodeError" in letter.detail
    assert (batch.stored, batch.refused) == ([(DEVICE, 0), (DEVICE, 2)], [(DEVICE, 1)])
    stored = {(r.sensor, r.t_ms): r.value for m in (messages[0], messages[2]) for r in m.readings}
    assert readings_in_db(influx) == stored


def _watchdog(seconds: float) -> threading.Timer:
    """SIGTERM to this process after ``seconds``: run_forever then returns 0 and the test fails, never hangs."""
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    return timer


def test_a_locked_deadletter_store_stops_ingest_non_zero_and_the_message_is_kept_after_restart(
    stack: LocalStack, influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> None:
    settings = test_settings(stack, influx.database, tmp_path / "ingest", deadletter_timeout_s=0.5)
    DeadLetterStore(settings.state_dir / "deadletter.sqlite").close()
    lock = sqlite3.connect(settings.state_dir / "deadletter.sqlite", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock, longer than ingest will wait
    bad = b'{"v":1,"device":"' + DEVICE.encode() + b'","seq":"x","sent":1,"readings":[]}'
    service = IngestService(settings, manifest)

    def publish_when_connected() -> None:
        service.wait_connected(15)
        _publish(stack, [(readings_topic(DEVICE), bad)])

    publisher = threading.Thread(target=publish_when_connected, daemon=True)
    publisher.start()
    watchdog = _watchdog(40)
    try:
        code = service.run_forever()
    finally:
        watchdog.cancel()
        lock.execute("ROLLBACK")
        lock.close()
    assert code == 3
    assert "database is locked" in (service.stats.fatal or "")
    # Nothing was acknowledged: the broker redelivers the message to the restarted worker, which keeps it.
    again = IngestService(settings, manifest)
    again.start()
    try:
        wait_until(lambda: again.stats.messages_rejected.get("bad_sequence", 0) == 1, 15, "the redelivered message")
    finally:
        again.stop()
        forget_session(stack.config.host, stack.config.mqtt_port, settings.client_id)
    assert _reasons(again) == {"bad_sequence": 1}


def test_a_stuck_thread_shows_as_stale_and_fails_the_health_check(
    start_ingest: Callable[..., IngestService], stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    service = start_ingest(metrics_port=0, stale_after_s=1.0, deadletter_timeout_s=20)
    lock = sqlite3.connect(service.deadletter_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    metrics = f"http://127.0.0.1:{service.metrics_port}/metrics"
    stale = f'pilotwatch_ingest_stale{{worker="{service.worker}"}} 1.0'
    try:
        _publish(stack, [(readings_topic(DEVICE), b"{not json")])  # the writer now waits for the lock
        wait_until(lambda: stale in httpx.get(metrics, timeout=5).text, 10, "the stuck writer to show as stale")
        capsys.readouterr()
        assert main(["ingest", "--state-dir", str(service.state_dir), "status"]) == 1
        assert "STALE: no progress since" in capsys.readouterr().out
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: not service.status()["stale"], 10, "the writer to go on once the lock is gone")
    assert service.stats.fatal is None


# -- finding 2 -------------------------------------------------------------------------------------------------
class _Acks:
    def __init__(self, stack: LocalStack) -> None:
        self.acks: list[AckMessage] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acks-{time.monotonic_ns()}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(ack_topic(DEVICE), qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.acks.append(decode_ack(m.topic, bytes(m.payload)))
        self.client.connect(stack.config.host, stack.config.mqtt_port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def covered(self, seq: int) -> bool:
        return any(a.covers(seq) for a in list(self.acks))

    def close(self) -> None:
        close_client(self.client)


def test_refused_messages_never_move_the_ledger_and_absurd_seqs_are_refused(
    start_ingest: Callable[..., IngestService], stack: LocalStack, manifest: Manifest
) -> None:
    service = start_ingest()
    acks = _Acks(stack)
    t0 = recent_t0()
    good = [make_message(manifest, seq, 3, t0) for seq in range(5)]
    # Sound messages but for their seq (readings of seq 1 and 2: they would be stored if the seq were let in).
    absurd = ReadingsMessage(DEVICE, 2**63 - 1, good[1].sent_ms, good[1].readings)
    jump = ReadingsMessage(DEVICE, 4 + 2_000_000, good[2].sent_ms, good[2].readings)
    future = ReadingsMessage(DEVICE, 7, int(time.time() * 1000) + 86_400_000, good[0].readings)
    status = json.dumps(
        {"v": 1, "device": DEVICE, "state": "online", "t": int(time.time() * 1000), "last_seq": 2**63 - 1}
    ).encode()
    try:
        _publish(
            stack,
            [
                (readings_topic(DEVICE), absurd.encode()),
                *[(readings_topic(DEVICE), m.encode()) for m in good],
                (readings_topic(DEVICE), jump.encode()),
                (readings_topic(DEVICE), future.encode()),
                (status_topic(DEVICE), status),
            ],
        )
        wait_until(lambda: service.stats.messages == 9, 15, "every message")
        wait_until(lambda: acks.covered(7), 10, "the device to be told it may forget the refused seq 7")
    finally:
        acks.close()
    service.stop()
    (ledger,) = read_ledger(service.state_dir)
    assert (ledger.stored, ledger.stored_through, ledger.highest_stored) == (5, 4, 4)
    assert (ledger.missing, ledger.recovered, ledger.dead_lettered) == (0, 0, 1)
    assert ledger.device_last_seq is None
    assert _reasons(service) == {"bad_sequence": 3, "future_timestamp": 1}
    with DeadLetterStore(service.deadletter_path) as store:
        details = [d.detail for d in store.list(reason="bad_sequence")]
    assert any("jumps 2000000 past the highest seq 4" in d for d in details), details
    assert any(f"seq {2**63 - 1} is above" in d for d in details), details
    assert any(d.startswith("last_seq:") for d in details), details


# -- finding 3 -------------------------------------------------------------------------------------------------
def test_a_conflicting_sample_is_dead_lettered_with_both_values_and_an_identical_replay_is_not(
    start_ingest: Callable[..., IngestService], stack: LocalStack, influx: InfluxV1, manifest: Manifest
) -> None:
    service = start_ingest()
    t0 = recent_t0()
    first = make_message(manifest, 0, 3, t0)
    kept, same, _ = first.readings
    changed = Reading(kept.t_ms, kept.sensor, kept.param, kept.value + 0.5, kept.unit)
    fresh = Reading(t0 + 60_000, same.sensor, same.param, same.value, same.unit)
    second = ReadingsMessage(DEVICE, 1, first.sent_ms + 1000, (changed, same, fresh))
    _publish(stack, [(readings_topic(DEVICE), first.encode()), (readings_topic(DEVICE), second.encode())])
    wait_until(lambda: service.stats.messages == 2, 10, "both messages")
    wait_until(lambda: service.stats.readings_written == 5, 10, "the readings that do not conflict")
    stored = readings_in_db(influx)
    assert stored[(kept.sensor, kept.t_ms)] == kept.value
    assert stored[(fresh.sensor, fresh.t_ms)] == fresh.value
    wait_until(lambda: _reasons(service) == {"conflicting_sample": 1}, 5, "the conflict's dead letter")
    with DeadLetterStore(service.deadletter_path) as store:
        (letter,) = store.list()
    assert (letter.kind, letter.device, letter.seq) == ("reading", DEVICE, 1)
    assert repr(kept.value) in letter.detail
    assert repr(changed.value) in letter.detail
    body = json.loads(letter.payload)
    assert (body["reading"]["value"], body["reading"]["stored_value"]) == (changed.value, kept.value)
    service.stop()

    # A fresh worker has an empty cache: only InfluxDB knows the stored value, and the query finds it.
    restarted = start_ingest()
    again = ReadingsMessage(DEVICE, 2, first.sent_ms + 2000, (changed,))
    _publish(stack, [(readings_topic(DEVICE), again.encode())])
    wait_until(lambda: restarted.stats.readings_rejected.get("conflicting_sample", 0) == 1, 10, "the conflict")
    assert readings_in_db(influx)[(kept.sensor, kept.t_ms)] == kept.value


# -- finding 5 -------------------------------------------------------------------------------------------------
def _rejection(size: int, n: int) -> Rejection:
    return Rejection("message", readings_topic(DEVICE), b"x" * size, Reason.BAD_JSON, f"entry {n}", DEVICE, n)


def test_the_deadletter_store_caps_entries_total_size_and_age_and_counts_drops(tmp_path: Path) -> None:
    now = [1_790_000_000.0]
    path = tmp_path / "dead.sqlite"
    big = b"{" + b"9" * 199_999
    with DeadLetterStore(path, payload_bytes=4096, max_bytes=2 * 1024**2, clock=lambda: now[0]) as store:
        store.add([Rejection("message", readings_topic(DEVICE), big, Reason.BAD_JSON, "x" * 50_000, DEVICE, 1)])
        (letter,) = store.list()
        assert (len(letter.payload), letter.payload_size, letter.truncated) == (4096, 200_000, True)
        assert letter.payload_sha256 == hashlib.sha256(big).hexdigest()
        assert len(letter.detail) <= 1000
        assert store.drops() == {"truncated": (1, 200_000 - 4096)}
        # 5,000 hostile messages of 200 kB each (1 GB): what is kept stays bounded, the rest is counted.
        for chunk in range(5):
            store.add([_rejection(200_000, chunk * 1000 + i) for i in range(1000)])
        kept = store.count()
        drops = store.drops()
        assert kept + drops["size_bound"][0] == 5_001
        assert kept * 4096 <= 2 * 1024**2
        assert drops["truncated"][0] == 5_001
        # Retention: a day later with a retention of half a day, everything goes, counted.
        store.retention_ms = 43_200_000
        now[0] += 86_400
        assert store.prune() == kept
        assert store.count() == 0
        assert store.drops()["retention"][0] == kept
    assert path.stat().st_size < 16 * 1024**2
