"""A hostile device against the deployment broker: Mosquitto running ``deploy/mosquitto/mosquitto.conf`` with the
users and rules ``pilotwatch deploy mqtt-credentials`` generated, over TLS as a device connects in the field.

Each attack is made with valid device credentials and must be refused without costing ingest a single reading:
publishing as another device, reading anything, joining ingest's shared subscription, taking ingest's or another
device's client id, and sending packets past ``max_packet_size``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import MQTTProtocolVersion

from commands.deploy_cli import INGEST_USER, write_mqtt_credentials
from pilotwatch.manifest import Manifest
from pilotwatch.wire import (
    READINGS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    ack_topic,
    device_client_id,
    readings_topic,
    status_topic,
)
from tests.deploy_broker import Client, DeployBroker, connack, make_tls_files

A, B = "bkk-pratunam-wq1", "mlk-morten-wq1"
INGEST_ID = "pilotwatch-ingest-1"
SHARED = f"$share/ingest/{READINGS_SUBSCRIPTION}"
REFUSED = {128, 135}  # SUBACK "failure" (MQTT 3.1.1) and "not authorized" (MQTT 5)
MAX_PACKET = 1_048_576  # deploy/mosquitto/mosquitto.conf


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, manifest: Manifest
) -> Iterator[tuple[DeployBroker, dict[str, str]]]:
    root = tmp_path_factory.mktemp("deploy-broker")
    write_mqtt_credentials(manifest, root / "credentials")
    passwords: dict[str, str] = yaml.safe_load((root / "credentials" / "credentials.yaml").read_text())["users"]
    broker = DeployBroker(root, root / "credentials", make_tls_files(root / "certs"))
    yield broker, passwords
    broker.stop()


def device(
    deployed: tuple[DeployBroker, dict[str, str]],
    user: str,
    *,
    client_id: str | None = None,
    protocol: MQTTProtocolVersion = mqtt.MQTTv311,
) -> Client:
    broker, passwords = deployed
    return Client(
        user,
        passwords[user],
        broker.tls_port,
        client_id=client_id or device_client_id(user),
        tls_ca=broker.ca,
        protocol=protocol,
    )


def ingest(deployed: tuple[DeployBroker, dict[str, str]], client_id: str = INGEST_ID) -> Client:
    broker, passwords = deployed
    client = Client(INGEST_USER, passwords[INGEST_USER], broker.plain_port, client_id=client_id, protocol=mqtt.MQTTv5)
    assert client.connect_failure is None
    return client


def test_a_device_can_subscribe_to_nothing_but_its_own_acks(deployed: tuple[DeployBroker, dict[str, str]]) -> None:
    for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
        b = device(deployed, B, protocol=protocol)
        try:
            assert b.connect_failure is None
            assert b.subscribe(ack_topic(B)) == [1]
            for topic in (
                readings_topic(A),
                status_topic(A),
                ack_topic(A),
                readings_topic(B),  # not even its own readings: only ingest reads those
                READINGS_SUBSCRIPTION,
                STATUS_SUBSCRIPTION,
                "pilotwatch/#",
                "#",
                "$SYS/#",
                "$CONTROL/dynamic-security/v1",
                SHARED,
                f"$share/other/{READINGS_SUBSCRIPTION}",
                f"$share/ingest/{ack_topic(A)}",
            ):
                assert b.subscribe(topic)[0] in REFUSED, f"device {B} was granted {topic}"
        finally:
            b.close()


def test_joining_ingests_shared_subscription_costs_ingest_no_reading(
    deployed: tuple[DeployBroker, dict[str, str]], manifest: Manifest
) -> None:
    """The attack the acl_file setup let through: a device in ingest's share group takes a share of every
    device's readings, which the broker then drops. Three hostile joiners, 200 readings: ingest gets all 200."""
    worker = ingest(deployed)
    others = [d.id for _, _, d in manifest.iter_devices() if d.id != A][:3]
    hostile = [
        device(deployed, d, protocol=p)
        for d, p in zip(others, (mqtt.MQTTv311, mqtt.MQTTv5, mqtt.MQTTv311), strict=True)
    ]
    a = device(deployed, A)
    try:
        assert worker.subscribe(SHARED) == [1]
        for client in hostile:
            assert client.subscribe(SHARED)[0] in REFUSED
        for i in range(200):
            a.client.publish(readings_topic(A), f"r{i}".encode(), qos=1).wait_for_publish(5)
        worker.wait_for(b"r199")
        received = sorted(int(p[1:]) for t, p in worker.messages if t == readings_topic(A))
        assert received == list(range(200))
        assert all(client.messages == [] for client in hostile)
    finally:
        for client in (worker, a, *hostile):
            client.close()


def test_a_device_publishes_only_as_itself(deployed: tuple[DeployBroker, dict[str, str]]) -> None:
    worker = ingest(deployed)
    b = device(deployed, B)
    a = device(deployed, A)
    try:
        assert worker.subscribe(SHARED) == [1]
        assert worker.subscribe(STATUS_SUBSCRIPTION) == [1]
        assert a.subscribe(ack_topic(A)) == [1]
        for topic in (readings_topic(A), status_topic(A), ack_topic(A), "pilotwatch/v1/devices/x/readings", "x"):
            b.client.publish(topic, b"forged", qos=1).wait_for_publish(5)
        b.client.publish(readings_topic(B), b"own", qos=1).wait_for_publish(5)
        worker.wait_for(b"own")
        assert [p for _, p in worker.messages] == [b"own"]
        assert a.messages == [], "a forged ack reached the device"
    finally:
        for client in (worker, a, b):
            client.close()


def test_a_device_cannot_administer_the_broker(deployed: tuple[DeployBroker, dict[str, str]]) -> None:
    """The plugin takes commands on ``$CONTROL/dynamic-security/v1``; a device sending one (make a user, give
    itself ingest's role) is refused: the user does not exist afterwards and the device is still confined."""
    broker, _ = deployed
    b = device(deployed, B)
    try:
        commands = {
            "commands": [
                {"command": "createClient", "username": "intruder", "password": "intruder-pass"},
                {"command": "addClientRole", "username": B, "rolename": "ingest"},
            ]
        }
        b.client.publish("$CONTROL/dynamic-security/v1", json.dumps(commands).encode(), qos=1).wait_for_publish(5)
        b.client.publish("$SYS/broker/clients/total", b"0", qos=1).wait_for_publish(5)
    finally:
        b.close()
    login = connack("intruder", "intruder-pass", broker.tls_port, broker.ca, client_id="intruder")
    assert login.is_failure
    again = device(deployed, B)
    try:
        assert again.subscribe(SHARED)[0] in REFUSED, "the device gained ingest's role"
    finally:
        again.close()


def test_no_device_can_take_ingests_or_another_devices_client_id(
    deployed: tuple[DeployBroker, dict[str, str]],
) -> None:
    broker, passwords = deployed
    worker = ingest(deployed)
    a = device(deployed, A)
    try:
        assert worker.subscribe(SHARED) == [1]
        for client_id in (INGEST_ID, device_client_id(A), "anything-else", ""):
            reason = connack(B, passwords[B], broker.tls_port, broker.ca, client_id=client_id or None)
            assert reason.is_failure, f"device {B} connected as {client_id!r}"
        # The same device with its own id is accepted, so the refusals above are about the id.
        assert not connack(B, passwords[B], broker.tls_port, broker.ca, client_id=device_client_id(B)).is_failure
        # Neither session was kicked: both still deliver.
        a.client.publish(readings_topic(A), b"still-here", qos=1).wait_for_publish(5)
        worker.wait_for(b"still-here")
        assert worker.disconnects == []
        assert a.disconnects == []
    finally:
        for client in (worker, a):
            client.close()


def test_oversized_packets_are_refused_and_never_delivered(deployed: tuple[DeployBroker, dict[str, str]]) -> None:
    worker = ingest(deployed)
    b = device(deployed, B)
    try:
        assert worker.subscribe(SHARED) == [1]
        b.client.publish(readings_topic(B), b"x" * (MAX_PACKET + 1), qos=1)
        with b.got:
            assert b.got.wait_for(lambda: b.disconnects, 10), "the broker kept a client that sent an oversized packet"
        # Ingest is unaffected and the oversized payload never reached it.
        a = device(deployed, A)
        a.client.publish(readings_topic(A), b"after", qos=1).wait_for_publish(5)
        worker.wait_for(b"after")
        assert all(len(p) <= MAX_PACKET for _, p in worker.messages)
        a.close()
    finally:
        for client in (worker, b):
            client.close()


def test_wrong_password_anonymous_and_unknown_users_are_refused(deployed: tuple[DeployBroker, dict[str, str]]) -> None:
    broker, passwords = deployed
    for port, ca in ((broker.tls_port, broker.ca), (broker.plain_port, None)):
        assert connack(None, None, port, ca).is_failure
        assert connack(A, passwords[B], port, ca, client_id=device_client_id(A)).is_failure
        assert connack("not-a-device", passwords[A], port, ca, client_id=device_client_id("not-a-device")).is_failure


def test_ingests_session_survives_a_broker_restart(
    deployed: tuple[DeployBroker, dict[str, str]], tmp_path: Path
) -> None:
    """Readings published while ingest is away wait in its persistent session, across a broker restart."""
    broker, passwords = deployed
    worker = Client(
        INGEST_USER,
        passwords[INGEST_USER],
        broker.plain_port,
        client_id="pilotwatch-ingest-persist",
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    assert worker.subscribe(READINGS_SUBSCRIPTION) == [1]
    worker.close()
    a = device(deployed, A)
    for i in range(20):
        a.client.publish(readings_topic(A), f"queued{i}".encode(), qos=1).wait_for_publish(5)
    a.close()
    broker.restart()
    worker = Client(
        INGEST_USER,
        passwords[INGEST_USER],
        broker.plain_port,
        client_id="pilotwatch-ingest-persist",
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    try:
        worker.wait_for(b"queued19")
        assert sorted({p for _, p in worker.messages}) == sorted(f"queued{i}".encode() for i in range(20))
    finally:
        worker.close()
