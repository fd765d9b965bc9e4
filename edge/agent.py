"""The edge agent of one device: sample → disk buffer → MQTT, kept until ingest acknowledges end to end.

Delivery contract (docs/edge.md, "Delivery"):

- A reading is committed to the :class:`~edge.buffer.SqliteBuffer` when sampled and deleted only when an
  :class:`~pilotwatch.wire.AckMessage` on ``pilotwatch/v1/devices/<id>/ack`` covers its message's seq. A broker
  PUBACK only moves a message from "published" to "sent, awaiting end-to-end ack".
- Messages are formed from the buffer (oldest first) only while fewer than ``max_unacked_messages`` are
  unacknowledged, and published only while fewer than ``max_inflight`` wait for a PUBACK: far below the 65,535
  unacknowledged publishes past which paho loses messages silently.
- A sent message not acknowledged within ``ack_timeout_s`` (doubling per attempt, up to 8x) is re-sent with the same
  seq and readings, oldest first, at most ``resend_chunk`` per round. After a restart every unacknowledged message
  is re-sent the same way.
- Live readings first: readings sampled since the current connection came up form their own messages, ahead of
  the backlog, which replays oldest-first in the slots left (``live_reserve`` slots are kept for live readings).
- A retained status (battery, signal, uptime, buffer depth, oldest unsent, last seq, disk headroom, per-sensor
  health) goes out on connect and every ``status_interval_s``; the last will says ``lost``; a clean stop says
  ``offline``. paho reconnects with exponential backoff between ``reconnect_min_s`` and ``reconnect_max_s``.

Threads: paho's network thread only puts events on a queue; all buffer work happens on the thread that calls
:meth:`EdgeAgent.pump`, so SQLite is used from one thread.
"""

from __future__ import annotations

import heapq
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.buffer import SqliteBuffer
from edge.clock import Clock, SimulatedClock
from edge.sampler import SampleBatch, Sampler
from edge.settings import EdgeSettings
from pilotwatch.wire import (
    AckMessage,
    DeviceState,
    ReadingsMessage,
    StatusMessage,
    WireError,
    ack_topic,
    decode_ack,
    device_client_id,
    readings_topic,
    status_topic,
)

log = logging.getLogger(__name__)

ClientFactory = Callable[[str], mqtt.Client]
MAX_BACKOFF_FACTOR = 8


def paho_client(client_id: str) -> mqtt.Client:
    """The default MQTT client: MQTT 3.1.1, clean session (ingest's acks, not the broker's session, drive re-sends)."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # connected | disconnected | puback | ack | refused
    value: Any = None


@dataclass
class AgentCounters:
    published_messages: int = 0
    published_readings: int = 0  # first sends only
    resent_messages: int = 0
    pubacks: int = 0
    acks: int = 0
    bad_acks: int = 0
    connects: int = 0


class EdgeAgent:
    def __init__(
        self,
        settings: EdgeSettings,
        sampler: Sampler,
        buffer: SqliteBuffer,
        *,
        client_factory: ClientFactory = paho_client,
        monotonic: Callable[[], float] = time.monotonic,
        battery_pct: Callable[[int], float | None] | None = None,
        signal_dbm: Callable[[int], float | None] | None = None,
    ) -> None:
        if not settings.device:
            raise ValueError("settings.device is empty: which device does this agent run?")
        if settings.device != sampler.device.id:
            raise ValueError(f"settings are for {settings.device!r} but the sampler is for {sampler.device.id!r}")
        self.settings = settings
        self.device_id = settings.device
        self.sampler = sampler
        self.buffer = buffer
        self.clock: Clock = sampler.clock
        self.stamp_clock: Clock = sampler.stamp_clock
        self.monotonic = monotonic
        self.battery_pct = battery_pct
        self.signal_dbm = signal_dbm
        self.counters = AgentCounters()
        self._client_factory = client_factory
        self._client: mqtt.Client | None = None
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._connected = False
        self._started_mono = monotonic()
        self._live_floor = buffer.max_id()
        self._last_live_form = 0.0
        self._last_status = -1e18
        # In memory only: a restart re-sends everything the buffer still holds.
        self._unsent: list[int] = buffer.unacked_seqs()
        heapq.heapify(self._unsent)
        self._queued = set(self._unsent)
        self._pending_puback: dict[int, int] = {}  # mid -> seq
        self._sent: dict[int, tuple[float, int]] = {}  # seq -> (PUBACK time, attempts)
        self._attempts: dict[int, int] = {}
        self._seq_floor = buffer.stats().last_seq  # seqs above it were formed by this run

    # -- MQTT ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (paho's thread reconnects with backoff); returns at once."""
        s = self.settings
        client = self._client_factory(device_client_id(self.device_id))
        if s.mqtt_username is not None:
            client.username_pw_set(s.mqtt_username, s.password.get_secret_value() if s.password else None)
        if s.tls_ca is not None:
            client.tls_set(
                ca_certs=str(s.tls_ca),
                certfile=str(s.tls_cert) if s.tls_cert else None,
                keyfile=str(s.tls_key) if s.tls_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        will = StatusMessage(self.device_id, DeviceState.LOST, self.stamp_clock.now_ms())
        client.will_set(status_topic(self.device_id), will.encode(), qos=1, retain=True)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(s.max_inflight + 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=s.keepalive_s)
        client.loop_start()
        self._client = client

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            self._events.put(_Event("refused", str(reason)))
            return
        client.subscribe(ack_topic(self.device_id), qos=1)
        self._events.put(_Event("connected"))

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        self._events.put(_Event("disconnected", str(reason)))

    def _on_publish(self, _c: object, _u: object, mid: int, _r: object, _p: object) -> None:
        self._events.put(_Event("puback", mid))

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self._events.put(_Event("ack", (message.topic, bytes(message.payload))))

    @property
    def connected(self) -> bool:
        return self._connected

    # -- sampling --------------------------------------------------------------------------------------------
    def sample(self, until_ms: int | None = None) -> int:
        """Sample what is due. With a :class:`SimulatedClock` and ``until_ms``, step the clock through every slot
        up to ``until_ms`` first. Everything sampled goes to the buffer in one transaction; returns the count."""
        batch = SampleBatch()
        if until_ms is not None:
            if not isinstance(self.clock, SimulatedClock):
                raise ValueError("sample(until_ms=...) steps a SimulatedClock; this agent runs on a real clock")
            while self.sampler.next_due_ms <= until_ms:
                self.clock.advance_to(max(self.clock.now_ms(), self.sampler.next_due_ms))
                self.sampler.sample_due(batch)
            self.clock.advance_to(max(self.clock.now_ms(), until_ms))
        else:
            self.sampler.sample_due(batch)
        if batch.readings or batch.slots:
            dropped = self.buffer.add(batch.readings, batch.slots)
            if dropped:
                log.warning("%s: buffer full, dropped the %d oldest readings", self.device_id, dropped)
        return len(batch.readings)

    # -- the delivery loop -----------------------------------------------------------------------------------
    def pump(self) -> None:
        """One round: handle network events, re-send timed-out messages, form and publish, status. Non-blocking."""
        self._drain_events()
        now = self.monotonic()
        if self._connected:
            self._resend_timed_out(now)
            self._form(now)
            self._publish()
            if now - self._last_status >= self.settings.status_interval_s:
                self.publish_status(DeviceState.ONLINE)

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if event.kind == "connected":
                self._connected = True
                self.counters.connects += 1
                self._live_floor = self.buffer.max_id()
                self._last_status = -1e18
            elif event.kind == "disconnected":
                # paho keeps its unacknowledged publishes and sends them again after reconnecting, so the
                # PUBACK window stays as it is; end-to-end timeouts cover anything lost on the way.
                self._connected = False
            elif event.kind == "refused":
                self._connected = False
                log.error("%s: broker refused the connection: %s", self.device_id, event.value)
            elif event.kind == "puback":
                seq = self._pending_puback.pop(int(event.value), None)
                if seq is not None and seq in self._attempts:
                    self._sent[seq] = (self.monotonic(), self._attempts[seq])
                    self.counters.pubacks += 1
            elif event.kind == "ack":
                self._handle_ack(*event.value)

    def _handle_ack(self, topic: str, payload: bytes) -> None:
        try:
            ack = decode_ack(topic, payload)
        except WireError as exc:
            self.counters.bad_acks += 1
            log.warning("%s: ignored a malformed ack: %s", self.device_id, exc)
            return
        if ack.device != self.device_id:
            self.counters.bad_acks += 1
            return
        self.counters.acks += 1
        self.buffer.ack(ack)
        self._forget(ack)

    def _forget(self, ack: AckMessage) -> None:
        covered = ack.covers
        for seq in [s for s in self._sent if covered(s)]:
            del self._sent[seq]
            self._attempts.pop(seq, None)
        if any(covered(s) for s in self._queued):
            self._queued = {s for s in self._queued if not covered(s)}
            self._unsent = [s for s in self._unsent if s in self._queued]
            heapq.heapify(self._unsent)
        for seq in [s for s in self._attempts if covered(s)]:
            del self._attempts[seq]

    def _resend_timed_out(self, now: float) -> None:
        timeout = self.settings.ack_timeout_s
        due = sorted(
            seq
            for seq, (at, attempts) in self._sent.items()
            if now - at >= timeout * min(2 ** (attempts - 1), MAX_BACKOFF_FACTOR)
        )[: self.settings.resend_chunk]
        for seq in due:
            del self._sent[seq]
            self._queue(seq)

    def _queue(self, seq: int) -> None:
        if seq not in self._queued:
            self._queued.add(seq)
            heapq.heappush(self._unsent, seq)

    def _form(self, now: float) -> None:
        s = self.settings
        while self.buffer.messages < s.max_unacked_messages:
            live = self.buffer.unformed_after(self._live_floor)
            if live and (live >= s.batch_max_readings or now - self._last_live_form >= s.linger_s):
                formed = self.buffer.form(
                    s.batch_max_readings, after_id=self._live_floor, t_ms=self.stamp_clock.now_ms()
                )
                self._last_live_form = now
            elif self.buffer.unformed > live and self.buffer.messages < s.max_unacked_messages - s.live_reserve:
                formed = self.buffer.form(
                    s.batch_max_readings, up_to_id=self._live_floor, t_ms=self.stamp_clock.now_ms()
                )
            else:
                return
            if formed is None:
                return
            self._queue(formed.seq)

    def _publish(self) -> None:
        client = self._client
        if client is None:
            return
        while self._unsent and len(self._pending_puback) < self.settings.max_inflight:
            seq = self._unsent[0]
            readings = self.buffer.message(seq)
            if not readings:
                # Dropped by the bound of the buffer (or acknowledged meanwhile): nothing left to send.
                heapq.heappop(self._unsent)
                self._queued.discard(seq)
                continue
            payload = ReadingsMessage(self.device_id, seq, self.stamp_clock.now_ms(), readings).encode()
            info = client.publish(readings_topic(self.device_id), payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                return  # paho did not take it (queue full); try again next round
            heapq.heappop(self._unsent)
            self._queued.discard(seq)
            self._pending_puback[info.mid] = seq
            attempts = self._attempts.get(seq, 0) + 1
            self._attempts[seq] = attempts
            self.counters.published_messages += 1
            if attempts == 1 and seq > self._seq_floor:
                self.counters.published_readings += len(readings)
            elif attempts > 1:
                self.counters.resent_messages += 1

    def publish_status(self, state: DeviceState) -> mqtt.MQTTMessageInfo | None:
        client = self._client
        if client is None:
            return None
        stats = self.buffer.stats()
        t_ms = self.stamp_clock.now_ms()
        status = StatusMessage(
            device=self.device_id,
            state=state,
            t_ms=t_ms,
            battery_pct=self.battery_pct(self.clock.now_ms()) if self.battery_pct else None,
            signal_dbm=self.signal_dbm(self.clock.now_ms()) if self.signal_dbm else None,
            uptime_s=round(self.monotonic() - self._started_mono, 1),
            buffer_depth=stats.depth,
            oldest_unsent_ms=stats.oldest_unsent_ms,
            disk_free_mb=round(self.buffer.disk_free_mb(), 1),
            last_seq=stats.last_seq if stats.last_seq >= 0 else None,
            sensors=self.sampler.health(),
        )
        self._last_status = self.monotonic()
        return client.publish(status_topic(self.device_id), status.encode(), qos=1, retain=True)

    # -- state for callers -----------------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._pending_puback)

    @property
    def idle(self) -> bool:
        """Nothing held: every sampled reading has been acknowledged end to end (or dropped)."""
        return self.buffer.depth == 0

    def run(self, stop: threading.Event, tick_s: float = 0.05) -> None:
        """Real-time loop of ``pilotwatch edge run``: sample what is due, pump, sleep until the next slot."""
        while not stop.is_set():
            self.sample()
            self.pump()
            wait_ms = self.sampler.next_due_ms - self.clock.now_ms()
            stop.wait(max(0.0, min(tick_s, wait_ms / 1000.0)))

    def stop(self, timeout_s: float = 2.0) -> None:
        """Say ``offline`` (retained), disconnect, stop paho's thread. The buffer stays for the next start."""
        client = self._client
        if client is None:
            return
        if self._connected:
            info = self.publish_status(DeviceState.OFFLINE)
            if info is not None:
                deadline = time.monotonic() + timeout_s
                while not info.is_published() and time.monotonic() < deadline:
                    time.sleep(0.01)
        client.disconnect()
        client.loop_stop()
        self._client = None
        self._connected = False
