"""Wire format v1: what the edge encodes, ingest decodes; malformed payloads fail with a stable reason."""

from __future__ import annotations

import json
import random

import pytest

from pilotwatch.wire import (  # the two paths compared below
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    AckMessage,
    DecodedReadings,
    DeviceState,
    Reading,
    ReadingsMessage,
    Reason,
    StatusMessage,
    WireError,
    _decode_readings_explaining,
    _decode_sound,
    ack_topic,
    decode_ack,
    decode_readings,
    decode_status,
    parse_topic,
    readings_topic,
    status_topic,
)

T0 = 1_790_000_000_000
TOPIC = readings_topic("bkk-pratunam-wq1")


def _message(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "v": 1,
        "device": "bkk-pratunam-wq1",
        "seq": 12,
        "sent": T0 + 5_000,
        "readings": [
            {"t": T0, "sensor": "do", "param": "do", "value": 3.2, "unit": "mg/L"},
            {"t": T0, "sensor": "ph", "param": "ph", "value": 7, "unit": "pH", "flag": 1},
        ],
    }
    payload.update(overrides)
    return payload


def _reason(payload: bytes, topic: str = TOPIC) -> Reason:
    with pytest.raises(WireError) as info:
        decode_readings(topic, payload)
    return info.value.reason


def test_round_trip_keeps_every_field() -> None:
    message = ReadingsMessage(
        device="bkk-pratunam-wq1",
        seq=41,
        sent_ms=T0 + 1,
        readings=(Reading(T0, "do", "do", 3.25, "mg/L"), Reading(T0 + 300_000, "ph", "ph", 7.0, "pH", flag=3)),
    )
    decoded = decode_readings(TOPIC, message.encode())
    assert decoded.message == message
    assert decoded.rejected == ()


def test_integer_value_is_read_as_float() -> None:
    decoded = decode_readings(TOPIC, json.dumps(_message()).encode())
    assert decoded.message.readings[1].value == 7.0
    assert isinstance(decoded.message.readings[1].value, float)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", Reason.BAD_JSON),
        (b"\xff\xfe", Reason.BAD_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (json.dumps(_message(v=2)).encode(), Reason.BAD_VERSION),
        (json.dumps({k: v for k, v in _message().items() if k != "seq"}).encode(), Reason.MISSING_FIELD),
        (json.dumps(_message(extra=1)).encode(), Reason.UNKNOWN_FIELD),
        (json.dumps(_message(device="other-device")).encode(), Reason.TOPIC_MISMATCH),
        (json.dumps(_message(device="Bad Id")).encode(), Reason.BAD_DEVICE_ID),
        (json.dumps(_message(seq=-1)).encode(), Reason.BAD_SEQUENCE),
        (json.dumps(_message(seq="12")).encode(), Reason.BAD_SEQUENCE),
        (json.dumps(_message(sent=12)).encode(), Reason.BAD_TIMESTAMP),
        (json.dumps(_message(readings=[])).encode(), Reason.EMPTY_BATCH),
        (json.dumps(_message(readings={})).encode(), Reason.BAD_TYPE),
        (
            json.dumps(
                _message(readings=[{"t": T0, "sensor": "do", "param": "do", "value": 1.0, "unit": "mg/L"}] * 1001)
            ).encode(),
            Reason.TOO_MANY_READINGS,
        ),
        (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", Reason.PAYLOAD_TOO_LARGE),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(payload: bytes, reason: Reason) -> None:
    assert _reason(payload) is reason


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        ({"t": T0, "sensor": "do", "param": "do", "value": "3.2", "unit": "mg/L"}, Reason.BAD_TYPE),
        ({"t": T0, "sensor": "do", "param": "do", "value": True, "unit": "mg/L"}, Reason.BAD_TYPE),
        ({"t": T0, "sensor": "do", "param": "do", "value": "<1e400>", "unit": "mg/L"}, Reason.NON_FINITE),
        ({"t": T0 * 10, "sensor": "do", "param": "do", "value": 1.0, "unit": "mg/L"}, Reason.BAD_TIMESTAMP),
        ({"t": 1.5, "sensor": "do", "param": "do", "value": 1.0, "unit": "mg/L"}, Reason.BAD_TYPE),
        ({"t": T0, "sensor": "DO!", "param": "do", "value": 1.0, "unit": "mg/L"}, Reason.BAD_SENSOR_ID),
        ({"t": T0, "sensor": "do", "param": "do", "value": 1.0, "unit": ""}, Reason.BAD_UNIT),
        ({"t": T0, "sensor": "do", "param": "do", "value": 1.0}, Reason.MISSING_FIELD),
        ({"t": T0, "sensor": "do", "param": "do", "value": 1.0, "unit": "mg/L", "flag": 5}, Reason.BAD_TYPE),
        ("3.2", Reason.BAD_TYPE),
    ],
)
def test_one_bad_reading_does_not_cost_its_neighbours(reading: object, reason: Reason) -> None:
    good = {"t": T0, "sensor": "ec", "param": "conductivity", "value": 812.0, "unit": "uS/cm"}
    # A literal 1e400 is valid JSON that overflows to infinity: it must be refused as non-finite, not stored.
    text = json.dumps(_message(readings=[good, reading, good])).replace('"<1e400>"', "1e400")
    decoded = decode_readings(TOPIC, text.encode())
    assert [r.value for r in decoded.message.readings] == [812.0, 812.0]
    (rejected,) = decoded.rejected
    assert (rejected.index, rejected.reason) == (1, reason)


def test_nan_and_infinity_literals_are_refused() -> None:
    text = json.dumps(_message()).replace("3.2", "NaN")
    assert _reason(text.encode()) is Reason.NON_FINITE
    text = json.dumps(_message()).replace("3.2", "-Infinity")
    assert _reason(text.encode()) is Reason.NON_FINITE


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("pilotwatch/v2/devices/bkk-pratunam-wq1/readings", Reason.BAD_TOPIC),
        ("pilotwatch/v1/devices/bkk-pratunam-wq1/extra/readings", Reason.BAD_TOPIC),
        ("pilotwatch/v1/devices/bkk-pratunam-wq1/firmware", Reason.BAD_TOPIC),
        ("pilotwatch/v1/devices/BKK/readings", Reason.BAD_DEVICE_ID),
        ("pilotwatch/v1/devices/" + "a" * 300 + "/readings", Reason.BAD_TOPIC),
        (status_topic("bkk-pratunam-wq1"), Reason.BAD_TOPIC),
    ],
)
def test_bad_topics(topic: str, reason: Reason) -> None:
    assert _reason(json.dumps(_message()).encode(), topic) is reason


def test_encoder_refuses_what_the_decoder_would_refuse() -> None:
    readings = tuple(Reading(T0 + i, "do", "do", 1.0, "mg/L") for i in range(MAX_READINGS_PER_MESSAGE))
    huge = ReadingsMessage("bkk-pratunam-wq1", 1, T0, readings * 4)
    with pytest.raises(WireError) as info:
        huge.encode()
    assert info.value.reason is Reason.PAYLOAD_TOO_LARGE
    with pytest.raises(WireError, match="non_finite: sensor 'do' value nan is not finite"):
        ReadingsMessage("bkk-pratunam-wq1", 1, T0, (Reading(T0, "do", "do", float("nan"), "mg/L"),)).encode()


def test_status_round_trip_and_last_will() -> None:
    status = StatusMessage(
        device="jkt-kalibaru-bin1",
        state=DeviceState.ONLINE,
        t_ms=T0,
        battery_pct=71.5,
        signal_dbm=-93.0,
        uptime_s=3600.0,
        buffer_depth=12,
        oldest_unsent_ms=T0 - 60_000,
        disk_free_mb=812.0,
        last_seq=99,
        sensors={"fill": "ok", "temp": "stuck"},
    )
    topic = status_topic("jkt-kalibaru-bin1")
    assert decode_status(topic, status.encode()) == status
    will = StatusMessage(device="jkt-kalibaru-bin1", state=DeviceState.LOST, t_ms=T0)
    assert decode_status(topic, will.encode()).state is DeviceState.LOST
    with pytest.raises(WireError, match="state 'asleep' is not one of"):
        decode_status(topic, json.dumps({"v": 1, "device": "jkt-kalibaru-bin1", "state": "asleep", "t": T0}).encode())


def test_ack_round_trip_and_validation() -> None:
    ack = AckMessage(device="cto-anlac-bin1", stored_through=41, ranges=((45, 50), (52, 52)), t_ms=T0)
    topic = ack_topic("cto-anlac-bin1")
    assert decode_ack(topic, ack.encode()) == ack
    bad = json.dumps({"v": 1, "device": "cto-anlac-bin1", "stored_through": 3, "ranges": [[5, 4]], "t": T0})
    with pytest.raises(WireError, match=r"range \[5, 4\] must be \[first, last\]"):
        decode_ack(topic, bad.encode())


def test_parse_topic() -> None:
    assert parse_topic(ack_topic("dng-quay-bin1")) == ("dng-quay-bin1", parse_topic(ack_topic("x1"))[1])


MUTATIONS: list[tuple[str, object]] = [
    ("v", 2),
    ("v", True),
    ("v", "1"),
    ("v", 1.0),
    ("device", "bkk-asok-wq1"),
    ("device", "BKK"),
    ("device", None),
    ("seq", -1),
    ("seq", 2**64),
    ("seq", True),
    ("seq", 1.0),
    ("seq", "3"),
    ("sent", 0),
    ("sent", 1.5),
    ("sent", T0 * 100),
    ("sent", False),
    ("t", 0),
    ("t", T0 + 0.5),
    ("t", True),
    ("t", "2026-01-01"),
    ("t", None),
    ("sensor", "Do"),
    ("sensor", ""),
    ("sensor", "x" * 40),
    ("sensor", 3),
    ("param", "PH"),
    ("param", 7),
    ("value", True),
    ("value", "7.1"),
    ("value", None),
    ("value", [1.0]),
    ("value", {"x": 1}),
    ("value", 10**400),
    ("unit", ""),
    ("unit", "u" * 17),
    ("unit", 5),
    ("flag", 0),
    ("flag", 5),
    ("flag", True),
    ("flag", "1"),
    ("flag", 1.0),
    ("extra", 1),
    ("-readings", None),
    ("-t", None),
    ("-unit", None),
    ("readings", []),
    ("readings", {}),
]


def test_fast_path_never_accepts_what_the_explaining_path_refuses() -> None:
    """decode_readings answers sound messages from msgspec and falls back for the rest; both must agree."""
    rng = random.Random(20261123)
    accepted = refused = 0
    for _ in range(3_000):
        payload = _message(
            seq=rng.randrange(0, 10**6),
            readings=[
                {
                    "t": T0 + rng.randrange(10**9),
                    "sensor": "do",
                    "param": "do",
                    "value": rng.uniform(-1e6, 1e6),
                    "unit": "mg/L",
                    **({"flag": rng.choice([1, 2, 3, 4, 9])} if rng.random() < 0.3 else {}),
                }
                for _ in range(rng.randrange(1, 6))
            ],
        )
        for _ in range(rng.randrange(0, 3)):
            key, value = rng.choice(MUTATIONS)
            readings = payload.get("readings")
            if key in ("v", "device", "seq", "sent", "readings", "extra"):
                payload[key] = value
            elif key == "-readings":
                payload.pop("readings", None)
            elif isinstance(readings, list) and readings and isinstance(readings[0], dict):
                target = rng.choice(readings)
                if key.startswith("-"):
                    target.pop(key[1:], None)
                else:
                    target[key] = value
        raw = json.dumps(payload).encode()
        slow: DecodedReadings | Reason
        try:
            slow = _decode_readings_explaining("bkk-pratunam-wq1", raw)
        except WireError as exc:
            slow = exc.reason
        fast = _decode_sound(raw)
        if fast is None:
            refused += 1
            continue
        accepted += 1
        if fast.device != "bkk-pratunam-wq1":  # checked after decoding, against the topic, on both paths
            assert slow is Reason.TOPIC_MISMATCH
            with pytest.raises(WireError, match="topic_mismatch"):
                decode_readings(TOPIC, raw)
            continue
        assert isinstance(slow, DecodedReadings), (raw, slow)
        assert slow.rejected == (), raw
        assert slow.message.seq == fast.seq
        assert slow.message.sent_ms == fast.sent
        assert slow.message.readings == tuple(fast.readings)
        assert decode_readings(TOPIC, raw) == slow
    assert accepted > 500
    assert refused > 500
