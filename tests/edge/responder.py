"""A small stand-in for ingest's acknowledging side, for edge tests: real broker in, real InfluxDB out.

It subscribes to every device's readings (persistent session, QoS 1), writes them to InfluxDB with the schema of
:mod:`pilotwatch.influx`, and only after InfluxDB answered 204 publishes an :class:`AckMessage` with everything
stored so far for that device (``stored_through`` = the contiguous prefix from seq 0, then ranges, as ingest's
ledger computes them). It records
every seq it received, duplicates included, so tests can see re-sends.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, defaultdict

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.ledger import SeqSet
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.schema import StoredReading
from pilotwatch.wire import (
    READINGS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    AckMessage,
    Channel,
    ReadingsMessage,
    StatusMessage,
    ack_topic,
    decode_readings,
    decode_status,
    parse_topic,
)


class AckResponder:
    def __init__(self, host: str, port: int, influx: InfluxV1, manifest: Manifest, client_id: str) -> None:
        self.influx = influx
        self.index = manifest.device_index()
        self.stored: dict[str, SeqSet] = defaultdict(SeqSet)
        self.received: Counter[tuple[str, int]] = Counter()
        self.history: list[ReadingsMessage] = []  # every message in order of arrival, re-sends included
        self.statuses: dict[str, StatusMessage] = {}
        self.paused = threading.Event()  # set: receive but neither store nor acknowledge
        self._queue: queue.SimpleQueue[ReadingsMessage | None] = queue.SimpleQueue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.max_inflight_messages_set(500)
        self._client.on_connect = lambda c, *_: c.subscribe([(READINGS_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._client.connect_async(host, port)
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> AckResponder:
        self._worker.start()
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._worker.join(10)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if parse_topic(msg.topic)[1] is Channel.STATUS:
            status = decode_status(msg.topic, bytes(msg.payload))
            with self._lock:
                self.statuses[status.device] = status
            return
        decoded = decode_readings(msg.topic, bytes(msg.payload))
        assert not decoded.rejected, decoded.rejected
        with self._lock:
            self.received[(decoded.message.device, decoded.message.seq)] += 1
            self.history.append(decoded.message)
        if not self.paused.is_set():
            self._queue.put(decoded.message)

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get(timeout=0.02))
                except queue.Empty:
                    break
                if len(batch) >= 200:
                    break
            if None in batch:
                return
            lines = []
            for message in batch:
                assert message is not None
                placement = self.index[message.device]
                lines += [
                    StoredReading(
                        placement.city.id,
                        placement.site.id,
                        message.device,
                        r.sensor,
                        r.param,
                        r.value,
                        r.unit,
                        r.t_ms,
                        message.seq,
                        r.flag,
                    ).to_line()
                    for r in message.readings
                ]
            response = self.influx.write_lines(lines)
            assert response.status_code == 204, response.text
            devices = set()
            for message in batch:
                assert message is not None
                self.stored[message.device].add(message.seq)
                devices.add(message.device)
            for device in devices:
                stored = self.stored[device]
                through = stored.through(0)
                ack = AckMessage(device, through, tuple(stored.above(through)), t_ms=time.time_ns() // 1_000_000)
                self._client.publish(ack_topic(device), ack.encode(), qos=1)

    def duplicates(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.received.values())
