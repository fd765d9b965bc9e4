"""Fixtures for ingest tests: an ingest service in-process on the session stack (a database and state folder of
the test alone), and clean-up of the persistent MQTT sessions each test leaves at the shared broker."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from commands.stack import LocalStack
from ingest.service import IngestService
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.wire import status_topic

_ids = itertools.count()


def forget_session(host: str, port: int, client_id: str) -> None:
    """End a persistent session at the broker so it stops queueing messages for a worker that is gone."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.05)
    client.disconnect()
    client.loop_stop()


def clear_retained_status(host: str, port: int, devices: tuple[str, ...] | None = None) -> None:
    """Remove retained statuses (an edge test's last will, say) so a test's ledger sees only its own.

    Every device of the manifest by default: any earlier test on the session broker may have left one.
    """
    if devices is None:
        devices = tuple(device.id for _, _, device in load_manifest().iter_devices())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"clear-{time.monotonic_ns()}")
    client.connect(host, port)
    client.loop_start()
    try:
        for device in devices:
            client.publish(status_topic(device), b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_settings(stack: LocalStack, database: str, state_dir: Path, **overrides: Any) -> IngestSettings:
    n = next(_ids)
    values: dict[str, Any] = {
        "database": database,
        "client_id": f"ingest-t{n}-{time.monotonic_ns() % 10**9}",
        "share_group": f"g{n}x{time.monotonic_ns() % 10**9}",
        "batch_interval_s": 0.05,
        "retry_initial_s": 0.05,
        "retry_max_s": 1.0,
        "spool_after_s": 1.0,
        "state_interval_s": 0.2,
    }
    values.update(overrides)
    return IngestSettings.for_local_stack(stack.config, state_dir, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def start_ingest(
    stack: LocalStack, influx: InfluxV1, manifest: Manifest, tmp_path: Path
) -> Iterator[Callable[..., IngestService]]:
    """Start an ingest service on the session stack; stopped and its broker session ended after the test."""
    started: list[IngestService] = []
    clear_retained_status(stack.config.host, stack.config.mqtt_port)

    def start(**overrides: Any) -> IngestService:
        service_kwargs = overrides.pop("service_kwargs", {})
        settings = test_settings(stack, influx.database, tmp_path / "ingest", **overrides)
        service = IngestService(settings, manifest, **service_kwargs)
        service.start()
        started.append(service)
        service.wait_connected()
        return service

    yield start
    for service in started:
        service.stop()
        forget_session(stack.config.host, stack.config.mqtt_port, service.settings.client_id)
