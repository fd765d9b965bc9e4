"""The ingest service: MQTT in, then three stages, each testable without MQTT, composed here.

1. **Intake** (:mod:`ingest.intake`, validate and dedupe, pure): each message becomes lines, rejections, a
   duplicate or a refusal with a reason, added to a batch.
2. **Store** (:mod:`ingest.store`): the batch's dead letters are committed, its lines written to InfluxDB through
   the classified writer (retry, split a rejected batch, dead-letter the refused lines) or spooled to disk.
3. **Acknowledge** (:mod:`ingest.acknowledge`): the gap ledger is marked and saved, the MQTT messages PUBACKed,
   each device sent its end-to-end :class:`~pilotwatch.wire.AckMessage`.

Threads and hand-offs (each stage has one owner, so no state is shared without a queue):

- paho's network thread puts every received message in ``inbox`` (bounded in practice by the MQTT 5 receive
  maximum ``max_unacked``: the broker sends no more until some are acknowledged);
- the consumer thread runs the intake stage and closes a batch at ``batch_readings`` readings, at half the receive
  window, or ``batch_interval_s`` after its first message;
- the writer thread runs store and acknowledge for each batch, drains the spool, saves the ledger and status file,
  and publishes the ledger as ``delivery`` points (:mod:`ingest.delivery`).

A message is acknowledged to the broker only when its readings are safe, so a crash at any point leaves it with
the broker (persistent session) or the edge (which keeps readings until the end-to-end ack covers them).

Nothing dies silently: each thread beats a heartbeat every time round its loop (``/metrics`` and ``ingest
status`` show the time of the slowest one's last beat; the status is ``stale`` past ``stale_after_s``), and a
thread that ends with an exception sets a fatal status, which stops the service; :meth:`IngestService.run_forever`
then returns 3, so ``pilotwatch ingest run`` exits non-zero and its supervisor restarts it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, start_http_server

from ingest.acknowledge import Acknowledger
from ingest.conflicts import InfluxSamples, SampleGuard
from ingest.deadletter import DeadLetterStore
from ingest.delivery import DeliveryPublisher
from ingest.intake import AckToken, Batch, Intake
from ingest.ledger import Ledger
from ingest.metrics import Stats, StatsCollector
from ingest.settings import ConflictCheck, IngestSettings
from ingest.spool import Spool
from ingest.store import Store
from ingest.validate import Validator
from pilotwatch.influx_writer import FatalWriteError, RetryPolicy, Writer
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.wire import STATUS_SUBSCRIPTION

WriterFactory = Callable[[IngestSettings], Writer]
MqttFactory = Callable[[IngestSettings], mqtt.Client]

log = logging.getLogger(__name__)

ACK_INFLIGHT = 100  # end-to-end acks in flight to the broker at once; more wait in paho's queue
CONSUMER = "consume"
WRITER = "write"

__all__ = ["FatalWriteError", "IngestService", "default_mqtt_factory"]


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


def _sample_lookup(settings: IngestSettings) -> InfluxSamples:
    """The InfluxQL reader of the conflicting-sample check (same server and database as the writer); a short
    timeout, because it runs on the consumer thread."""
    connection = settings.influx.model_copy(update={"timeout_s": min(settings.influx.timeout_s, 5.0)})
    return InfluxSamples(connection.client())


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
        self._outbox: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._gen = 0
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client: mqtt.Client | None = None
        self._writer: Writer | None = None
        self._dead: DeadLetterStore | None = None
        self._lookup: InfluxSamples | None = None
        self.ledger: Ledger | None = None
        self.intake: Intake | None = None
        self.store: Store | None = None
        self.acknowledger: Acknowledger | None = None
        self.delivery: DeliveryPublisher | None = None
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
        settings = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._started_ms = int(self._clock() * 1000)
        self._dead = DeadLetterStore(
            self.deadletter_path,
            payload_bytes=settings.deadletter_payload_bytes,
            max_bytes=settings.deadletter_max_bytes,
            retention_days=settings.deadletter_retention_days,
            timeout_s=settings.deadletter_timeout_s,
        )
        spool = Spool(self.spool_dir, settings.spool_max_bytes)
        self.ledger = ledger = Ledger(self.ledger_path, self.worker)
        self._writer = writer = self._writer_factory(settings)
        guard = None
        if settings.conflict_check is ConflictCheck.ON:
            self._lookup = _sample_lookup(settings)
            guard = SampleGuard(self._lookup, per_device=settings.conflict_cache)
        highest = {device: rec.stored.highest for device, rec in ledger.devices.items() if rec.stored.highest >= 0}
        self.intake = Intake(
            self.validator, self.stats, dedupe_window=settings.dedupe_window, guard=guard, highest_seq=highest
        )
        policy = RetryPolicy(settings.retry_initial_s, settings.retry_max_s, settings.spool_after_s)
        self.store = Store(
            writer,
            self._dead,
            spool,
            self.stats,
            policy,
            stopping=self._stopping.is_set,
            beat=lambda: self.stats.beat(WRITER),
        )
        self.acknowledger = Acknowledger(
            ledger,
            self.stats,
            puback=self._puback,
            publish=self._publish,
            clock_ms=lambda: int(self._clock() * 1000),
            clock_window_ms=round(settings.clock_window_s * 1000),
        )
        placement = {d: (spec.city, spec.site) for d, spec in self.validator.devices.items()}
        self.delivery = DeliveryPublisher(self.state_dir, placement, writer)
        if settings.metrics_port is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StatsCollector(self.stats, self.worker, settings.silence_after_s, settings.stale_after_s))
            server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
            self._metrics_server = server
            self.metrics_port = int(server.server_port)
        self._threads = [
            threading.Thread(target=self._guarded(CONSUMER, self._consume), name=f"ingest-{CONSUMER}-{self.worker}"),
            threading.Thread(target=self._guarded(WRITER, self._write_loop), name=f"ingest-{WRITER}-{self.worker}"),
        ]
        for thread in self._threads:
            thread.daemon = True
            self.stats.beat(thread.name.split("-")[1])
            thread.start()
        client = self._mqtt_factory(settings)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.max_inflight_messages_set(ACK_INFLIGHT)
        client.reconnect_delay_set(1, 5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings.session_expiry_s
        props.ReceiveMaximum = settings.max_unacked
        # clean_start=False: resume this worker's session, with what the broker queued while it was away.
        client.connect_async(
            settings.mqtt.host,
            settings.mqtt.port,
            keepalive=settings.mqtt.keepalive_s,
            clean_start=False,
            properties=props,
        )
        client.loop_start()
        self._client = client

    def _guarded(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        """Run a thread's loop; if it ends with an exception, say so as a fatal status and stop the service."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                # Not swallowed: the fatal status stops the service, and run_forever exits non-zero.
                log.exception("ingest thread %r stopped", name)
                if self.stats.fatal is None:
                    self.stats.fatal = f"ingest thread '{name}' stopped: {type(exc).__name__}: {str(exc)[:300]}"
                self._stopping.set()

        return run

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Block until connected and subscribed (the broker acknowledged both subscriptions)."""
        if not self._connected.wait(timeout_s):
            raise TimeoutError(
                f"ingest did not connect to MQTT {self.settings.mqtt.host}:{self.settings.mqtt.port} in {timeout_s} s"
            )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush what is batched, make it safe, acknowledge it, save and publish the ledger, disconnect."""
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
        if self.delivery is not None and self.stats.fatal is None:
            self.delivery.publish(int(self._clock() * 1000), everything=True)
        self._write_status()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._writer is not None:
            self._writer.close()
        if self._lookup is not None:
            self._lookup.close()
        if self._dead is not None:
            self._dead.close()
        self._stopped.set()

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal error; the exit code says which (0, or 3 after a fatal error)."""
        stop = threading.Event()

        def _signal(_signum: int, _frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, _signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(0.5):
                if self.stats.fatal is not None:
                    break
                dead = [t.name for t in self._threads if not t.is_alive()]
                if dead:
                    self.stats.fatal = f"ingest thread(s) {dead} ended unexpectedly"
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

    def _puback(self, token: AckToken) -> None:
        message_gen, mid = token
        client = self._client
        # A message from an earlier connection is redelivered by the broker; its old id may be reused.
        if client is not None and message_gen == self._gen:
            client.ack(mid, 1)

    def _publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is not None:
            client.publish(topic, payload, qos=1)

    # -- consumer thread: intake ----------------------------------------------------------------------------
    def _consume(self) -> None:
        settings = self.settings
        intake = self.intake
        assert intake is not None
        stats = self.stats
        flush_messages = max(1, settings.max_unacked // 2)
        batch = Batch()
        try:
            while not self._stopping.is_set():
                stats.beat(CONSUMER)
                wait = min(settings.batch_interval_s, 0.5)
                if batch.acks:
                    wait = max(0.0, batch.opened_at + settings.batch_interval_s - time.monotonic())
                try:
                    gen, message = self._inbox.get(timeout=max(min(wait, 0.5), 0.001))
                except queue.Empty:
                    pass
                else:
                    if not batch.acks:
                        batch.opened_at = time.monotonic()
                    now = self._clock()
                    stats.last_message_at = now
                    intake.take(_topic_of(message), bytes(message.payload), (gen, message.mid), batch, int(now * 1000))
                if batch.acks and (
                    batch.readings >= settings.batch_readings
                    or batch.messages >= flush_messages
                    or time.monotonic() - batch.opened_at >= settings.batch_interval_s
                ):
                    self._hand_over(batch)
                    batch = Batch()
            if batch.acks:
                self._hand_over(batch)
        finally:
            self._hand_over(None)

    def _hand_over(self, batch: Batch | None) -> None:
        while True:
            try:
                self._outbox.put(batch, timeout=0.5)
                return
            except queue.Full:
                self.stats.beat(CONSUMER)
                if self.stats.fatal is not None:
                    return

    # -- writer thread: store and acknowledge ---------------------------------------------------------------
    def _write_loop(self) -> None:
        store, acknowledger = self.store, self.acknowledger
        assert store is not None
        assert acknowledger is not None
        settings = self.settings
        next_state = 0.0
        next_drain = 0.0
        next_delivery = time.monotonic() + settings.delivery_interval_s
        backoff = settings.retry_initial_s
        done = False
        try:
            while not done:
                self.stats.beat(WRITER)
                try:
                    batch = self._outbox.get(timeout=0.05)
                except queue.Empty:
                    batch = Batch()  # nothing new: a chance to drain the spool and save state
                else:
                    if batch is None:
                        done = True
                        batch = Batch()
                if batch.acks:
                    store.make_safe(batch)
                    acknowledger.settle(batch)
                now = time.monotonic()
                if not store.spool.empty and now >= next_drain:
                    if store.drain_one():
                        backoff = settings.retry_initial_s
                    else:
                        next_drain = now + backoff
                        backoff = min(backoff * 2, settings.retry_max_s)
                if now >= next_state:
                    self._save_state()
                    next_state = now + settings.state_interval_s
                if now >= next_delivery and self.delivery is not None:
                    self.delivery.publish(int(self._clock() * 1000))
                    next_delivery = now + settings.delivery_interval_s
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

    # -- state ----------------------------------------------------------------------------------------------
    def _save_state(self) -> None:
        if self.ledger is not None:
            self.ledger.save()
        if self._dead is not None:
            self.stats.deadletters_dropped = self._dead.dropped_total
        self._write_status()

    def _write_status(self) -> None:
        snapshot = self.status()
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
                "stale_after_s": self.settings.stale_after_s,
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
        return self.stats.snapshot(self.settings.silence_after_s, self.settings.stale_after_s)


def _topic_of(message: mqtt.MQTTMessage) -> str:
    """The topic as text; a topic that is not UTF-8 (the broker should refuse it) is kept escaped, not fatal."""
    try:
        return message.topic
    except UnicodeDecodeError:
        raw: bytes = message._topic  # paho keeps the raw bytes only there
        return raw.decode("utf-8", "backslashreplace")
