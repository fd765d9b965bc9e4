"""The ingest service: MQTT in, validation, dedupe, batched InfluxDB writes, spool, dead letters, acknowledgements.

Threads and hand-offs (each stage has one owner, so no state is shared without a queue):

1. paho's network thread puts every received message in ``inbox`` (bounded in practice by the MQTT 5 receive
   maximum ``max_unacked``: the broker sends no more until some are acknowledged).
2. The consumer thread validates each message (:class:`~ingest.validate.Validator`), drops re-sends it has
   already accepted (same device, seq and content within ``dedupe_window``), and fills a batch, closed at
   ``batch_readings`` readings, at half the receive window, or ``batch_interval_s`` after its first message.
3. The writer thread makes each batch safe, in order: dead letters are committed to SQLite, lines are written to
   InfluxDB (retry with backoff and Retry-After on 429/5xx/timeouts; 400s are split to find the bad lines, which
   are dead-lettered while the good ones land; 401/403 stop ingest with a fatal status) or, after
   ``spool_after_s`` of failures, appended to the disk spool, which is drained in order once InfluxDB answers.
   Only then does it mark the gap ledger, PUBACK the MQTT messages (manual acknowledgement) and publish each
   device's end-to-end :class:`~pilotwatch.wire.AckMessage`.

A message is acknowledged to the broker only when its readings are safe, so a crash at any point leaves it with
the broker (persistent session) or the edge (which keeps readings until the end-to-end ack covers them).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, start_http_server

from ingest.deadletter import DeadLetterStore
from ingest.ledger import Ledger, compress
from ingest.metrics import Stats, StatsCollector
from ingest.settings import IngestSettings
from ingest.spool import Spool, SpoolFullError
from ingest.validate import Rejection, Validator, ids_from_payload
from ingest.writers import Outcome, Writer, WriteResult
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.wire import (
    STATUS_SUBSCRIPTION,
    AckMessage,
    Channel,
    Reason,
    StatusMessage,
    WireError,
    ack_topic,
    parse_topic,
)

WriterFactory = Callable[[IngestSettings], Writer]
MqttFactory = Callable[[IngestSettings], mqtt.Client]

ACK_INFLIGHT = 100  # end-to-end acks in flight to the broker at once; more wait in paho's queue


class FatalWriteError(RuntimeError):
    """InfluxDB refused in a way no retry can fix (401/403/404); ingest stops and says why."""


def default_mqtt_factory(settings: IngestSettings) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )
    if settings.mqtt.username:
        password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
        client.username_pw_set(settings.mqtt.username, password)
    return client


@dataclass
class _Batch:
    opened_at: float = 0.0
    lines: list[str] = field(default_factory=list)
    readings: int = 0
    statuses: list[StatusMessage] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)  # (connection generation, mid)
    stored: list[tuple[str, int]] = field(default_factory=list)  # (device, seq) whose readings are in this batch
    dead: list[tuple[str, int]] = field(default_factory=list)  # (device, seq) kept as dead letters
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # re-sends: ack again once this batch is safe
    newest_sent_ms: int = 0
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # device -> (received, sent, newest sample)

    @property
    def messages(self) -> int:
        return len(self.acks)


class IngestService:
    """Runnable in-process (:meth:`start` / :meth:`stop`) or as ``pilotwatch ingest run`` (:meth:`run_forever`)."""

    def __init__(
        self,
        settings: IngestSettings,
        manifest: Manifest | None = None,
        *,
        writer_factory: WriterFactory | None = None,
        mqtt_factory: MqttFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.manifest = manifest if manifest is not None else load_manifest(settings.manifest)
        self.validator = Validator(
            self.manifest, max_future_s=settings.max_future_s, clock_jump_s=settings.clock_jump_s
        )
        self._writer_factory: WriterFactory = writer_factory or (lambda s: s.make_writer())
        self._mqtt_factory = mqtt_factory or default_mqtt_factory
        self._clock = clock
        self.stats = Stats()
        self.state_dir = settings.state_dir
        self.worker = settings.client_id
        self._inbox: queue.SimpleQueue[tuple[int, mqtt.MQTTMessage]] = queue.SimpleQueue()
        self._outbox: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._gen = 0
        self._connected = threading.Event()
        self._seen: dict[str, dict[int, int]] = {}  # consumer-owned: device -> seq -> content digest
        self._threads: list[threading.Thread] = []
        self._client: mqtt.Client | None = None
        self._writer: Writer | None = None
        self._dead: DeadLetterStore | None = None
        self._spool: Spool | None = None
        self.ledger: Ledger | None = None
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        self._started_ms = 0

    # -- paths -----------------------------------------------------------------------------------------------
    @property
    def ledger_path(self) -> Path:
        return self.state_dir / f"ledger-{self.worker}.json"

    @property
    def status_path(self) -> Path:
        return self.state_dir / f"status-{self.worker}.json"

    @property
    def deadletter_path(self) -> Path:
        return self.state_dir / "deadletter.sqlite"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / f"spool-{self.worker}"

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            raise RuntimeError("this ingest service was already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._started_ms = int(self._clock() * 1000)
        self._dead = DeadLetterStore(self.deadletter_path)
        self._spool = Spool(self.spool_dir, self.settings.spool_max_bytes)
        self.ledger = Ledger(self.ledger_path, self.worker)
        self._writer = self._writer_factory(self.settings)
        if self.settings.metrics_port is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StatsCollector(self.stats, self.worker, self.settings.silence_after_s))
            server, _thread = start_http_server(
                self.settings.metrics_port, addr=self.settings.metrics_host, registry=registry
            )
            self._metrics_server = server
            self.metrics_port = int(server.server_port)
        self._threads = [
            threading.Thread(target=self._consume, name=f"ingest-consume-{self.worker}", daemon=True),
            threading.Thread(target=self._write_loop, name=f"ingest-write-{self.worker}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        client = self._mqtt_factory(self.settings)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.max_inflight_messages_set(ACK_INFLIGHT)
        client.reconnect_delay_set(1, 5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.max_unacked
        # clean_start=False: resume this worker's session, with what the broker queued while it was away.
        client.connect_async(
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            keepalive=self.settings.mqtt.keepalive_s,
            clean_start=False,
            properties=props,
        )
        client.loop_start()
        self._client = client

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Block until connected and subscribed (the broker acknowledged both subscriptions)."""
        if not self._connected.wait(timeout_s):
            raise TimeoutError(
                f"ingest did not connect to MQTT {self.settings.mqtt.host}:{self.settings.mqtt.port} in {timeout_s} s"
            )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush what is batched, make it safe, acknowledge it, save the ledger, disconnect (session kept)."""
        if self._stopped.is_set():
            return
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self.ledger is not None:
            self.ledger.save()
        self._write_status()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._writer is not None:
            self._writer.close()
        if self._dead is not None:
            self._dead.close()
        self._stopped.set()

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal write error; the exit code says which (0 or 3)."""
        stop = threading.Event()

        def _signal(_signum: int, _frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, _signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(0.5):
                if self.stats.fatal is not None:
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 3 if self.stats.fatal is not None else 0

    def __enter__(self) -> IngestService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- MQTT callbacks (paho's network thread) -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: object, flags: Any, reason: Any, _p: object) -> None:
        if reason.is_failure:
            self.stats.connected = False
            return
        self._gen += 1
        options = SubscribeOptions(qos=1)
        client.subscribe([(self.settings.subscription, options), (STATUS_SUBSCRIPTION, options)])
        self.stats.connected = True
        self.stats.connected_since = self._clock()

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: Any, _p: object) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            self.stats.fatal = f"the broker refused the subscriptions: {failed}"
            return
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, _reason: object, _p: object) -> None:
        self.stats.connected = False
        self._connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((self._gen, message))

    # -- consumer thread ------------------------------------------------------------------------------------
    def _consume(self) -> None:
        settings = self.settings
        flush_messages = max(1, settings.max_unacked // 2)
        batch = _Batch()
        try:
            while not self._stopping.is_set():
                wait = settings.batch_interval_s
                if batch.acks:
                    wait = max(0.0, batch.opened_at + settings.batch_interval_s - time.monotonic())
                try:
                    gen, message = self._inbox.get(timeout=max(wait, 0.001))
                except queue.Empty:
                    pass
                else:
                    if not batch.acks:
                        batch.opened_at = time.monotonic()
                    self._handle(gen, message, batch)
                if batch.acks and (
                    batch.readings >= settings.batch_readings
                    or batch.messages >= flush_messages
                    or time.monotonic() - batch.opened_at >= settings.batch_interval_s
                ):
                    self._hand_over(batch)
                    batch = _Batch()
            if batch.acks:
                self._hand_over(batch)
        finally:
            self._hand_over(None)

    def _hand_over(self, batch: _Batch | None) -> None:
        while True:
            try:
                self._outbox.put(batch, timeout=0.5)
                return
            except queue.Full:
                if self.stats.fatal is not None:
                    return

    def _handle(self, gen: int, message: mqtt.MQTTMessage, batch: _Batch) -> None:
        now = self._clock()
        now_ms = int(now * 1000)
        stats = self.stats
        stats.messages += 1
        stats.last_message_at = now
        batch.acks.append((gen, message.mid))
        topic = message.topic
        payload = bytes(message.payload)
        if topic.endswith("/status"):
            if payload:
                self._handle_status(topic, payload, batch)
            # An empty retained payload is how a status is cleared at the broker; there is nothing to store.
            return
        try:
            checked = self.validator.check_readings(topic, payload, now_ms)
        except WireError as exc:
            device, seq = ids_from_payload(topic, payload)
            batch.rejections.append(Rejection("message", topic, payload, exc.reason, exc.detail, device, seq))
            stats.messages_rejected[exc.reason.value] += 1
            if device is not None and seq is not None and device in self.validator.devices:
                batch.dead.append((device, seq))
            return
        device, seq = checked.device, checked.seq
        stats.device_last_seen[device] = now
        seen = self._seen.get(device)
        if seen is None:
            seen = self._seen[device] = {}
        previous = seen.get(seq)
        if previous is not None:
            if previous == checked.digest:
                stats.duplicates += 1
                batch.duplicates.append((device, seq))
            else:
                detail = f"seq {seq} of {device} was already accepted with different content; kept here"
                batch.rejections.append(Rejection("message", topic, payload, Reason.DUPLICATE, detail, device, seq))
                stats.messages_rejected[Reason.DUPLICATE.value] += 1
                batch.duplicates.append((device, seq))
            return
        seen[seq] = checked.digest
        if len(seen) > self.settings.dedupe_window:
            del seen[next(iter(seen))]
        for rejection in checked.rejections:
            stats.readings_rejected[rejection.reason.value] += 1
        batch.rejections.extend(checked.rejections)
        batch.lines.extend(checked.lines)
        batch.readings += len(checked.lines)
        stats.readings_received += len(checked.lines)
        batch.stored.append((device, seq))
        batch.newest_sent_ms = max(batch.newest_sent_ms, checked.sent_ms)
        batch.seen[device] = (now_ms, checked.sent_ms, checked.newest_t_ms)

    def _handle_status(self, topic: str, payload: bytes, batch: _Batch) -> None:
        try:
            status, status_line = self.validator.check_status(topic, payload)
        except WireError as exc:
            device, _seq = ids_from_payload(topic, payload)
            batch.rejections.append(Rejection("status", topic, payload, exc.reason, exc.detail, device, None))
            self.stats.messages_rejected[exc.reason.value] += 1
            return
        batch.lines.append(status_line)
        batch.statuses.append(status)

    # -- writer thread --------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        next_state = 0.0
        next_drain = 0.0
        backoff = self.settings.retry_initial_s
        done = False
        try:
            while not done:
                try:
                    batch = self._outbox.get(timeout=0.05)
                except queue.Empty:
                    batch = _Batch()  # nothing new: a chance to drain the spool and save state
                else:
                    if batch is None:
                        done = True
                        batch = _Batch()
                if batch.acks:
                    self._make_safe(batch)
                assert self._spool is not None
                now = time.monotonic()
                if not self._spool.empty and now >= next_drain:
                    if self._drain_one():
                        backoff = self.settings.retry_initial_s
                    else:
                        next_drain = now + backoff
                        backoff = min(backoff * 2, self.settings.retry_max_s)
                if now >= next_state:
                    self._save_state()
                    next_state = now + self.settings.state_interval_s
        except FatalWriteError as exc:
            self.stats.fatal = str(exc)
            self._stopping.set()
            # Leave the consumer unblocked: it may be waiting to hand over a batch that will never be written.
            while True:
                try:
                    self._outbox.get_nowait()
                except queue.Empty:
                    break
        finally:
            self._save_state()

    def _make_safe(self, batch: _Batch) -> None:
        assert self._dead is not None
        assert self._spool is not None
        assert self.ledger is not None
        stats = self.stats
        self._dead.add(batch.rejections)
        if batch.lines:
            self._store(batch.lines, batch.readings)
        stats.statuses_written += len(batch.statuses)
        ledger = self.ledger
        touched: dict[str, list[int]] = {}
        for device, seq in batch.stored:
            ledger.mark_stored(device, seq)
            touched.setdefault(device, []).append(seq)
        for device, seq in batch.dead:
            if ledger.mark_stored(device, seq):
                ledger.record(device).dead_lettered += 1
            touched.setdefault(device, []).append(seq)
        for device, seq in batch.duplicates:
            ledger.record(device).duplicates += 1
            touched.setdefault(device, []).append(seq)
        for device, (received_ms, sent_ms, newest) in batch.seen.items():
            rec = ledger.record(device)
            rec.last_seen_ms = received_ms
            rec.last_sent_ms = sent_ms
            rec.newest_sample_ms = max(rec.newest_sample_ms or 0, newest)
        for status in batch.statuses:
            rec = ledger.record(status.device)
            if rec.status_ms is None or status.t_ms >= rec.status_ms:
                rec.status_ms = status.t_ms
                rec.device_state = status.state.value
                rec.device_buffered = status.buffer_depth
                rec.device_oldest_unsent_ms = status.oldest_unsent_ms
                rec.device_last_seq = status.last_seq
        # Saved before anything is acknowledged: once the edge deletes a message on our word, the ledger must
        # already know it is stored, or a crash here would leave a "missing" number that nobody will re-send.
        ledger.save()
        client = self._client
        gen = self._gen
        if client is not None:
            for message_gen, mid in batch.acks:
                # A message from an earlier connection is redelivered by the broker; its old id may be reused.
                if message_gen == gen:
                    client.ack(mid, 1)
            now_ms = int(self._clock() * 1000)
            for device, seqs in touched.items():
                through = ledger.stored_through(device)
                ranges = tuple((max(a, through + 1), b) for a, b in compress(seqs) if b > through)
                ack = AckMessage(device=device, stored_through=through, ranges=ranges, t_ms=now_ms)
                client.publish(ack_topic(device), ack.encode(), qos=1)
                stats.acks_published += 1
        if batch.newest_sent_ms:
            stats.lag_s = max(0.0, self._clock() - batch.newest_sent_ms / 1000)

    def _store(self, lines: list[str], readings: int) -> None:
        """Write to InfluxDB or, failing that for ``spool_after_s``, to the spool. Returns once safe."""
        assert self._spool is not None
        stats = self.stats
        spool = self._spool
        if spool.empty:
            deadline = time.monotonic() + self.settings.spool_after_s
            delay = self.settings.retry_initial_s
            while True:
                result = self._write_split(lines)
                if result.outcome is Outcome.OK:
                    stats.write_batches += 1
                    stats.readings_written += readings
                    return
                stats.write_retries += 1
                if time.monotonic() >= deadline or self._stopping.is_set():
                    break
                wait = result.retry_after_s if result.retry_after_s is not None else delay
                time.sleep(min(wait, self.settings.retry_max_s, max(0.0, deadline - time.monotonic()) + 0.01))
                delay = min(delay * 2, self.settings.retry_max_s)
        # InfluxDB is away (or older batches wait in the spool, which must drain first to keep order).
        while True:
            try:
                spool.append(lines)
            except SpoolFullError:
                # Back-pressure: nothing is acknowledged until there is room, so nothing is dropped.
                if not self._drain_one():
                    time.sleep(self.settings.retry_initial_s)
                continue
            stats.readings_spooled += readings
            stats.spool_pending_batches = spool.pending_batches
            stats.spool_pending_bytes = spool.pending_bytes
            return

    def _drain_one(self) -> bool:
        """Write the oldest spooled batch; True if it went in (or the spool was empty)."""
        assert self._spool is not None
        lines = self._spool.peek()
        if lines is None:
            return True
        result = self._write_split(lines)
        if result.outcome is not Outcome.OK:
            self.stats.write_retries += 1
            return False
        self._spool.commit()
        self.stats.readings_drained += len(lines)
        self.stats.readings_written += len(lines)
        self.stats.spool_pending_batches = self._spool.pending_batches
        self.stats.spool_pending_bytes = self._spool.pending_bytes
        return True

    def _write_split(self, lines: list[str]) -> WriteResult:
        """Write; on a 400 split the batch until the refused lines are found, dead-letter those, keep the rest."""
        assert self._writer is not None
        assert self._dead is not None
        result = self._writer.write(lines)
        if result.outcome is Outcome.FATAL:
            raise FatalWriteError(f"{self._writer.name} writer: {result.detail}")
        if result.outcome is not Outcome.REJECT:
            return result
        if len(lines) == 1:
            self._dead.add([_line_rejection(lines[0], result)])
            self.stats.write_rejected_lines += 1
            self.stats.readings_rejected[Reason.WRITE_REJECTED.value] += 1
            return WriteResult(Outcome.OK, result.status)
        middle = len(lines) // 2
        first = self._write_split(lines[:middle])
        if first.outcome is not Outcome.OK:
            return first
        return self._write_split(lines[middle:])

    # -- state ----------------------------------------------------------------------------------------------
    def _save_state(self) -> None:
        if self.ledger is not None:
            self.ledger.save()
        self._write_status()

    def _write_status(self) -> None:
        snapshot = self.stats.snapshot(self.settings.silence_after_s)
        snapshot.update(
            {
                "worker": self.worker,
                "pid": os.getpid(),
                "started_ms": self._started_ms,
                "saved_ms": int(self._clock() * 1000),
                "running": not self._stopped.is_set() and not self._stopping.is_set(),
                "mqtt": f"{self.settings.mqtt.host}:{self.settings.mqtt.port}",
                "influx": f"{self.settings.influx.api.value} {self.settings.influx.url}",
                "metrics_port": self.metrics_port,
            }
        )
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
            tmp.replace(self.status_path)
        except OSError:
            # The status file is a convenience for `pilotwatch ingest status`; a full disk must not stop ingest.
            return

    def status(self) -> dict[str, Any]:
        return self.stats.snapshot(self.settings.silence_after_s)


def _line_rejection(text: str, result: WriteResult) -> Rejection:
    device = None
    for part in text.split(" ", 1)[0].split(","):
        if part.startswith("device="):
            device = part[len("device=") :]
    seq = None
    marker = ",seq="
    if marker in text:
        digits = text.split(marker, 1)[1].split("i", 1)[0]
        seq = int(digits) if digits.isdigit() else None
    topic = ""
    if device is not None:
        try:
            parse_topic(f"pilotwatch/v1/devices/{device}/{Channel.READINGS.value}")
            topic = f"pilotwatch/v1/devices/{device}/{Channel.READINGS.value}"
        except WireError:
            topic = ""
    detail = f"InfluxDB answered {result.status}: {result.detail[:300]}"
    return Rejection("line", topic, text.encode(), Reason.WRITE_REJECTED, detail, device, seq)
