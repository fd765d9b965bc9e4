"""Inputs and oracles for fuzzing every decoder on ingest's side: readings, status and ack payloads, and the whole
intake stage (wire decoding, manifest validation, dedupe, seq bounds).

Shared by the bounded run in CI (tests/reliability/test_fuzz_decoders.py) and the long run
(``bench/fuzz_decoders.py``, ``make fuzz``). The oracle is the contract: every input is either accepted or refused
with a :class:`~pilotwatch.wire.Reason` and a detail that says what was seen; any other exception is a crash. For
the intake stage, every message also ends in exactly one outcome (stored, duplicate or refused), what is stored
can be sent to InfluxDB (encodable line protocol), and a refused message never reaches the ledger as stored.

Inputs: raw bytes; JSON documents of any shape; and, most of all, valid messages with one or a few fields replaced
by hostile values (integers of hundreds or thousands of digits, 2**63 - 1, NaN and Infinity tokens, lone
surrogates, deep nesting, wrong types, unknown keys), published on the right topic or on a wrong one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from ingest.intake import Batch, Intake
from ingest.metrics import Stats
from ingest.validate import Validator
from pilotwatch.manifest import load_manifest
from pilotwatch.wire import (
    MAX_SEQ,
    Reason,
    WireError,
    ack_topic,
    decode_ack,
    decode_readings,
    decode_status,
    readings_topic,
    status_topic,
)

DEVICE = "bkk-pratunam-wq1"
T = 1_790_000_000_000  # 2026-09-21, after the device was commissioned
NOW_MS = T + 60_000
READING = {"t": T, "sensor": "ph", "param": "ph", "value": 7.1, "unit": "pH"}

HOSTILE_INTS = (
    -1,
    0,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    10**400,
    -(10**400),
    10**4000,
)
HOSTILE_STRINGS = ("", "\ud800", "\udfff", "a\x00b", "\u202e", "x" * 5000, "NaN", "1e999", "pH\ud83d")

NESTED: tuple[Any, ...] = (
    [],
    {},
    [1, [2, [3, [4]]]],
    {"a": {"b": {"c": None}}},
    [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],
    {"t": 1, "sensor": "ph"},
    [{"t": T, "sensor": "ph", "param": "ph", "value": 7.1, "unit": "pH"}] * 3,
    [READING] * 1001,
    ["x"] * 50,
)
# Flat pools drawn from, rather than recursive strategies: the run is bounded by time in CI, and hostile shapes
# come from the pools while hypothesis chooses where they go and with what neighbours.
json_values = st.one_of(
    st.sampled_from(HOSTILE_INTS),
    st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from(NESTED),
    st.sampled_from([None, True, False, float("nan"), float("inf"), -float("inf"), -0.0, 1e308, 5e-324]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
)


def _dumps(obj: Any) -> bytes:
    # allow_nan: NaN and Infinity tokens are exactly what a hostile device would send.
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any], nested: str | None) -> bytes:
    obj = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        target = obj
        if nested is not None and isinstance(obj.get(nested), list) and obj[nested] and draw(st.booleans()):
            index = draw(st.integers(0, len(obj[nested]) - 1))
            if isinstance(obj[nested][index], dict):
                target = obj[nested][index]
        keys = [*sorted(target), "extra"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 5)) == 0:
            target.pop(key, None)
        else:
            # A copy: the pools hold shared objects, and a later mutation must not change them for the next input.
            target[key] = copy.deepcopy(draw(json_values))
    payload = _dumps(obj)
    cut = draw(st.integers(0, 20))
    if cut == 0 and payload:
        payload = payload[: draw(st.integers(0, len(payload) - 1))]  # a torn message
    elif cut == 1:
        payload = payload.replace(b"7.1", b"1" * draw(st.sampled_from([400, 5000])), 1)  # raw huge literal
    return payload


def _readings_base(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    readings = [dict(READING, t=T + 1000 * i) for i in range(n)]
    return {"v": 1, "device": DEVICE, "seq": draw(st.integers(0, 10)), "sent": T + 5000, "readings": readings}


@st.composite
def _topic(draw: st.DrawFn, right: str) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=60))
    if kind == 1:
        return draw(st.sampled_from([readings_topic(DEVICE), status_topic(DEVICE), ack_topic(DEVICE)]))
    if kind == 2:
        return right.replace(DEVICE, draw(st.sampled_from(["mlk-morten-wq1", "no-such-device", "A", "x" * 80])))
    return right


@st.composite
def readings_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    topic = draw(_topic(readings_topic(DEVICE)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return topic, draw(st.binary(max_size=300))
    if kind == 1:
        return topic, _dumps(draw(json_values))
    return topic, draw(_mutated(_readings_base(draw), "readings"))


@st.composite
def status_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    topic = draw(_topic(status_topic(DEVICE)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return topic, draw(st.binary(max_size=300))
    if kind == 1:
        return topic, _dumps(draw(json_values))
    base = {
        "v": 1,
        "device": DEVICE,
        "state": "online",
        "t": T,
        "battery_pct": 80.5,
        "signal_dbm": -70.0,
        "uptime_s": 3600.0,
        "buffer_depth": 12,
        "oldest_unsent": T - 60_000,
        "disk_free_mb": 900.0,
        "last_seq": 5,
        "sensors": {"ph": "ok"},
    }
    return topic, draw(_mutated(base, None))


@st.composite
def ack_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    topic = draw(_topic(ack_topic(DEVICE)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return topic, draw(st.binary(max_size=300))
    if kind == 1:
        return topic, _dumps(draw(json_values))
    base = {"v": 1, "device": DEVICE, "stored_through": 4, "ranges": [[6, 9], [12, 12]], "t": T}
    return topic, draw(_mutated(base, "ranges"))


@dataclass
class Tally:
    """What a fuzz run saw: inputs accepted, refused by reason."""

    accepted: int = 0
    refused: dict[str, int] | None = None

    def refuse(self, reason: Reason) -> None:
        if self.refused is None:
            self.refused = {}
        self.refused[reason.value] = self.refused.get(reason.value, 0) + 1

    @property
    def total(self) -> int:
        return self.accepted + sum((self.refused or {}).values())


def _refused(exc: WireError, tally: Tally) -> None:
    assert isinstance(exc.reason, Reason), exc
    assert exc.detail, f"refused as {exc.reason} without a detail"
    assert len(exc.detail) < 2000, f"a detail of {len(exc.detail)} characters: {exc.detail[:100]}..."
    tally.refuse(exc.reason)


DECODERS = {"readings": decode_readings, "status": decode_status, "ack": decode_ack}


def check_decoder(kind: str, topic: str, payload: bytes, tally: Tally) -> None:
    """Accepted, or a WireError with a reason and a short detail; anything else propagates (a crash)."""
    try:
        DECODERS[kind](topic, payload)
    except WireError as exc:
        _refused(exc, tally)
    else:
        tally.accepted += 1


class IntakeHarness:
    """The intake stage on the default manifest, with the oracle of its contract."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.intake = Intake(Validator(load_manifest()), self.stats, dedupe_window=1000)
        self.tally = Tally()

    def check(self, topic: str, payload: bytes) -> None:
        batch = Batch()
        rejected_before = sum(self.stats.messages_rejected.values())
        self.intake.take(topic, payload, (1, 1), batch, NOW_MS)
        outcomes = len(batch.stored) + len(batch.duplicates) + (1 if batch.statuses else 0)
        refused = sum(self.stats.messages_rejected.values()) - rejected_before
        assert self.stats.messages_rejected[Reason.PROCESSING_FAILED.value] == 0, batch.rejections[-1].detail
        assert outcomes + refused <= 1 + len(batch.duplicates), (batch, refused)
        if outcomes == 0 and refused == 0 and payload and not batch.rejections:
            raise AssertionError(f"message neither stored, duplicate nor refused: {topic!r} {payload[:200]!r}")
        for line in batch.lines:
            line.encode("utf-8")  # what the writer will send; a lone surrogate here would kill the writer
        for rejection in batch.rejections:
            assert rejection.detail
            assert isinstance(rejection.reason, Reason)
        for device, seq in (*batch.stored, *batch.refused):
            assert 0 <= seq <= MAX_SEQ
            assert device in self.intake.validator.devices
        if outcomes:
            self.tally.accepted += 1
        for rejection in batch.rejections:
            self.tally.refuse(rejection.reason)
