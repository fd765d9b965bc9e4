"""Test publishers and helpers for ingest tests: wire-format messages from the manifest's sensors, and a
publisher of hand-made messages that keeps and re-sends like the edge (every message until ingest's end-to-end ack
covers it by :meth:`pilotwatch.wire.AckMessage.covers`, the rule the edge agent uses; re-sends what is not covered
after a timeout, oldest first, in bounded chunks, with a bounded in-flight window). Tests that need the edge's own
sampling and disk buffer run the real :class:`edge.agent.EdgeAgent` (tests/ingest/fleet.py)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pilotwatch.influx import InfluxV1, quote_literal
from pilotwatch.manifest import Manifest
from pilotwatch.wire import AckMessage, Reading, ReadingsMessage, ack_topic, decode_ack, readings_topic

DEVICE = "bkk-pratunam-wq1"
_client_ids = itertools.count()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sensors_of(manifest: Manifest, device: str = DEVICE) -> list[tuple[str, str, str, float, float]]:
    placement = manifest.device_index()[device]
    return [(s.id, s.param.value, s.unit, s.valid_range[0], s.valid_range[1]) for s in placement.device.sensors]


def make_readings(
    manifest: Manifest, seq: int, per_message: int, t0_ms: int, device: str = DEVICE, step_ms: int = 1000
) -> tuple[Reading, ...]:
    """``per_message`` readings, unique (sensor, time) per (seq, index), values inside the valid range."""
    sensors = sensors_of(manifest, device)
    out = []
    for i in range(per_message):
        k = seq * per_message + i
        sid, param, unit, low, high = sensors[k % len(sensors)]
        t = t0_ms + (k // len(sensors)) * step_ms
        value = round(low + (high - low) * ((k * 7919) % 1000) / 1000.0, 3)
        out.append(Reading(t_ms=t, sensor=sid, param=param, value=value, unit=unit))
    return tuple(out)


def make_message(manifest: Manifest, seq: int, per_message: int, t0_ms: int, device: str = DEVICE) -> ReadingsMessage:
    readings = make_readings(manifest, seq, per_message, t0_ms, device)
    sent = max(r.t_ms for r in readings) + 1
    return ReadingsMessage(device=device, seq=seq, sent_ms=sent, readings=readings)


def recent_t0(days_ago: float = 3.0) -> int:
    return int((time.time() - days_ago * 86_400) * 1000) // 1000 * 1000


def new_client(host: str, port: int, prefix: str = "test") -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{time.monotonic_ns()}-{next(_client_ids)}")
    client.connect(host, port)
    client.loop_start()
    return client


def close_client(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def publish_all(client: mqtt.Client, items: list[tuple[str, bytes]], window: int = 500, timeout_s: float = 60) -> None:
    """QoS 1 publishes with at most ``window`` awaiting PUBACK (paho loses publishes past 65,535 in flight)."""
    sem = threading.Semaphore(window)
    done = threading.Event()
    remaining = [len(items)]
    lock = threading.Lock()

    def on_publish(*_args: object) -> None:
        sem.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    client.on_publish = on_publish
    if not items:
        return
    for topic, payload in items:
        if not sem.acquire(timeout=timeout_s):
            raise AssertionError("publisher window never opened: the broker stopped acknowledging")
        client.publish(topic, payload, qos=1)
    assert done.wait(timeout_s), f"{remaining[0]} publishes never acknowledged by the broker"


def readings_in_db(influx: InfluxV1, device: str = DEVICE) -> dict[tuple[str, int], float]:
    rows = influx.query(
        f"SELECT value, sensor FROM reading WHERE device = {quote_literal(device)}",
    )
    return {(r["sensor"], int(r["time"])): float(r["value"]) for r in rows}


def expected(messages: list[ReadingsMessage]) -> dict[tuple[str, int], float]:
    return {(r.sensor, r.t_ms): r.value for m in messages for r in m.readings}


@dataclass
class ResendingPublisher:
    """Publishes given messages like the edge does: keep each until an end-to-end ack covers it
    (:meth:`pilotwatch.wire.AckMessage.covers`, the one delivery rule), re-send the rest, bounded windows."""

    host: str
    port: int
    device: str = DEVICE
    window: int = 500  # QoS 1 publishes awaiting PUBACK
    resend_after_s: float = 3.0
    chunk: int = 2_000  # messages re-sent per round
    buffer: dict[int, bytes] = field(default_factory=dict)
    sent_at: dict[int, float] = field(default_factory=dict)
    published: int = 0
    resent: int = 0
    acks: int = 0
    max_inflight_seen: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight = 0
        self._window_open = threading.Condition(self._lock)
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()

    def add(self, message: ReadingsMessage) -> None:
        with self._lock:
            self.buffer[message.seq] = message.encode()

    def connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{self.device}-{time.monotonic_ns()}")
        client.on_connect = lambda c, *_: c.subscribe(ack_topic(self.device), qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_ack
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(self.window)
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        assert self._subscribed.wait(10), "the publisher could not subscribe to its ack topic"

    def close(self) -> None:
        if self._client is not None:
            close_client(self._client)
            self._client = None

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self._inflight -= 1
            self._window_open.notify()

    def _on_ack(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        ack: AckMessage = decode_ack(msg.topic, bytes(msg.payload))
        with self._lock:
            self.acks += 1
            # The protocol's one delivery rule (the edge agent and its buffer forget by the same method).
            for seq in [s for s in self.buffer if ack.covers(s)]:
                del self.buffer[seq]
                self.sent_at.pop(seq, None)

    def _send(self, seq: int, payload: bytes) -> None:
        assert self._client is not None
        with self._lock:
            while self._inflight >= self.window:
                if not self._window_open.wait(30):
                    raise AssertionError("the broker stopped acknowledging publishes")
            self._inflight += 1
            self.max_inflight_seen = max(self.max_inflight_seen, self._inflight)
            self.sent_at[seq] = time.monotonic()
        self._client.publish(readings_topic(self.device), payload, qos=1)

    def send_new(self) -> None:
        """Publish every buffered message never sent, oldest first."""
        with self._lock:
            todo = sorted((s, p) for s, p in self.buffer.items() if s not in self.sent_at)
        for seq, payload in todo:
            self._send(seq, payload)
            self.published += 1

    def resend_due(self) -> int:
        """Re-send, oldest first, at most ``chunk`` messages sent longer than ``resend_after_s`` ago."""
        now = time.monotonic()
        with self._lock:
            # An ack can race a re-send of the same seq: drop entries for messages no longer buffered first.
            for seq in [s for s in self.sent_at if s not in self.buffer]:
                del self.sent_at[seq]
            due = sorted(s for s, at in self.sent_at.items() if now - at >= self.resend_after_s)[: self.chunk]
            items = [(s, self.buffer[s]) for s in due if s in self.buffer]
        for seq, payload in items:
            self._send(seq, payload)
            self.resent += 1
        return len(items)

    def unacked_seqs(self) -> set[int]:
        with self._lock:
            return set(self.buffer)

    def pending(self) -> int:
        with self._lock:
            return len(self.buffer)

    def run_until_acked(self, timeout_s: float) -> None:
        """Send, re-send and wait until the end-to-end acks cover everything (the edge's forward loop)."""
        deadline = time.monotonic() + timeout_s
        self.send_new()
        while self.pending():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.pending()} messages never acknowledged end to end in {timeout_s} s")
            self.resend_due()
            time.sleep(0.2)
