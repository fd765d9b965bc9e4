"""Anchors for benchmarks: what the real services can do on this machine, measured in the same run.

This machine is shared and noisy, so a pilotwatch figure means something only beside an anchor taken minutes
apart on the same hardware. Two anchors:

- :func:`broker_qos1_rate`: Mosquitto's own QoS 1 throughput, publisher → broker → subscriber, with nothing of
  pilotwatch in the path (paho clients, fixed payload). The ceiling for anything that crosses the broker.
- :func:`influx_raw_write_rate`: InfluxDB's own write rate for given line-protocol lines, posted in batches over
  one keep-alive HTTP connection. The ceiling for anything that lands in InfluxDB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pilotwatch.influx import InfluxV1

# paho loses publishes silently past 65,535 unacknowledged; stay far below.
MAX_ANCHOR_MESSAGES = 50_000


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return f"{self.per_s:,.0f}/s ({self.count:,} in {self.seconds:.2f} s)"


def broker_qos1_rate(
    host: str, port: int, messages: int = 20_000, payload_bytes: int = 512, timeout_s: float = 120.0
) -> Rate:
    """Messages per second from one QoS 1 publisher to one QoS 1 subscriber through the broker."""
    if not 0 < messages <= MAX_ANCHOR_MESSAGES:
        raise ValueError(f"messages must be in 1..{MAX_ANCHOR_MESSAGES}, got {messages}")
    topic = f"bench/anchor/{time.monotonic_ns()}"
    received = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, _msg: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"anchor-sub-{topic[-8:]}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_args: subscribed.set()
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"anchor-pub-{topic[-8:]}")
    pub.max_inflight_messages_set(200)
    pub.connect(host, port)
    pub.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("anchor subscriber was not subscribed within 10 s")
        payload = b"x" * payload_bytes
        start = time.perf_counter()
        for _ in range(messages):
            pub.publish(topic, payload, qos=1)
        if not done.wait(timeout_s):
            raise RuntimeError(f"anchor subscriber got {received} of {messages} QoS 1 messages in {timeout_s} s")
        return Rate(messages, time.perf_counter() - start)
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()


def influx_raw_write_rate(url: str, database: str, lines: Sequence[str], batch: int = 5_000) -> Rate:
    """Points per second InfluxDB accepts for ``lines``, posted in batches to ``/write`` (precision ms)."""
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    with InfluxV1(url, database) as client:
        client.create_database()
        start = time.perf_counter()
        for offset in range(0, len(lines), batch):
            response = client.write_lines(lines[offset : offset + batch])
            if response.status_code != 204:
                raise httpx.HTTPStatusError(
                    f"raw write answered {response.status_code}: {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
        return Rate(len(lines), time.perf_counter() - start)
