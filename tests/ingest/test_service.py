"""Ingest against real Mosquitto and real InfluxDB: validation under fire, dedupe, status, partial writes,
dead-letter replay, shared subscriptions, health."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import httpx
import pytest
import yaml

from commands.cli import main
from commands.stack import LocalStack
from ingest.deadletter import DeadLetterStore
from ingest.ledger import read_ledger
from ingest.service import IngestService
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.wire import (
    DeviceState,
    Reading,
    ReadingsMessage,
    Reason,
    StatusMessage,
    readings_topic,
    status_topic,
)
from tests.ingest.helpers import (
    DEVICE,
    ResendingPublisher,
    close_client,
    expected,
    make_message,
    new_client,
    publish_all,
    readings_in_db,
    recent_t0,
    wait_until,
)

OTHER = "bkk-asok-wq1"


def _raw(device: str, seq: int, readings: list[object], sent: int | None = None) -> bytes:
    sent_ms = sent if sent is not None else int(time.time() * 1000)
    return json.dumps({"v": 1, "device": device, "seq": seq, "sent": sent_ms, "readings": readings}).encode()


def _malformed(
    manifest: Manifest, n: int, originals: list[ReadingsMessage], rng: random.Random
) -> list[tuple[str, bytes, str]]:
    """``n`` bad payloads, each good for exactly one dead letter: (topic, payload, expected reason)."""
    now = int(time.time() * 1000)
    good = {"t": now - 60_000, "sensor": "ph", "param": "ph", "value": 7.0, "unit": "pH"}
    topic = readings_topic(OTHER)
    seqs = iter(range(10**6))
    kinds: list[Callable[[], tuple[str, bytes, str]]] = [
        lambda: (topic, b'{"v":1,"device":"' + OTHER.encode() + b'","seq":', Reason.BAD_JSON),
        lambda: (topic, bytes(rng.randrange(256) for _ in range(40)), Reason.BAD_JSON),
        lambda: (topic, b"[1,2,3]", Reason.NOT_AN_OBJECT),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "value": "7.1"}]), Reason.BAD_TYPE),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "value": True}]), Reason.BAD_TYPE),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "t": "yesterday"}]), Reason.BAD_TYPE),
        lambda: (topic, _raw(OTHER, "12", [good]), Reason.BAD_SEQUENCE),  # type: ignore[arg-type]
        lambda: (topic, _raw(OTHER, next(seqs), [good]).replace(b"7.0", b"NaN"), Reason.NON_FINITE),
        lambda: (topic, _raw(OTHER, next(seqs), [good]).replace(b"7.0", b"Infinity"), Reason.NON_FINITE),
        lambda: (topic, _raw(OTHER, next(seqs), [good]).replace(b"7.0", b"1e999"), Reason.NON_FINITE),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "t": now + 30 * 86_400_000}]), Reason.FUTURE_TIMESTAMP),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "t": 1_000_000_000_000}]), Reason.BEFORE_COMMISSIONING),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "t": 12}]), Reason.BAD_TIMESTAMP),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "value": 99.0}]), Reason.OUT_OF_RANGE),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "sensor": "nope"}]), Reason.UNKNOWN_SENSOR),
        lambda: (topic, _raw(OTHER, next(seqs), [{**good, "unit": "mol"}]), Reason.WRONG_UNIT),
        lambda: (
            topic,
            _raw(OTHER, next(seqs), [{k: v for k, v in good.items() if k != "unit"}]),
            Reason.MISSING_FIELD,
        ),
        lambda: (topic, _raw(OTHER, next(seqs), []), Reason.EMPTY_BATCH),
        lambda: (readings_topic("zz-unknown-9"), _raw("zz-unknown-9", 1, [good]), Reason.UNKNOWN_DEVICE),
        lambda: (readings_topic(DEVICE), _raw(OTHER, 1, [good]), Reason.TOPIC_MISMATCH),
        lambda: (readings_topic("Bad_Device"), _raw("x", 1, [good]), Reason.BAD_DEVICE_ID),
        lambda: (f"pilotwatch/v1/devices/{'a' * 300}/readings", _raw(OTHER, 1, [good]), Reason.BAD_TOPIC),
    ]
    out = [kinds[i % len(kinds)]() for i in range(n - 40 - len(originals[:500]))]
    # Huge batches: too many readings, and a payload past the size limit.
    out += [(topic, _raw(OTHER, next(seqs), [good] * 1001), Reason.TOO_MANY_READINGS) for _ in range(30)]
    out += [
        (topic, _raw(OTHER, next(seqs), [{**good, "x": "y" * 300_000}]), Reason.PAYLOAD_TOO_LARGE) for _ in range(10)
    ]
    # Duplicate sequence numbers: a seq already used by the valid stream, with other content.
    for original in originals[:500]:
        changed = ReadingsMessage(
            original.device,
            original.seq,
            original.sent_ms,
            (Reading(original.readings[0].t_ms + 500, "ph", "ph", 6.5, "pH"),),
        )
        out.append((readings_topic(DEVICE), changed.encode(), Reason.DUPLICATE))
    assert len(out) == n
    return [(t, p, str(r)) for t, p, r in out]


def test_ten_thousand_malformed_payloads_in_a_valid_stream(
    start_ingest: Callable[..., IngestService], influx: InfluxV1, stack: LocalStack, manifest: Manifest
) -> None:
    service = start_ingest()
    rng = random.Random(20261123)
    t0 = recent_t0()
    valid = [make_message(manifest, seq, 10, t0) for seq in range(2_000)]
    bad = _malformed(manifest, 10_000, valid, rng)
    # Valid messages first in their own order; bad ones mixed in at random places, duplicates after their original.
    stream: list[tuple[str, bytes]] = [(readings_topic(DEVICE), m.encode()) for m in valid]
    for topic, payload, reason in bad:
        if reason != Reason.DUPLICATE:
            stream.insert(rng.randrange(0, len(stream) + 1), (topic, payload))
    after = stream.index((readings_topic(DEVICE), valid[499].encode())) + 1
    for topic, payload, reason in bad:
        if reason == Reason.DUPLICATE:
            stream.insert(rng.randrange(after, len(stream) + 1), (topic, payload))
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    started = time.monotonic()
    try:
        publish_all(publisher, stream)
    finally:
        close_client(publisher)
    wait_until(lambda: service.stats.messages >= len(stream), 120, "every message to reach ingest")
    wait_until(lambda: service.stats.readings_written >= 20_000, 60, "every valid reading to be written")
    elapsed = time.monotonic() - started
    assert readings_in_db(influx) == expected(valid)
    with DeadLetterStore(service.deadletter_path) as store:
        wait_until(lambda: store.count() >= 10_000, 30, "every bad payload to be dead-lettered")
        assert store.count() == 10_000
        assert store.counts_by_reason() == dict(Counter(reason for _, _, reason in bad))
        for letter in store.list(limit=10_000):
            assert letter.detail
            assert letter.payload
    assert influx.count(where=f"device = '{OTHER}'") == 0
    rejected = service.status()["rejected_total"]
    assert rejected == 10_000
    # Still alive and quick: one more valid message is stored within a second or two.
    late = make_message(manifest, 2_000, 10, t0)
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), late.encode())])
    finally:
        close_client(publisher)
    wait_until(lambda: readings_in_db(influx) == expected([*valid, late]), 5, "a message after the storm")
    assert elapsed < 90


def test_resend_is_acked_again_and_never_duplicated(
    start_ingest: Callable[..., IngestService], influx: InfluxV1, stack: LocalStack, manifest: Manifest
) -> None:
    service = start_ingest()
    edge = ResendingPublisher(stack.config.host, stack.config.mqtt_port)
    messages = [make_message(manifest, seq, 5, recent_t0()) for seq in range(20)]
    edge.connect()
    try:
        for m in messages:
            edge.add(m)
        edge.run_until_acked(20)
        publisher = new_client(stack.config.host, stack.config.mqtt_port)
        try:
            # A re-send of stored messages (the ack was lost, say): acked again, written nowhere.
            publish_all(publisher, [(readings_topic(DEVICE), m.encode()) for m in messages[:5]])
        finally:
            close_client(publisher)
        wait_until(lambda: service.stats.duplicates == 5, 10, "the re-sends to be recognised")
    finally:
        edge.close()
    assert influx.count() == 100
    assert readings_in_db(influx) == expected(messages)
    service.stop()
    (ledger,) = read_ledger(service.state_dir)
    assert (ledger.stored, ledger.stored_through, ledger.missing, ledger.duplicates) == (20, 19, 0, 5)


def test_status_is_stored_and_feeds_the_ledger(
    start_ingest: Callable[..., IngestService], influx: InfluxV1, stack: LocalStack
) -> None:
    service = start_ingest()
    now = int(time.time() * 1000)
    status = StatusMessage(
        DEVICE,
        DeviceState.ONLINE,
        now,
        battery_pct=77.5,
        signal_dbm=-71,
        uptime_s=3600,
        buffer_depth=42,
        oldest_unsent_ms=now - 60_000,
        disk_free_mb=900.0,
        last_seq=99,
        sensors={"ph": "ok"},
    )
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        info = publisher.publish(status_topic(DEVICE), status.encode(), qos=1, retain=True)
        info.wait_for_publish(5)
        wait_until(lambda: influx.count("device_status", "buffer_depth") == 1, 10, "the status point")
        row = influx.query("SELECT * FROM device_status")[0]
        assert row == {
            "time": now,
            "battery_pct": 77.5,
            "buffer_depth": 42,
            "city": "bangkok",
            "device": DEVICE,
            "disk_free_mb": 900.0,
            "last_seq": 99,
            "oldest_unsent_ms": now - 60_000,
            "signal_dbm": -71.0,
            "site": "bkk-pratunam-pier",
            "state": "online",
            "uptime_s": 3600.0,
        }
        # Field types are fixed whatever the value looks like.
        types = {r["fieldKey"]: r["fieldType"] for r in influx.query("SHOW FIELD KEYS FROM device_status")}
        assert types == {
            "battery_pct": "float",
            "buffer_depth": "integer",
            "disk_free_mb": "float",
            "last_seq": "integer",
            "oldest_unsent_ms": "integer",
            "signal_dbm": "float",
            "state": "string",
            "uptime_s": "float",
        }
    finally:
        # Clear the retained status so later tests on this broker do not receive it.
        publisher.publish(status_topic(DEVICE), b"", qos=1, retain=True).wait_for_publish(5)
        close_client(publisher)
    service.stop()
    (ledger,) = read_ledger(service.state_dir)
    assert (ledger.buffered_on_device, ledger.device_last_seq, ledger.missing) == (42, 99, 100)
    assert ledger.oldest_unsent_ms == now - 60_000


def test_a_line_influx_refuses_is_dead_lettered_and_its_batch_mates_land(
    start_ingest: Callable[..., IngestService], influx: InfluxV1, stack: LocalStack, manifest: Manifest
) -> None:
    t0 = recent_t0(20)
    # Make `seq` a float field in the shard of one week: InfluxDB refuses integer seq there (400, type conflict).
    poisoned_t = t0 + 10 * 86_400_000
    assert (
        influx.write_lines([f"reading,city=x,device=y,param=z,sensor=w,site=v seq=1.5 {poisoned_t}"]).status_code == 204
    )
    service = start_ingest()
    messages = [
        make_message(manifest, 0, 5, t0),
        make_message(manifest, 1, 5, poisoned_t),
        make_message(manifest, 2, 5, t0 + 60_000),
    ]
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), m.encode()) for m in messages])
    finally:
        close_client(publisher)
    wait_until(lambda: service.stats.write_rejected_lines == 5, 15, "the refused lines to be found")
    got = readings_in_db(influx)
    assert got == expected([messages[0], messages[2]])
    with DeadLetterStore(service.deadletter_path) as store:
        letters = store.list(reason=Reason.WRITE_REJECTED.value)
    assert len(letters) == 5
    assert {(d.kind, d.device, d.seq) for d in letters} == {("line", DEVICE, 1)}
    assert all("field type conflict" in d.detail for d in letters)


def _manifest_file(tmp_path: Path, manifest: Manifest, widen_ph_to: float) -> Path:
    data = yaml.safe_load(resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text())
    for city in data["cities"]:
        for site in city["sites"]:
            for device in site["devices"]:
                if device["id"] == DEVICE:
                    device["sensors"] = [dict(s) for s in device["sensors"]]
                    for sensor in device["sensors"]:
                        if sensor["id"] == "ph":
                            sensor["valid_range"] = [0.001, widen_ph_to]
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_deadletter_cli_lists_shows_counts_and_replays_after_a_manifest_fix(
    start_ingest: Callable[..., IngestService],
    influx: InfluxV1,
    stack: LocalStack,
    manifest: Manifest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = start_ingest()
    now = int(time.time() * 1000)
    bad = ReadingsMessage(DEVICE, 0, now, (Reading(now - 1000, "ph", "ph", 14.2, "pH"),))
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), bad.encode()), (readings_topic(DEVICE), b"{oops")])
    finally:
        close_client(publisher)
    wait_until(lambda: service.status()["rejected_total"] == 2, 10, "two dead letters")
    service.stop()
    state = ["--state-dir", str(service.state_dir)]
    capsys.readouterr()
    assert main(["ingest", *state, "deadletter", "count", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"by_reason": {"bad_json": 1, "out_of_range": 1}, "total": 2, "pending": 2}
    assert main(["ingest", *state, "deadletter", "list", "--json", "--reason", "out_of_range"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["kind"], listed["seq"], listed["reason"]) == ("reading", 0, "out_of_range")
    assert main(["ingest", *state, "deadletter", "show", str(listed["id"])]) == 0
    assert '"value":14.2' in capsys.readouterr().out
    env = ["--manifest", str(_manifest_file(tmp_path, manifest, 14.5))]
    settings = ["--state-dir", str(service.state_dir)]
    os.environ["PILOTWATCH_INGEST_INFLUX__URL"] = stack.config.influx_url
    os.environ["PILOTWATCH_INGEST_INFLUX__DATABASE"] = influx.database
    try:
        assert main([*env, "ingest", *settings, "deadletter", "replay"]) == 0
    finally:
        del os.environ["PILOTWATCH_INGEST_INFLUX__URL"]
        del os.environ["PILOTWATCH_INGEST_INFLUX__DATABASE"]
    out = capsys.readouterr().out
    assert "replayed 1 (1 lines written), still invalid 1" in out
    assert readings_in_db(influx) == {("ph", now - 1000): 14.2}
    with DeadLetterStore(service.deadletter_path) as store:
        assert store.count(pending_only=True) == 1
        assert store.list(reason="bad_json")[0].replay_result.startswith("still invalid: bad_json")  # type: ignore[union-attr]
    assert main(["ingest", "--state-dir", str(tmp_path / "none"), "deadletter", "count"]) == 2


def test_two_workers_on_a_shared_subscription_store_each_reading_once(
    start_ingest: Callable[..., IngestService], influx: InfluxV1, stack: LocalStack, manifest: Manifest
) -> None:
    first = start_ingest()
    second = start_ingest(share_group=first.settings.share_group)
    edge = ResendingPublisher(stack.config.host, stack.config.mqtt_port)
    messages = [make_message(manifest, seq, 10, recent_t0()) for seq in range(3_000)]
    for m in messages:
        edge.add(m)
    edge.connect()
    try:
        edge.run_until_acked(60)
    finally:
        edge.close()
    assert edge.resent == 0
    a, b = first.stats.readings_written, second.stats.readings_written
    assert min(a, b) > 0, f"both workers must share the work, got {a} and {b}"
    assert a + b == 30_000
    assert first.stats.duplicates + second.stats.duplicates == 0
    assert readings_in_db(influx) == expected(messages)
    first.stop()
    second.stop()
    seqs_a = first.ledger.devices[DEVICE].stored if first.ledger else None
    seqs_b = second.ledger.devices[DEVICE].stored if second.ledger else None
    assert seqs_a is not None
    assert seqs_b is not None
    assert len(seqs_a) + len(seqs_b) == 3_000  # disjoint: no message was handled by both
    (merged,) = read_ledger(first.state_dir)
    assert (merged.stored, merged.stored_through, merged.missing) == (3_000, 2_999, 0)


def test_metrics_status_and_silence(
    start_ingest: Callable[..., IngestService],
    stack: LocalStack,
    manifest: Manifest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = start_ingest(metrics_port=0, silence_after_s=0.5)
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), make_message(manifest, 0, 5, recent_t0()).encode())])
    finally:
        close_client(publisher)
    wait_until(lambda: service.stats.readings_written == 5, 10, "the readings")
    assert not service.status()["silent"]
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    assert 'pilotwatch_ingest_readings_written_total{worker="' in text
    assert f'pilotwatch_ingest_device_last_seen_seconds{{device="{DEVICE}",worker="{service.worker}"}}' in text
    wait_until(lambda: service.status()["silent"], 5, "silence to be noticed")
    wait_until(lambda: json.loads(_status_text(service, capsys, "--json"))[0]["silent"], 5, "the status file")
    assert "connected but receiving nothing" in _status_text(service, capsys)
    lag = service.status()["lag_s"]
    assert math.isfinite(lag)
    assert lag >= 0
    # `pilotwatch stack status` carries ingest's line (home = the folder holding stack/ and ingest/).
    home = tmp_path / "home"
    (home / "ingest").mkdir(parents=True)
    for f in service.state_dir.glob("status-*.json"):
        (home / "ingest" / f.name).write_text(f.read_text())
    (home / "stack").symlink_to(stack.root, target_is_directory=True)
    capsys.readouterr()
    main(["--home", str(home), "stack", "status"])
    assert "ingest: " + service.worker in capsys.readouterr().out.replace("\n", "")


def _status_text(service: IngestService, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    capsys.readouterr()
    main(["ingest", "--state-dir", str(service.state_dir), "status", *flags])
    return capsys.readouterr().out


def test_the_ledger_is_published_to_influxdb_while_running_and_at_shutdown(
    start_ingest: Callable[..., IngestService], stack: LocalStack, influx: InfluxV1, manifest: Manifest
) -> None:
    service = start_ingest(delivery_interval_s=0.2)
    t0 = recent_t0()
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), make_message(manifest, s, 2, t0).encode()) for s in (0, 1, 3)])
    finally:
        close_client(publisher)

    def latest() -> dict[str, object] | None:
        rows = influx.query(f"SELECT * FROM delivery WHERE device = '{DEVICE}' ORDER BY time DESC LIMIT 1")
        return rows[0] if rows else None

    wait_until(lambda: (latest() or {}).get("stored") == 3, 10, "a periodic delivery point")
    row = latest()
    assert row is not None
    assert (row["stored_through"], row["missing"], json.loads(str(row["gaps"]))) == (1, 1, [[2, 2]])
    assert (row["city"], row["site"]) == ("bangkok", "bkk-pratunam-pier")
    before = influx.count("delivery", "stored")
    service.stop()
    assert influx.count("delivery", "stored") == before + 1  # every device once more at shutdown
